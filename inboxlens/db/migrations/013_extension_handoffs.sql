-- 013_extension_handoffs: one-time codes that hand a new API token to the browser extension
-- (inboxlens/web/handoff.py). Only the SHA-256 of a code is kept, with the PKCE challenge
-- (base64url SHA-256 of a verifier only the extension holds): a code is bound to its user,
-- lives two minutes, and its first exchange deletes it, whatever the outcome.
CREATE TABLE extension_handoffs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash   bytea NOT NULL UNIQUE CHECK (length(code_hash) = 32),
    challenge   text NOT NULL CHECK (length(challenge) = 43),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX extension_handoffs_user_id_idx ON extension_handoffs (user_id);
