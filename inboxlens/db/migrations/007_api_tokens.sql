-- 007_api_tokens: bearer tokens for the REST API (/api/v1), made on the settings page.
-- Only the SHA-256 of a token is stored (a token is 32 random bytes, so no salt or slow
-- hash is needed): a leaked table cannot be replayed. The token itself is shown once.
-- last_used_at is updated at most once a minute per token (no write per request).
CREATE TABLE api_tokens (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash    bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz
);
CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);
