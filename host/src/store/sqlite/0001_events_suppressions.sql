-- Version 1: delivery events, their workspaces, suppressions, soft-bounce history.
CREATE TABLE events (
    id TEXT PRIMARY KEY NOT NULL,          -- ULID, assigned in commit order
    dedupe_key BLOB NOT NULL UNIQUE,       -- sha256, see store::dedupe_key
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
CREATE INDEX events_by_connection ON events (connection, id);
CREATE INDEX events_by_recipient ON events (recipient_key, id);
CREATE INDEX events_by_kind ON events (kind, id);

CREATE TABLE event_workspaces (
    workspace TEXT NOT NULL,
    event_id TEXT NOT NULL REFERENCES events (id),
    PRIMARY KEY (workspace, event_id)
) WITHOUT ROWID;

CREATE TABLE suppressions (
    workspace TEXT NOT NULL,
    address_key TEXT NOT NULL,
    address TEXT NOT NULL,
    reason TEXT NOT NULL,                  -- hard_bounce | complaint | soft_bounces | manual
    event_id TEXT,
    note TEXT,
    created_at INTEGER NOT NULL,           -- Unix milliseconds
    PRIMARY KEY (workspace, address_key)
) WITHOUT ROWID;

CREATE TABLE soft_bounces (
    workspace TEXT NOT NULL,
    address_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    occurred_at INTEGER NOT NULL
);
CREATE INDEX soft_bounces_by_address ON soft_bounces (workspace, address_key, occurred_at);
