-- 001_foundation: the relational core later migrations build on.
-- Applied by inboxlens.pg.migrate() in one transaction; never edit it once released
-- (migrate refuses a changed checksum): add 002_... instead.

-- Addresses are stored lower-cased by the application; the CHECKs make a mixed-case
-- write fail loudly instead of creating a second, differently-cased row.
CREATE TABLE users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       text NOT NULL UNIQUE CHECK (email = lower(email)),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One connected mailbox. time_zone is an IANA name (validated by the application);
-- daily rollups are cut in it.
CREATE TABLE mail_accounts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    address       text NOT NULL UNIQUE CHECK (address = lower(address)),
    provider      text NOT NULL,
    time_zone     text NOT NULL DEFAULT 'UTC',
    status        text NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'reauth_required', 'disconnected', 'error')),
    connected_at  timestamptz NOT NULL DEFAULT now(),
    last_sync_at  timestamptz
);
CREATE INDEX mail_accounts_user_id_idx ON mail_accounts (user_id);

-- What happened, to whom. No foreign keys on purpose: the trail must outlive the users
-- and accounts it mentions, and deleting them must neither be blocked nor rewrite it.
-- detail never holds a token, key or message content.
CREATE TABLE audit_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    user_id     bigint,
    account_id  bigint,
    kind        text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(detail) = 'object')
);
CREATE INDEX audit_events_user_id_at_idx ON audit_events (user_id, at) WHERE user_id IS NOT NULL;
CREATE INDEX audit_events_account_id_at_idx ON audit_events (account_id, at) WHERE account_id IS NOT NULL;
