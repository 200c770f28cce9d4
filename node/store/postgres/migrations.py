"""The PostgreSQL hub store's schema: numbered, forward-only migrations (SQL).

Migration ``n`` brings a database from version ``n - 1`` to ``n``; ``schema_version`` holds
the version reached. :func:`node.store.postgres.connection.migrate` applies each in its own
transaction under an advisory lock, so replicas opening the same database at once apply it
once (the others wait, then find it done). Every migration must be safe while older replicas
run: add tables, columns with defaults, indexes; never rewrite what they read.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS: list[str] = [
    # 1: the queue (packed batches, positions per destination), idempotency records, the audit
    # chain and its head, signed checkpoints, the store's identity.
    """
    CREATE TABLE queue (
        dest text NOT NULL,
        seq bigint NOT NULL,
        count integer NOT NULL,
        packed bytea NOT NULL,
        PRIMARY KEY (dest, seq)
    );
    CREATE TABLE queue_positions (
        dest text PRIMARY KEY,
        position bigint NOT NULL
    );
    CREATE TABLE destinations (
        institution text PRIMARY KEY,
        endpoint text,
        delivered_seq bigint NOT NULL DEFAULT 0,
        delivered_count bigint NOT NULL DEFAULT 0,
        updated_at_us bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE origins (
        sender text NOT NULL,
        origin text NOT NULL,
        high_seq bigint NOT NULL,
        PRIMARY KEY (sender, origin)
    );
    CREATE TABLE recent_acks (
        sender text NOT NULL,
        origin text NOT NULL,
        first_seq bigint NOT NULL,
        last_seq bigint NOT NULL,
        ack bytea NOT NULL,
        PRIMARY KEY (sender, origin, first_seq)
    );
    CREATE TABLE audit (
        seq bigint PRIMARY KEY,
        at_us bigint NOT NULL,
        event text NOT NULL,
        hub_ticket text NOT NULL,
        sender text NOT NULL,
        receiver text NOT NULL,
        service_id text NOT NULL,
        subject_type text NOT NULL,
        subject_number text NOT NULL,
        reason text NOT NULL,
        detail text NOT NULL,
        prev_hash bytea NOT NULL,
        hash bytea NOT NULL,
        redacted bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE audit_head (
        id integer PRIMARY KEY CHECK (id = 1),
        seq bigint NOT NULL,
        hash bytea NOT NULL
    );
    CREATE TABLE audit_checkpoints (
        seq bigint PRIMARY KEY,
        hash bytea NOT NULL,
        at_us bigint NOT NULL,
        from_seq bigint NOT NULL,
        segment_digest bytea NOT NULL,
        signature bytea NOT NULL,
        key_id text NOT NULL
    );
    CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
    """,
    # 2: the indexes of the audit queries: a subject's records (who-consulted, export), and
    # the DELIVERED records of an envelope by its (time-ordered) hub ticket.
    """
    CREATE INDEX audit_by_subject ON audit (subject_number, seq) WHERE subject_number <> '';
    CREATE INDEX audit_delivered_by_ticket ON audit (hub_ticket) WHERE event = 'DELIVERED';
    """,
    # 3: delivery ownership across hub replicas (node.hub.delivery): the live replicas and
    # one lease per destination (its owner, fencing token and expiry on the database's clock).
    """
    CREATE TABLE hub_replicas (
        replica text PRIMARY KEY,
        heartbeat_at timestamptz NOT NULL,
        draining boolean NOT NULL DEFAULT false
    );
    CREATE TABLE delivery_leases (
        dest text PRIMARY KEY,
        owner text NOT NULL DEFAULT '',
        token bigint NOT NULL DEFAULT 0,
        expires_at timestamptz NOT NULL DEFAULT '-infinity'
    );
    CREATE INDEX delivery_leases_by_owner ON delivery_leases (owner);
    """,
    # 4: the reference directory (node.store.postgres.directory_store): its head (the last
    # revision, taken FOR UPDATE by every change: one sequence in commit order, and the
    # compacted revision), the log of changes by owner, and the current state of each kind.
    """
    CREATE TABLE dir_head (
        id integer PRIMARY KEY CHECK (id = 1),
        revision bigint NOT NULL,
        compacted_revision bigint NOT NULL
    );
    INSERT INTO dir_head (id, revision, compacted_revision) VALUES (1, 0, 0);
    CREATE TABLE dir_changes (
        revision bigint PRIMARY KEY,
        owner text NOT NULL,
        kind text NOT NULL,
        key text NOT NULL,
        deleted boolean NOT NULL,
        data text NOT NULL
    );
    CREATE INDEX dir_changes_by_owner ON dir_changes (owner, revision);
    CREATE TABLE dir_institutions (key text PRIMARY KEY, data text NOT NULL);
    CREATE TABLE dir_services (key text PRIMARY KEY, data text NOT NULL);
    CREATE TABLE dir_revoked (key text PRIMARY KEY, data text NOT NULL);
    CREATE TABLE dir_authorizations (key text PRIMARY KEY, owner text NOT NULL,
                                     data text NOT NULL);
    CREATE TABLE dir_subscriptions (key text PRIMARY KEY, owner text NOT NULL,
                                    data text NOT NULL);
    CREATE TABLE dir_replacements (old_number text PRIMARY KEY, new_number text NOT NULL);
    CREATE TABLE dir_integrations (
        subject text NOT NULL,
        institution text NOT NULL,
        capacity integer NOT NULL,
        begin_date text NOT NULL,
        end_date text NOT NULL,
        phase integer NOT NULL,
        PRIMARY KEY (subject, institution, capacity, begin_date)
    );
    CREATE INDEX dir_integrations_by_institution ON dir_integrations (institution);
    """,
    # 5: delivery affinity (node.store.postgres.leases): the replica a destination's node last
    # registered at (its uplink's), which delivers to it while it is live.
    """
    ALTER TABLE destinations ADD COLUMN registered_at text NOT NULL DEFAULT '';
    """,
]
