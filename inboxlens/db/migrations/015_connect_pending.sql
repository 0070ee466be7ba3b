-- 015_connect_pending: account ids whose sealed token web is handing to the vault while the
-- account row is not committed yet (web/pages/views.py). A row left behind means web (or the
-- vault, or the database) died between the vault's set and the account's commit: if no
-- account has that id, web's sweep tells the vault to forget the token, so no token is kept
-- for an account nobody can see. The connect locks its row (FOR UPDATE) until it commits. Account ids come from mail_accounts' sequence
-- and are never reused, so a stale id cannot name a later account.
CREATE TABLE connect_pending (
    account_id  bigint PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);
