import Logging
import PostgresNIO

/// The server's schema in PostgreSQL, created and migrated on start.
///
/// Migrations are numbered and recorded in `converge_migrations`; an instance runs the
/// missing ones in one transaction under a transaction-scoped advisory lock, so that
/// instances starting at once migrate one after the other (the second finds nothing to do).
enum Migrations {
    /// Every table is shared by all namespaces and keyed by `namespace` first.
    static let steps: [(version: Int, statements: [String])] = [
        (1, [
            // One head row per namespace: its server replica, clock and feed sequence. A push
            // locks it first (FOR UPDATE), which serializes the namespace's pushes.
            """
            CREATE TABLE converge_namespaces(
                namespace text PRIMARY KEY,
                replica bytea NOT NULL,
                clock bigint NOT NULL DEFAULT 0,
                sequence bigint NOT NULL DEFAULT 0,
                standing_since bigint,
                created_at timestamptz NOT NULL DEFAULT now())
            """,
            // The merge states (the same blobs as the SQLite store's), with the feed position
            // of each record's last change and the flags the reads filter on.
            """
            CREATE TABLE converge_records(
                namespace text NOT NULL,
                tbl text NOT NULL,
                key bytea NOT NULL,
                position bigint NOT NULL,
                alive boolean NOT NULL,
                conflicted boolean NOT NULL,
                state bytea NOT NULL,
                seqs bytea NOT NULL,
                PRIMARY KEY (namespace, tbl, key))
            """,
            "CREATE INDEX converge_records_feed ON converge_records(namespace, position)",
            "CREATE INDEX converge_records_conflicted ON converge_records(namespace) WHERE conflicted",
            "CREATE INDEX converge_records_dead ON converge_records(namespace, position) WHERE NOT alive",
            """
            CREATE TABLE converge_quarantine(
                namespace text NOT NULL, tbl text NOT NULL, key bytea NOT NULL,
                max_hlc bigint NOT NULL, state bytea NOT NULL,
                PRIMARY KEY (namespace, tbl, key))
            """,
            // The highest clock of every replica whose events the namespace holds: no device
            // may claim one of them as its own.
            """
            CREATE TABLE converge_replicas(
                namespace text NOT NULL, replica bytea NOT NULL, hlc bigint NOT NULL,
                PRIMARY KEY (namespace, replica))
            """,
            """
            CREATE TABLE converge_devices(
                namespace text NOT NULL, device text NOT NULL, replica bytea NOT NULL, bound_at double precision NOT NULL,
                PRIMARY KEY (namespace, device), UNIQUE (namespace, replica))
            """,
            """
            CREATE TABLE converge_revocations(
                namespace text NOT NULL, device text NOT NULL, revoked_at double precision NOT NULL,
                PRIMARY KEY (namespace, device))
            """,
            """
            CREATE TABLE converge_rejections(
                id bigserial PRIMARY KEY, namespace text NOT NULL, device text, tbl text NOT NULL, key bytea NOT NULL,
                reason text NOT NULL, at double precision NOT NULL)
            """,
            "CREATE INDEX converge_rejections_by_device ON converge_rejections(namespace, device, id)",
            """
            CREATE TABLE converge_standing(
                namespace text NOT NULL, device text NOT NULL, replica bytea,
                stable bigint NOT NULL DEFAULT 0, acknowledged bigint NOT NULL DEFAULT 0, collected_after bigint,
                last_seen bigint NOT NULL, retired_at bigint,
                PRIMARY KEY (namespace, device))
            """,
            """
            CREATE TABLE converge_collected(
                id bigserial PRIMARY KEY, namespace text NOT NULL, tbl text NOT NULL, key bytea NOT NULL)
            """,
            "CREATE INDEX converge_collected_by_key ON converge_collected(namespace, tbl, key)",
            "CREATE INDEX converge_collected_by_id ON converge_collected(namespace, id)",
        ]),
        (2, [
            // Every live record's claims on its table's unique indexes (DESIGN §4): the
            // records clashing with a change are found by an index lookup.
            """
            CREATE TABLE converge_claims(
                namespace text NOT NULL, tbl text NOT NULL, idx text NOT NULL, vals bytea NOT NULL, key bytea NOT NULL,
                hlc bigint NOT NULL, replica bytea NOT NULL,
                PRIMARY KEY (namespace, tbl, idx, vals, key))
            """
        ]),
        (3, [
            // Stale pushes are told by request serials, not push positions (DESIGN §9).
            "ALTER TABLE converge_standing DROP COLUMN acknowledged",
            "ALTER TABLE converge_standing ADD COLUMN serial bigint NOT NULL DEFAULT 0",
            // Each collected life's membership context: it tells a part of that life, which
            // a device may still relay, from a later life of the same key.
            "ALTER TABLE converge_collected ADD COLUMN context bytea",
            // The join of every collected record's context, per replica (kept after the
            // log entries go): a re-insert's context covering a collected delete is checked
            // against it.
            """
            CREATE TABLE converge_collected_clock(
                namespace text NOT NULL, replica bytea NOT NULL, hlc bigint NOT NULL,
                PRIMARY KEY (namespace, replica))
            """,
            // Replicas that devices left when they reset: never readmitted.
            """
            CREATE TABLE converge_left_replicas(
                namespace text NOT NULL, replica bytea NOT NULL,
                PRIMARY KEY (namespace, replica))
            """,
        ]),
    ]

    static var latest: Int { steps.last!.version }

    /// Runs the missing migrations and creates the app tables, one instance at a time.
    static func run(_ client: PostgresClient, schema: String?, tables: MaterializedTables, logger: Logger) async throws {
        try await client.withTransaction(logger: logger) { connection in
            if let schema {
                // One at a time: two instances creating the schema at once would clash.
                try await connection.query("SELECT pg_advisory_xact_lock(hashtext('converge_schema:' || \(schema)))", logger: logger)
                try await connection.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(quoted(schema))"), logger: logger)
            }
            try await connection.query("SELECT pg_advisory_xact_lock(hashtext('converge_migrations:' || current_schema()))", logger: logger)
            try await connection.query(
                "CREATE TABLE IF NOT EXISTS converge_migrations(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                logger: logger)
            let current = try await connection.query("SELECT coalesce(max(version), 0)::int8 FROM converge_migrations", logger: logger).single(Int64.self) ?? 0
            guard current <= latest else {
                throw PostgresConfigurationError("the database's Converge schema is version \(current), newer than this server's \(latest): upgrade the server")
            }
            for step in steps where step.version > current {
                for statement in step.statements { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                try await connection.query("INSERT INTO converge_migrations(version) VALUES (\(step.version))", logger: logger)
                logger.notice("migrated the Converge schema", metadata: ["version": "\(step.version)"])
            }
            for statement in tables.createStatements { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
        }
    }
}
