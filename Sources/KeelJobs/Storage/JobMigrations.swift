import KeelStore

/// The jobs schema. The claim index serves "the next runnable jobs of a queue by priority, then due
/// time"; unique keys live in their own table so that exactly one enqueue wins a key across processes.
enum JobMigrations {
    static let all: [Migration] = [
        Migration.portable(module: "jobs", version: 1, name: "jobs and unique keys", statements: [
            """
            CREATE TABLE keel_jobs (
                id TEXT PRIMARY KEY,
                queue TEXT NOT NULL,
                task TEXT NOT NULL,
                args TEXT NOT NULL,
                priority INTEGER NOT NULL,
                state TEXT NOT NULL,
                run_at {TS} NOT NULL,
                attempt INTEGER NOT NULL,
                max_attempts INTEGER NOT NULL,
                backoff_seconds INTEGER,
                timeout_seconds INTEGER NOT NULL,
                unique_key TEXT,
                tags TEXT NOT NULL,
                result TEXT,
                errors TEXT NOT NULL,
                progress_percent INTEGER,
                progress_message TEXT,
                cancel_requested {BOOL} NOT NULL,
                created_at {TS} NOT NULL,
                started_at {TS},
                finished_at {TS},
                worker_id TEXT,
                lease_token TEXT,
                lease_expires_at {TS}
            )
            """,
            "CREATE INDEX keel_jobs_claim ON keel_jobs (queue, priority DESC, run_at, id) WHERE state IN ('available', 'scheduled', 'retrying')",
            "CREATE INDEX keel_jobs_running ON keel_jobs (lease_expires_at) WHERE state = 'running'",
            "CREATE INDEX keel_jobs_state ON keel_jobs (state, id)",
            """
            CREATE TABLE keel_job_unique_keys (
                key TEXT PRIMARY KEY,
                job_id TEXT NOT NULL,
                until {TS} NOT NULL
            )
            """,
        ]),
        Migration.portable(module: "jobs", version: 2, name: "queue settings", statements: [
            """
            CREATE TABLE keel_queues (
                name TEXT PRIMARY KEY,
                paused {BOOL} NOT NULL,
                max_length INTEGER,
                updated_at {TS} NOT NULL
            )
            """,
        ]),
        Migration.portable(module: "jobs", version: 3, name: "schedules and their fires", statements: [
            """
            CREATE TABLE keel_schedules (
                name TEXT PRIMARY KEY,
                cron TEXT,
                every_seconds INTEGER,
                timezone TEXT NOT NULL,
                queue TEXT NOT NULL,
                task TEXT NOT NULL,
                args TEXT NOT NULL,
                paused {BOOL} NOT NULL,
                misfire TEXT NOT NULL,
                next_run_at {TS},
                last_run_at {TS},
                last_job_id TEXT,
                created_at {TS} NOT NULL,
                updated_at {TS} NOT NULL
            )
            """,
            // One row per (schedule, fire time): the primary key is what makes a tick fire once across replicas.
            """
            CREATE TABLE keel_schedule_fires (
                schedule TEXT NOT NULL,
                fire_at {TS} NOT NULL,
                job_id TEXT NOT NULL,
                PRIMARY KEY (schedule, fire_at)
            )
            """,
        ]),
        Migration.portable(module: "jobs", version: 4, name: "queues worked by external workers", statements: [
            "ALTER TABLE keel_queues ADD COLUMN external {BOOL} NOT NULL DEFAULT FALSE",
        ]),
        Migration.portable(module: "jobs", version: 5, name: "worker registry", statements: [
            """
            CREATE TABLE keel_workers (
                id TEXT PRIMARY KEY,
                hostname TEXT NOT NULL,
                pid INTEGER NOT NULL,
                queues TEXT NOT NULL,
                concurrency INTEGER NOT NULL,
                running INTEGER NOT NULL,
                started_at {TS} NOT NULL,
                heartbeat_at {TS} NOT NULL,
                stopped_at {TS}
            )
            """,
        ]),
        Migration.portable(module: "jobs", version: 6, name: "job time-to-live", statements: [
            "ALTER TABLE keel_jobs ADD COLUMN expires_at {TS}",
        ]),
        Migration.portable(module: "jobs", version: 7, name: "trace context of the enqueuer", statements: [
            "ALTER TABLE keel_jobs ADD COLUMN traceparent TEXT",
        ]),
        // Edges hold the order of a step's predecessors, which is the order of the results its job receives.
        Migration.portable(module: "jobs", version: 8, name: "workflows", statements: [
            """
            CREATE TABLE keel_workflows (
                id TEXT PRIMARY KEY,
                name TEXT,
                state TEXT NOT NULL,
                remaining INTEGER NOT NULL,
                failed_job_id TEXT,
                created_at {TS} NOT NULL,
                finished_at {TS}
            )
            """,
            "CREATE INDEX keel_workflows_state ON keel_workflows (state, id)",
            "ALTER TABLE keel_jobs ADD COLUMN workflow_id TEXT",
            "ALTER TABLE keel_jobs ADD COLUMN waiting_on INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX keel_jobs_workflow ON keel_jobs (workflow_id, id) WHERE workflow_id IS NOT NULL",
            """
            CREATE TABLE keel_workflow_edges (
                parent_id TEXT NOT NULL,
                child_id TEXT NOT NULL,
                position INTEGER NOT NULL,
                PRIMARY KEY (parent_id, child_id)
            )
            """,
            "CREATE INDEX keel_workflow_edges_child ON keel_workflow_edges (child_id, position)",
        ]),
        // The log of starts makes a rate limit a true sliding window: a job's retry counts as a start again.
        Migration.portable(module: "jobs", version: 9, name: "queue rate limits", statements: [
            "ALTER TABLE keel_queues ADD COLUMN rate_limit INTEGER",
            "ALTER TABLE keel_queues ADD COLUMN rate_per_seconds INTEGER",
            "CREATE TABLE keel_queue_starts (queue TEXT NOT NULL, started_at {TS} NOT NULL)",
            "CREATE INDEX keel_queue_starts_window ON keel_queue_starts (queue, started_at)",
        ]),
        Migration.portable(module: "jobs", version: 10, name: "schedules declared in configuration", statements: [
            "ALTER TABLE keel_schedules ADD COLUMN declared {BOOL} NOT NULL DEFAULT FALSE",
        ]),
        // Every insert into the jobs table wakes other processes' idle workers at commit (notifications of one
        // transaction are merged), at no extra round trip for the enqueuer.
        Migration.portable(module: "jobs", version: 11, name: "wake workers on insert", statements: [], postgresOnly: [
            """
            CREATE FUNCTION keel_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('keel_jobs', '');
                RETURN NULL;
            END
            $$
            """,
            "CREATE TRIGGER keel_jobs_inserted AFTER INSERT ON keel_jobs FOR EACH STATEMENT EXECUTE FUNCTION keel_jobs_notify()",
        ]),
        // Every state change of a job wrote an entry into an index over all states; running jobs have a partial index
        // of their own, so that one only needs the final and the waiting states. On SQLite the waiting jobs are indexed
        // in claim order without a queue, which workers of every queue (`*`) walk instead of sorting all waiting jobs.
        // PostgreSQL keeps the entries of claimed rows in such an index until vacuum, and every claim would walk them.
        Migration.portable(module: "jobs", version: 12, name: "index final and waiting states apart", statements: [
            "DROP INDEX keel_jobs_state",
            "CREATE INDEX keel_jobs_final ON keel_jobs (state, id) WHERE state IN ('succeeded', 'dead', 'cancelled', 'expired')",
        ], sqliteOnly: [
            "CREATE INDEX keel_jobs_claim_any ON keel_jobs (priority DESC, run_at, id) WHERE state IN ('available', 'scheduled', 'retrying')",
        ], postgresOnly: [
            "CREATE INDEX keel_jobs_waiting ON keel_jobs (state, id) WHERE state IN ('pending', 'scheduled', 'available', 'retrying')",
        ]),
        // The notification names its transaction, so the worker processes that receive it can agree which of
        // them claims at once; the others wait a moment instead of racing the owner for the same row.
        Migration.portable(module: "jobs", version: 13, name: "notifications name their transaction", statements: [], postgresOnly: [
            """
            CREATE OR REPLACE FUNCTION keel_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('keel_jobs', txid_current()::text);
                RETURN NULL;
            END
            $$
            """,
        ]),
        // An idle worker process arms a reservation per queue slot; the insert of a job it can run takes one and hands
        // the job over in the same statement: the row is written as running under a fresh lease for that worker, and
        // the notification on the worker's own channel carries the job, so it starts without a claim round trip.
        // Rows that stay waiting (no reservation free, a paused or rate-limited queue, a delay, large args) are left
        // to the claim; only they wake the other processes. A reservation is one row per worker slot whose `armed`
        // flag flips: updates in place stay on their page, where deleting and inserting a row per job left dead rows
        // that every insert's look at the table had to step over until vacuum came.
        Migration.portable(module: "jobs", version: 14, name: "hand new jobs to idle workers", statements: [], postgresOnly: [
            """
            CREATE TABLE keel_job_reservations (
                worker_id TEXT NOT NULL,
                slot TEXT NOT NULL,
                tasks TEXT NOT NULL,
                lease_seconds INTEGER NOT NULL,
                armed BOOLEAN NOT NULL,
                armed_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (worker_id, slot)
            )
            """,
            """
            CREATE FUNCTION keel_jobs_hand_over() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                taken keel_job_reservations%ROWTYPE;
                started TIMESTAMPTZ;
            BEGIN
                IF NEW.state <> 'available' OR NEW.run_at > clock_timestamp()
                    OR octet_length(NEW.args) + octet_length(NEW.tags) + coalesce(octet_length(NEW.unique_key), 0)
                       + coalesce(octet_length(NEW.traceparent), 0) > 6000
                    OR NOT EXISTS (SELECT 1 FROM keel_job_reservations WHERE armed)
                    OR EXISTS (SELECT 1 FROM keel_queues WHERE name = NEW.queue AND (paused OR rate_limit IS NOT NULL)) THEN
                    RETURN NEW;
                END IF;
                UPDATE keel_job_reservations SET armed = FALSE WHERE (worker_id, slot) = (
                    SELECT worker_id, slot FROM keel_job_reservations
                    WHERE armed AND (slot = '*' OR slot = NEW.queue) AND position(',' || NEW.task || ',' IN tasks) > 0
                    LIMIT 1 FOR UPDATE SKIP LOCKED)
                RETURNING * INTO taken;
                IF NOT FOUND THEN
                    RETURN NEW;
                END IF;
                started := clock_timestamp();
                NEW.state := 'running';
                NEW.attempt := NEW.attempt + 1;
                NEW.worker_id := taken.worker_id;
                NEW.lease_token := 'lease_' || replace(gen_random_uuid()::text, '-', '');
                NEW.started_at := started;
                NEW.lease_expires_at := started + make_interval(secs => taken.lease_seconds);
                PERFORM pg_notify('keel_push_' || taken.worker_id, json_build_object(
                    'slot', taken.slot, 'lease_token', NEW.lease_token, 'traceparent', NEW.traceparent,
                    'id', NEW.id, 'queue', NEW.queue, 'task', NEW.task, 'args', NEW.args, 'priority', NEW.priority,
                    'state', NEW.state, 'run_at', extract(epoch FROM NEW.run_at), 'attempt', NEW.attempt,
                    'max_attempts', NEW.max_attempts, 'backoff_seconds', NEW.backoff_seconds, 'timeout_seconds', NEW.timeout_seconds,
                    'unique_key', NEW.unique_key, 'tags', NEW.tags, 'errors', NEW.errors, 'cancel_requested', NEW.cancel_requested,
                    'created_at', extract(epoch FROM NEW.created_at), 'started_at', extract(epoch FROM started),
                    'worker_id', NEW.worker_id, 'lease_expires_at', extract(epoch FROM NEW.lease_expires_at),
                    'expires_at', extract(epoch FROM NEW.expires_at), 'workflow_id', NEW.workflow_id)::text);
                RETURN NEW;
            END
            $$
            """,
            "CREATE TRIGGER keel_jobs_hand_over BEFORE INSERT ON keel_jobs FOR EACH ROW EXECUTE FUNCTION keel_jobs_hand_over()",
            """
            CREATE OR REPLACE FUNCTION keel_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF EXISTS (SELECT 1 FROM inserted WHERE state <> 'running') THEN
                    PERFORM pg_notify('keel_jobs', txid_current()::text);
                END IF;
                RETURN NULL;
            END
            $$
            """,
            "DROP TRIGGER keel_jobs_inserted ON keel_jobs",
            "CREATE TRIGGER keel_jobs_inserted AFTER INSERT ON keel_jobs REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION keel_jobs_notify()",
        ]),
        // The row trigger sends the wake-up for a job it leaves waiting, so no statement trigger runs: capturing every
        // inserted row in a transition table and querying it cost each insert about as much as the insert itself.
        // All rows of a transaction send the same payload, which PostgreSQL delivers once.
        Migration.portable(module: "jobs", version: 15, name: "row trigger wakes workers", statements: [], postgresOnly: [
            """
            CREATE OR REPLACE FUNCTION keel_jobs_hand_over() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                taken keel_job_reservations%ROWTYPE;
                started TIMESTAMPTZ;
            BEGIN
                IF NEW.state <> 'available' OR NEW.run_at > clock_timestamp()
                    OR octet_length(NEW.args) + octet_length(NEW.tags) + coalesce(octet_length(NEW.unique_key), 0)
                       + coalesce(octet_length(NEW.traceparent), 0) > 6000 THEN
                    PERFORM pg_notify('keel_jobs', txid_current()::text);
                    RETURN NEW;
                END IF;
                -- One statement looks for an offer and at the queue: each statement a trigger runs has its own
                -- start-up cost, which the first version paid three times.
                UPDATE keel_job_reservations SET armed = FALSE WHERE (worker_id, slot) = (
                    SELECT worker_id, slot FROM keel_job_reservations
                    WHERE armed AND (slot = '*' OR slot = NEW.queue) AND position(',' || NEW.task || ',' IN tasks) > 0
                        AND NOT EXISTS (SELECT 1 FROM keel_queues WHERE name = NEW.queue AND (paused OR rate_limit IS NOT NULL))
                    LIMIT 1 FOR UPDATE SKIP LOCKED)
                RETURNING * INTO taken;
                IF NOT FOUND THEN
                    PERFORM pg_notify('keel_jobs', txid_current()::text);
                    RETURN NEW;
                END IF;
                started := clock_timestamp();
                NEW.state := 'running';
                NEW.attempt := NEW.attempt + 1;
                NEW.worker_id := taken.worker_id;
                NEW.lease_token := 'lease_' || replace(gen_random_uuid()::text, '-', '');
                NEW.started_at := started;
                NEW.lease_expires_at := started + make_interval(secs => taken.lease_seconds);
                PERFORM pg_notify('keel_push_' || taken.worker_id, json_build_object(
                    'slot', taken.slot, 'lease_token', NEW.lease_token, 'traceparent', NEW.traceparent,
                    'id', NEW.id, 'queue', NEW.queue, 'task', NEW.task, 'args', NEW.args, 'priority', NEW.priority,
                    'state', NEW.state, 'run_at', extract(epoch FROM NEW.run_at), 'attempt', NEW.attempt,
                    'max_attempts', NEW.max_attempts, 'backoff_seconds', NEW.backoff_seconds, 'timeout_seconds', NEW.timeout_seconds,
                    'unique_key', NEW.unique_key, 'tags', NEW.tags, 'errors', NEW.errors, 'cancel_requested', NEW.cancel_requested,
                    'created_at', extract(epoch FROM NEW.created_at), 'started_at', extract(epoch FROM started),
                    'worker_id', NEW.worker_id, 'lease_expires_at', extract(epoch FROM NEW.lease_expires_at),
                    'expires_at', extract(epoch FROM NEW.expires_at), 'workflow_id', NEW.workflow_id)::text);
                RETURN NEW;
            END
            $$
            """,
            "DROP TRIGGER keel_jobs_inserted ON keel_jobs",
            "DROP FUNCTION keel_jobs_notify()",
        ]),
    ]
}
