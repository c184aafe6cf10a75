import KeelStore

/// The identity schema. Timestamps are `TIMESTAMPTZ` on PostgreSQL and integer microseconds on
/// SQLite; flags `BOOLEAN` and integers. Secrets are only ever stored as digests, bcrypt hashes or
/// sealed boxes.
enum IdentityMigrations {
    static let all: [Migration] = [
        Migration.portable(module: "identity", version: 1, name: "users, roles, tokens, keys, audit", statements: [
            """
            CREATE TABLE keel_roles (
                name TEXT PRIMARY KEY,
                description TEXT NOT NULL,
                permissions TEXT NOT NULL,
                builtin {BOOL} NOT NULL,
                require_totp {BOOL} NOT NULL,
                created_at {TS} NOT NULL,
                updated_at {TS} NOT NULL
            )
            """,
            """
            CREATE TABLE keel_users (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                email TEXT UNIQUE,
                name TEXT NOT NULL,
                password_hash TEXT,
                roles TEXT NOT NULL,
                disabled {BOOL} NOT NULL,
                totp_secret TEXT,
                totp_enabled {BOOL} NOT NULL,
                totp_last_step INTEGER NOT NULL,
                tokens_valid_after {TS} NOT NULL,
                created_at {TS} NOT NULL,
                updated_at {TS} NOT NULL,
                last_login_at {TS}
            )
            """,
            "CREATE UNIQUE INDEX keel_users_service_name ON keel_users (name) WHERE kind = 'service_account'",
            """
            CREATE TABLE keel_refresh_tokens (
                id TEXT PRIMARY KEY,
                family_id TEXT NOT NULL,
                user_id TEXT NOT NULL REFERENCES keel_users (id) ON DELETE CASCADE,
                token_hash TEXT NOT NULL UNIQUE,
                created_at {TS} NOT NULL,
                expires_at {TS} NOT NULL,
                used_at {TS},
                revoked_at {TS},
                client_ip TEXT NOT NULL
            )
            """,
            "CREATE INDEX keel_refresh_tokens_family ON keel_refresh_tokens (family_id)",
            "CREATE INDEX keel_refresh_tokens_user ON keel_refresh_tokens (user_id)",
            """
            CREATE TABLE keel_api_keys (
                id TEXT PRIMARY KEY,
                owner_id TEXT NOT NULL REFERENCES keel_users (id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                prefix TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE,
                permissions TEXT NOT NULL,
                expires_at {TS},
                last_used_at {TS},
                revoked_at {TS},
                created_at {TS} NOT NULL,
                created_by TEXT NOT NULL
            )
            """,
            "CREATE INDEX keel_api_keys_owner ON keel_api_keys (owner_id)",
            """
            CREATE TABLE keel_signing_keys (
                kid TEXT PRIMARY KEY,
                algorithm TEXT NOT NULL,
                public_key TEXT NOT NULL,
                private_key TEXT NOT NULL,
                created_at {TS} NOT NULL,
                retired_at {TS}
            )
            """,
            """
            CREATE TABLE keel_password_resets (
                token_hash TEXT PRIMARY KEY,
                user_id TEXT NOT NULL REFERENCES keel_users (id) ON DELETE CASCADE,
                created_at {TS} NOT NULL,
                expires_at {TS} NOT NULL,
                used_at {TS}
            )
            """,
            """
            CREATE TABLE keel_recovery_codes (
                code_hash TEXT PRIMARY KEY,
                user_id TEXT NOT NULL REFERENCES keel_users (id) ON DELETE CASCADE,
                used_at {TS}
            )
            """,
            """
            CREATE TABLE keel_login_throttle (
                key TEXT PRIMARY KEY,
                failures INTEGER NOT NULL,
                locked_until {TS},
                updated_at {TS} NOT NULL
            )
            """,
            """
            CREATE TABLE keel_trusted_issuers (
                name TEXT PRIMARY KEY,
                issuer TEXT NOT NULL UNIQUE,
                jwks_url TEXT NOT NULL,
                audience TEXT NOT NULL,
                roles_claim TEXT NOT NULL,
                role_map TEXT NOT NULL,
                default_roles TEXT NOT NULL,
                created_at {TS} NOT NULL,
                updated_at {TS} NOT NULL
            )
            """,
            """
            CREATE TABLE keel_audit_log (
                id TEXT PRIMARY KEY,
                at {TS} NOT NULL,
                action TEXT NOT NULL,
                outcome TEXT NOT NULL,
                actor_kind TEXT NOT NULL,
                actor_id TEXT NOT NULL,
                actor_name TEXT NOT NULL,
                target TEXT NOT NULL,
                client_ip TEXT NOT NULL,
                request_id TEXT NOT NULL,
                detail TEXT NOT NULL
            )
            """,
            "CREATE INDEX keel_audit_log_action ON keel_audit_log (action, id)",
        ], sqliteOnly: [
            "CREATE TRIGGER keel_audit_log_no_update BEFORE UPDATE ON keel_audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
            "CREATE TRIGGER keel_audit_log_no_delete BEFORE DELETE ON keel_audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
        ], postgresOnly: [
            """
            CREATE FUNCTION keel_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$
            """,
            "CREATE TRIGGER keel_audit_log_append_only BEFORE UPDATE OR DELETE ON keel_audit_log FOR EACH ROW EXECUTE FUNCTION keel_audit_log_append_only()",
        ]),
    ]
}
