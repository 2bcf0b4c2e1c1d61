-- Version 7: two changes that make sending cheaper.
--
-- The pending-deliveries index carries the state, so the queue totals
-- (`GET /v1/queue`, the queue metrics) are counted from the index alone
-- instead of reading every pending row of the table.
DROP INDEX deliveries_pending;
CREATE INDEX deliveries_pending ON deliveries (connection, state, queued_at)
    WHERE state IN ('queued', 'sending', 'deferred');

-- A message's bytes move to a table of their own: a status change rewrote
-- the whole row, bytes included, several times per message.
CREATE TABLE message_bodies (
    id INTEGER PRIMARY KEY,                -- rowid, referenced by messages.body
    raw BLOB NOT NULL                      -- headers and body, CRLF, without Bcc and provider headers
);
ALTER TABLE messages ADD COLUMN body INTEGER REFERENCES message_bodies (id);
INSERT INTO message_bodies (id, raw) SELECT rowid, raw FROM messages;
UPDATE messages SET body = rowid;
ALTER TABLE messages DROP COLUMN raw;
