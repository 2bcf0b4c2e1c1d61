-- Version 2: fewer and smaller indexes per event, for ingest throughput.
--
-- * Rows are keyed by an integer sequence in commit order (`seq`, the rowid),
--   which secondary indexes and cursors use instead of the 26-character id.
--   The public id keeps its own unique index; ids are unchanged.
-- * De-duplication and lookups by recipient share one index: the dedupe key
--   hashes the recipient's address key, so (recipient_key, dedupe_key) is
--   unique exactly when dedupe_key is. The key is 16 bytes (128 bits of the
--   SHA-256) instead of 32.
-- * event_workspaces refers to `seq` and no longer carries a foreign key:
--   both rows are written in one transaction by the store alone.
CREATE TABLE events_v2 (
    seq INTEGER PRIMARY KEY,               -- commit order
    id TEXT NOT NULL UNIQUE,               -- ULID, assigned in commit order
    dedupe_key BLOB NOT NULL,              -- 16 bytes, see store::dedupe_key
    connection TEXT NOT NULL,
    workspaces TEXT NOT NULL,              -- JSON array, as served when stored
    received_at INTEGER NOT NULL,          -- Unix milliseconds
    kind TEXT NOT NULL,
    bounce_class TEXT,
    recipient TEXT NOT NULL,
    recipient_key TEXT NOT NULL,           -- store::address_key(recipient)
    occurred_at INTEGER NOT NULL,          -- Unix seconds
    provider TEXT NOT NULL,
    provider_event_id TEXT,
    provider_message_id TEXT,
    message_id TEXT,
    smtp_status TEXT,
    enhanced_status TEXT,
    diagnostic TEXT,
    plugin_id TEXT NOT NULL,
    plugin_version TEXT NOT NULL,
    plugin_sha256 TEXT NOT NULL
);
INSERT INTO events_v2 (id, dedupe_key, connection, workspaces, received_at, kind, bounce_class,
        recipient, recipient_key, occurred_at, provider, provider_event_id, provider_message_id,
        message_id, smtp_status, enhanced_status, diagnostic, plugin_id, plugin_version,
        plugin_sha256)
    SELECT id, substr(dedupe_key, 1, 16), connection, workspaces, received_at, kind, bounce_class,
        recipient, recipient_key, occurred_at, provider, provider_event_id, provider_message_id,
        message_id, smtp_status, enhanced_status, diagnostic, plugin_id, plugin_version,
        plugin_sha256
    FROM events ORDER BY id;

CREATE TABLE event_workspaces_v2 (
    workspace TEXT NOT NULL,
    seq INTEGER NOT NULL,                  -- events.seq
    PRIMARY KEY (workspace, seq)
) WITHOUT ROWID;
INSERT INTO event_workspaces_v2 (workspace, seq)
    SELECT w.workspace, e.seq FROM event_workspaces w JOIN events_v2 e ON e.id = w.event_id;

DROP TABLE event_workspaces;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
ALTER TABLE event_workspaces_v2 RENAME TO event_workspaces;

CREATE UNIQUE INDEX events_by_recipient ON events (recipient_key, dedupe_key);
CREATE INDEX events_by_connection ON events (connection, seq);
CREATE INDEX events_by_kind ON events (kind, seq);
