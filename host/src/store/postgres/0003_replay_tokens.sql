-- Version 3: single-use tokens of signing schemes with a nonce (Mailgun's
-- `token`), so a replayed request is refused while its signature is valid.
-- The body hash tells a provider's retry (same bytes) from a replay.
CREATE TABLE replay_tokens (
    connection text NOT NULL,
    token text NOT NULL,
    body_sha256 bytea NOT NULL,            -- of the request that used it
    expires_at bigint NOT NULL,            -- Unix seconds; reusable after
    PRIMARY KEY (connection, token)
);
CREATE INDEX replay_tokens_by_expiry ON replay_tokens (expires_at);
