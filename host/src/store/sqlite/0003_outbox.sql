-- Version 3: the forwarding outbox, one row per (forwarder, stored event).
CREATE TABLE outbox (
    id TEXT PRIMARY KEY NOT NULL,          -- ULID, assigned in commit order; webhook-id is msg_<id>
    forwarder TEXT NOT NULL,               -- forwarder name (rows outlive a removed forwarder)
    event_id TEXT NOT NULL REFERENCES events (id),
    recipient_key TEXT NOT NULL,           -- store::address_key(recipient): the order key
    state TEXT NOT NULL,                   -- pending | delivered | dead
    attempts INTEGER NOT NULL DEFAULT 0,
    enqueued_at INTEGER NOT NULL,          -- Unix milliseconds; max_age counts from here
    next_attempt_at INTEGER NOT NULL,      -- Unix milliseconds
    lease TEXT,                            -- token of the claim in progress
    lease_until INTEGER,                   -- Unix milliseconds; the claim lapses after
    last_attempt_at INTEGER,               -- Unix milliseconds
    last_error TEXT,
    delivered_at INTEGER,                  -- Unix milliseconds
    UNIQUE (forwarder, event_id)
);
-- The head of each recipient's queue: min(id) per (forwarder, recipient_key).
CREATE INDEX outbox_pending_by_recipient ON outbox (forwarder, recipient_key, id)
    WHERE state = 'pending';
CREATE INDEX outbox_by_forwarder_state ON outbox (forwarder, state, id);
CREATE INDEX outbox_by_state ON outbox (state, id);
