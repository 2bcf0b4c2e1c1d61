-- Version 4: single-use tokens of signing schemes with a nonce (Mailgun's
-- `token`), so a replayed request is refused while its signature is valid.
-- The body hash tells a provider's retry (same bytes) from a replay.
CREATE TABLE replay_tokens (
    connection TEXT NOT NULL,
    token TEXT NOT NULL,
    body_sha256 BLOB NOT NULL,             -- of the request that used it
    expires_at INTEGER NOT NULL,           -- Unix seconds; reusable after
    PRIMARY KEY (connection, token)
) WITHOUT ROWID;
CREATE INDEX replay_tokens_by_expiry ON replay_tokens (expires_at);
