-- Version 5: the sending queue. One row per accepted message (its RFC 5322
-- bytes, built at enqueue), one delivery row per recipient (the unit that is
-- claimed, attempted, retried, failed over and reported), and the attempt
-- history of each delivery.
CREATE TABLE messages (
    id TEXT PRIMARY KEY NOT NULL,          -- ULID, assigned in commit order
    workspace TEXT NOT NULL,               -- '' when the request named only a connection
    pinned_connection TEXT,                -- the request named this connection: no failover
    idempotency_scope TEXT NOT NULL,       -- 'w:<workspace>' or 'c:<connection>'
    idempotency_key TEXT,
    from_email TEXT NOT NULL,              -- envelope sender and From address
    subject TEXT NOT NULL,
    message_id_header TEXT NOT NULL,       -- Message-ID without the angle brackets
    raw BLOB NOT NULL,                     -- headers and body, CRLF, without Bcc and provider headers
    size INTEGER NOT NULL,
    status TEXT NOT NULL,                  -- pending | sent | partial | failed | cancelled
    created_at INTEGER NOT NULL,           -- Unix milliseconds
    cancelled_at INTEGER,
    UNIQUE (idempotency_scope, idempotency_key)
);
CREATE INDEX messages_by_status ON messages (status, id);
CREATE INDEX messages_by_workspace ON messages (workspace, id);
CREATE INDEX messages_by_header ON messages (message_id_header);

CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,                -- rowid
    message TEXT NOT NULL REFERENCES messages (id),
    recipient TEXT NOT NULL,
    recipient_key TEXT NOT NULL,           -- store::address_key(recipient)
    field TEXT NOT NULL,                   -- to | cc | bcc
    workspace TEXT NOT NULL,               -- copied from the message (suppression scope)
    connection TEXT NOT NULL,              -- the connection it is assigned to now
    state TEXT NOT NULL,                   -- queued | sending | deferred | sent | failed | suppressed | cancelled
    attempts INTEGER NOT NULL DEFAULT 0,
    queued_at INTEGER NOT NULL,            -- Unix milliseconds; max_age counts from here
    next_attempt_at INTEGER NOT NULL,      -- Unix milliseconds
    lease TEXT,                            -- token of the claim in progress (state sending)
    lease_until INTEGER,                   -- Unix milliseconds; the claim lapses after
    last_attempt_at INTEGER,
    result TEXT,                           -- JSON: the last classification (or suppression reason)
    queue_id TEXT,                         -- the server's queue id from the final DATA reply
    done_at INTEGER,                       -- when it reached sent/failed/suppressed/cancelled
    event_kind TEXT,                       -- last provider event correlated to it (bounced, ...)
    event_id TEXT,
    event_at INTEGER                       -- Unix seconds (occurred_at of that event)
);
CREATE INDEX deliveries_by_message ON deliveries (message, id);
-- Claims: the due rows of one connection, per workspace, oldest due first.
CREATE INDEX deliveries_due ON deliveries (connection, workspace, next_attempt_at)
    WHERE state IN ('queued', 'deferred');
-- Leases that lapsed, and rows left in flight by a process that stopped.
CREATE INDEX deliveries_sending ON deliveries (connection, lease_until) WHERE state = 'sending';
-- Queue depth and age per connection.
CREATE INDEX deliveries_pending ON deliveries (connection, queued_at)
    WHERE state IN ('queued', 'sending', 'deferred');
-- Suppressions stop pending deliveries; provider events find their delivery.
CREATE INDEX deliveries_by_recipient ON deliveries (recipient_key, workspace);
CREATE INDEX deliveries_by_queue_id ON deliveries (queue_id) WHERE queue_id IS NOT NULL;

CREATE TABLE delivery_attempts (
    delivery INTEGER NOT NULL,             -- deliveries.id
    n INTEGER NOT NULL,                    -- 1-based
    at INTEGER NOT NULL,                   -- Unix milliseconds (start of the attempt)
    connection TEXT NOT NULL,
    outcome TEXT NOT NULL,                 -- sent | deferred | failed | suppressed | moved
    result TEXT,                           -- JSON classification
    queue_id TEXT,
    PRIMARY KEY (delivery, n)
) WITHOUT ROWID;
-- Quota history after a restart: sends per connection in the last day.
CREATE INDEX delivery_attempts_sent ON delivery_attempts (connection, at) WHERE outcome = 'sent';
