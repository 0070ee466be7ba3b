-- 009_reply_business_seconds: each reply's time in working hours, worked out when it is
-- folded (in Python, by insights.WorkingClock) instead of on every read of a card: the
-- busiest correspondent's card summed 3,291 replies in business hours per request.
-- business_hours in metrics_state names the zone and working hours the stored values were
-- worked out in; when either changes, the next fold works them all out again, and until
-- then a card works them out when read, as before.
ALTER TABLE message_replies ADD COLUMN business_seconds double precision CHECK (business_seconds >= 0);
CREATE INDEX message_replies_business_todo_idx ON message_replies (account_id) WHERE business_seconds IS NULL;
ALTER TABLE metrics_state ADD COLUMN business_hours text;

-- Set from one sequence by every fold that touches the correspondent (their messages or
-- replies), so it never repeats, even after an account's metrics were forgotten and folded
-- again: a web process keeps a card's reply times until it changes.
CREATE SEQUENCE contacts_version_seq;
ALTER TABLE contacts ADD COLUMN version bigint NOT NULL DEFAULT 0;
