-- 011_login_subjects: a sign-in is the provider and its ID token's subject, not an e-mail address.
-- Two providers (or one provider over time) may assert the same address; the subject a
-- provider gives one account never changes (OpenID Connect Core 2, 5.7). NULL for mailboxes
-- connected before this migration: web fills it in at their next sign-in through the same
-- provider with the same address.
ALTER TABLE mail_accounts ADD COLUMN subject text CHECK (length(subject) BETWEEN 1 AND 255);
CREATE INDEX mail_accounts_provider_subject_idx ON mail_accounts (provider, subject) WHERE subject IS NOT NULL;
