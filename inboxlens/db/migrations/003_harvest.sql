-- 003_harvest: what harvest needs to work accounts incrementally and exactly once.

-- One row per account: when it is due, and who holds it (a lease, so any number of
-- harvest processes on any number of nodes never work one account at once).
CREATE TABLE harvest_state (
    account_id        bigint PRIMARY KEY REFERENCES mail_accounts (id) ON DELETE CASCADE,
    next_run_at       timestamptz NOT NULL DEFAULT now(),
    lease_owner       text,
    lease_expires_at  timestamptz,
    failures          integer NOT NULL DEFAULT 0,
    last_error        text,
    first_sync_done   boolean NOT NULL DEFAULT false,
    messages_seen     bigint NOT NULL DEFAULT 0
);
CREATE INDEX harvest_state_due_idx ON harvest_state (next_run_at);

-- Per mailbox: the UIDVALIDITY we synced under and the highest UID stored. Advanced in
-- the same transaction as the rows it covers, so a crash resumes with no gap.
CREATE TABLE mailbox_checkpoints (
    account_id   bigint NOT NULL REFERENCES mail_accounts (id) ON DELETE CASCADE,
    mailbox      text NOT NULL,
    uidvalidity  bigint NOT NULL,
    last_uid     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, mailbox)
);

-- Raw header metadata, kept until aggregated and never more than 7 days (a sweeper
-- deletes older rows). msg_key identifies a message across mailboxes and UIDVALIDITY
-- changes (a hash of its Message-ID, or of its headers when it has none), so one
-- message is stored once however often it is fetched.
CREATE TABLE raw_headers (
    account_id      bigint NOT NULL REFERENCES mail_accounts (id) ON DELETE CASCADE,
    msg_key         bytea NOT NULL CHECK (length(msg_key) = 16),
    mailbox         text NOT NULL,
    uid             bigint NOT NULL,
    message_id      text,
    in_reply_to     text[] NOT NULL DEFAULT '{}',
    refs            text[] NOT NULL DEFAULT '{}',
    subject         text NOT NULL DEFAULT '',
    from_address    text,
    from_name       text,
    to_addresses    text[] NOT NULL DEFAULT '{}',
    cc_addresses    text[] NOT NULL DEFAULT '{}',
    sent_at         timestamptz NOT NULL,   -- Date:, or INTERNALDATE when Date: is missing or broken
    internal_date   timestamptz NOT NULL,
    date_reliable   boolean NOT NULL,
    direction       text NOT NULL CHECK (direction IN ('sent', 'received')),
    automated       boolean NOT NULL,
    list_id         text,
    dkim            text,
    spf             text,
    dmarc           text,
    dkim_domains    text[] NOT NULL DEFAULT '{}',
    gm_thread_id    bigint,
    harvested_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, msg_key)
);
CREATE INDEX raw_headers_harvested_at_idx ON raw_headers (harvested_at);
