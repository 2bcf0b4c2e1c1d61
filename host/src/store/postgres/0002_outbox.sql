-- Version 2: the forwarding outbox, one row per (forwarder, stored event).
CREATE TABLE outbox (
    id text COLLATE "C" PRIMARY KEY,       -- ULID, assigned in commit order; webhook-id is msg_<id>
    forwarder text COLLATE "C" NOT NULL,   -- forwarder name (rows outlive a removed forwarder)
    event_id text COLLATE "C" NOT NULL REFERENCES events (id),
    recipient_key text COLLATE "C" NOT NULL, -- store::address_key(recipient): the order key
    state text NOT NULL,                   -- pending | delivered | dead
    attempts bigint NOT NULL DEFAULT 0,
    enqueued_at bigint NOT NULL,           -- Unix milliseconds; max_age counts from here
    next_attempt_at bigint NOT NULL,       -- Unix milliseconds
    lease text,                            -- token of the claim in progress
    lease_until bigint,                    -- Unix milliseconds; the claim lapses after
    last_attempt_at bigint,                -- Unix milliseconds
    last_error text,
    delivered_at bigint,                   -- Unix milliseconds
    UNIQUE (forwarder, event_id)
);
-- The head of each recipient's queue: min(id) per (forwarder, recipient_key).
CREATE INDEX outbox_pending_by_recipient ON outbox (forwarder, recipient_key, id)
    WHERE state = 'pending';
CREATE INDEX outbox_pending_due ON outbox (forwarder, next_attempt_at, id)
    WHERE state = 'pending';
CREATE INDEX outbox_by_forwarder_state ON outbox (forwarder, state, id);
CREATE INDEX outbox_by_state ON outbox (state, id);
