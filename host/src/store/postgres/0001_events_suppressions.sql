-- Version 1: delivery events, their workspaces, suppressions, soft-bounce
-- history. The same tables as SQLite's (versions 1 and 2), in PostgreSQL
-- types. Keys that cursors and claims order by use the "C" collation, so
-- the order is bytewise like SQLite's whatever the database's locale.
CREATE TABLE events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- insertion order; cursors use it
    id text COLLATE "C" NOT NULL UNIQUE,   -- ULID, assigned in commit order
    dedupe_key bytea NOT NULL,             -- 16 bytes, see store::dedupe_key
    connection text NOT NULL,
    workspaces text NOT NULL,              -- JSON array, as served when stored
    received_at bigint NOT NULL,           -- Unix milliseconds
    kind text NOT NULL,
    bounce_class text,
    recipient text NOT NULL,
    recipient_key text COLLATE "C" NOT NULL, -- store::address_key(recipient)
    occurred_at bigint NOT NULL,           -- Unix seconds
    provider text NOT NULL,
    provider_event_id text,
    provider_message_id text,
    message_id text,
    smtp_status text,
    enhanced_status text,
    diagnostic text,
    plugin_id text NOT NULL,
    plugin_version text NOT NULL,
    plugin_sha256 text NOT NULL,
    -- The dedupe key hashes the recipient's key, so this is unique exactly
    -- when dedupe_key is; inserts use ON CONFLICT DO NOTHING on it, which
    -- makes the same event stored by two processes at once one row.
    CONSTRAINT events_dedupe UNIQUE (recipient_key, dedupe_key)
);
CREATE INDEX events_by_connection ON events (connection, seq);
CREATE INDEX events_by_kind ON events (kind, seq);

CREATE TABLE event_workspaces (
    workspace text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,                   -- events.seq
    PRIMARY KEY (workspace, seq)
);

CREATE TABLE suppressions (
    workspace text COLLATE "C" NOT NULL,
    address_key text COLLATE "C" NOT NULL,
    address text NOT NULL,
    reason text NOT NULL,                  -- hard_bounce | complaint | soft_bounces | manual
    event_id text,
    note text,
    created_at bigint NOT NULL,            -- Unix milliseconds
    PRIMARY KEY (workspace, address_key)
);
CREATE INDEX suppressions_by_address ON suppressions (address_key);

CREATE TABLE soft_bounces (
    workspace text NOT NULL,
    address_key text NOT NULL,
    event_id text NOT NULL,
    occurred_at bigint NOT NULL
);
CREATE INDEX soft_bounces_by_address ON soft_bounces (workspace, address_key, occurred_at);
