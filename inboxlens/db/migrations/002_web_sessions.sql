-- 002_web_sessions: server-side sessions for the web process.
-- The cookie carries a random session id (signed); only its SHA-256 is stored, so a
-- leaked table cannot be replayed as cookies. data holds pending OAuth flows (state,
-- PKCE verifier, nonce) until their callback; never a token.
CREATE TABLE web_sessions (
    id_hash     bytea PRIMARY KEY CHECK (length(id_hash) = 32),
    user_id     bigint REFERENCES users (id) ON DELETE CASCADE,
    csrf_token  text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX web_sessions_expires_at_idx ON web_sessions (expires_at);
CREATE INDEX web_sessions_user_id_idx ON web_sessions (user_id) WHERE user_id IS NOT NULL;
