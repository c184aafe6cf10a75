# syntax=docker/dockerfile:1.7
# Keel in two stages: the Swift toolchain builds one release binary with the Swift runtime linked in; a slim Debian
# image runs it as a non-root user. The image holds the binary, its resource bundles, CA certificates, time zones and
# PostgreSQL's client tools (for backups), nothing else.

FROM swift:6.3.1-bookworm AS build
WORKDIR /src
# The manifest first, so that dependency resolution is cached apart from source changes.
COPY Package.swift ./
RUN --mount=type=cache,target=/src/.build swift package resolve
COPY Sources ./Sources
COPY Plugins ./Plugins
COPY Tests ./Tests
RUN --mount=type=cache,target=/src/.build \
    swift build -c release --product keel --static-swift-stdlib \
    && mkdir -p /out \
    && cp .build/release/keel /out/keel \
    && cp -R .build/release/*.resources /out/

FROM debian:bookworm-20250113-slim AS runtime
# pg_dump/pg_restore for `keel backup|restore` must be at least the server's version: PostgreSQL's own Debian repository.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata libstdc++6 curl \
    && install -d /usr/share/postgresql-common/pgdg \
    && curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc \
    && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
       > /etc/apt/sources.list.d/pgdg.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-16 \
    && apt-get purge -y curl && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 keel \
    && useradd --system --uid 10001 --gid keel --home-dir /var/lib/keel --create-home keel
COPY --from=build /out/ /usr/local/bin/
USER keel:keel
WORKDIR /var/lib/keel
ENV KEEL_HOST=0.0.0.0 KEEL_PORT=8080 KEEL_DATA_DIR=/var/lib/keel KEEL_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/var/lib/keel"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD ["keel", "health", "--live"]
ENTRYPOINT ["keel"]
CMD ["up"]
