-- 006_insights: what reply times, owed replies, relationships and sender authenticity
-- need once the raw rows are gone (docs/insights.md says what each number means).
-- inboxlens.metrics.rollups folds raw rows into all of it in one transaction per batch.

-- The From domain and its verdicts (received mail), for per-domain authenticity.
ALTER TABLE message_index
    ADD COLUMN from_domain text,
    ADD COLUMN dkim text,
    ADD COLUMN spf text,
    ADD COLUMN dmarc text;
-- "which indexed messages name this one as parent" (late parents, owed and awaiting).
CREATE INDEX message_index_parent_keys_idx ON message_index USING gin (parent_keys);
CREATE INDEX message_index_thread_idx ON message_index (account_id, gm_thread_id) WHERE gm_thread_id IS NOT NULL;

-- One row per reply message (its msg_key), matched to one parent: the primary key makes
-- each reply count once whichever of the two was folded first. direction: 'yours' (you
-- answered them) or 'theirs' (they answered you); correspondent: the other party, NULL
-- when unknown (a received message without a usable From).
CREATE TABLE message_replies (
    account_id     bigint NOT NULL REFERENCES mail_accounts (id) ON DELETE CASCADE,
    msg_key        bytea NOT NULL CHECK (length(msg_key) = 16),
    parent_key     bytea NOT NULL CHECK (length(parent_key) = 16),
    direction      text NOT NULL CHECK (direction IN ('yours', 'theirs')),
    correspondent  text,
    asked_at       timestamptz NOT NULL,
    answered_at    timestamptz NOT NULL,
    seconds        integer NOT NULL CHECK (seconds >= 0),
    PRIMARY KEY (account_id, msg_key)
);
CREATE INDEX message_replies_correspondent_idx ON message_replies (account_id, correspondent);

-- Reply times (seconds) of the replies sent (yours) or received (theirs) that day, whole:
-- medians do not add up, so weeks and months take percentiles over the days' arrays.
ALTER TABLE account_daily
    ADD COLUMN your_reply_seconds integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN their_reply_seconds integer[] NOT NULL DEFAULT '{}';
ALTER TABLE correspondent_daily
    ADD COLUMN your_reply_seconds integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN their_reply_seconds integer[] NOT NULL DEFAULT '{}';

-- Per correspondent, what does not depend on "now"; updated only for the correspondents a
-- fold touched. hours: their messages (received) by local hour, [1] = 00:00-00:59.
CREATE TABLE contacts (
    account_id          bigint NOT NULL REFERENCES mail_accounts (id) ON DELETE CASCADE,
    correspondent       text NOT NULL,
    first_contact       timestamptz NOT NULL,
    last_contact        timestamptz NOT NULL,
    received            integer NOT NULL DEFAULT 0,
    sent                integer NOT NULL DEFAULT 0,
    automated_received  integer NOT NULL DEFAULT 0,
    hours               integer[] NOT NULL CHECK (cardinality(hours) = 24),
    PRIMARY KEY (account_id, correspondent)
);

-- Per From domain of received mail: verdicts seen and passed, per check.
CREATE TABLE sender_domains (
    account_id     bigint NOT NULL REFERENCES mail_accounts (id) ON DELETE CASCADE,
    domain         text NOT NULL,
    messages       integer NOT NULL DEFAULT 0,
    dkim_checked   integer NOT NULL DEFAULT 0,
    dkim_pass      integer NOT NULL DEFAULT 0,
    spf_checked    integer NOT NULL DEFAULT 0,
    spf_pass       integer NOT NULL DEFAULT 0,
    dmarc_checked  integer NOT NULL DEFAULT 0,
    dmarc_pass     integer NOT NULL DEFAULT 0,
    last_seen      timestamptz NOT NULL,
    PRIMARY KEY (account_id, domain)
);

-- Messages that failed a check their domain usually passes, decided when folded.
CREATE TABLE auth_flags (
    account_id     bigint NOT NULL REFERENCES mail_accounts (id) ON DELETE CASCADE,
    msg_key        bytea NOT NULL CHECK (length(msg_key) = 16),
    domain         text NOT NULL,
    correspondent  text NOT NULL,
    sent_at        timestamptz NOT NULL,
    failed         text[] NOT NULL,
    PRIMARY KEY (account_id, msg_key)
);

-- A correspondent_daily row can now hold only a reply time (you answered them, writing to
-- someone else): only rows with messages are active days or distinct correspondents.
CREATE OR REPLACE VIEW account_weekly AS
SELECT d.account_id, d.period_start AS week_start,
       extract(isoyear FROM d.period_start)::integer AS iso_year,
       extract(week FROM d.period_start)::integer AS iso_week,
       d.received, d.sent, coalesce(c.correspondents, 0) AS correspondents,
       d.received_by_hour, d.sent_by_hour, d.received_by_weekday, d.sent_by_weekday
FROM (SELECT account_id, date_trunc('week', day::timestamp)::date AS period_start,
             sum(received) AS received, sum(sent) AS sent,
             metrics_array_sum(received_by_hour) AS received_by_hour,
             metrics_array_sum(sent_by_hour) AS sent_by_hour,
             metrics_array_sum(metrics_one_hot(7, extract(isodow FROM day)::integer, received)) AS received_by_weekday,
             metrics_array_sum(metrics_one_hot(7, extract(isodow FROM day)::integer, sent)) AS sent_by_weekday
      FROM account_daily GROUP BY 1, 2) d
LEFT JOIN (SELECT account_id, date_trunc('week', day::timestamp)::date AS period_start,
                  count(DISTINCT correspondent) AS correspondents
           FROM correspondent_daily WHERE received + sent > 0 GROUP BY 1, 2) c USING (account_id, period_start);

CREATE OR REPLACE VIEW account_monthly AS
SELECT d.account_id, d.period_start AS month_start,
       d.received, d.sent, coalesce(c.correspondents, 0) AS correspondents,
       d.received_by_hour, d.sent_by_hour, d.received_by_weekday, d.sent_by_weekday
FROM (SELECT account_id, date_trunc('month', day::timestamp)::date AS period_start,
             sum(received) AS received, sum(sent) AS sent,
             metrics_array_sum(received_by_hour) AS received_by_hour,
             metrics_array_sum(sent_by_hour) AS sent_by_hour,
             metrics_array_sum(metrics_one_hot(7, extract(isodow FROM day)::integer, received)) AS received_by_weekday,
             metrics_array_sum(metrics_one_hot(7, extract(isodow FROM day)::integer, sent)) AS sent_by_weekday
      FROM account_daily GROUP BY 1, 2) d
LEFT JOIN (SELECT account_id, date_trunc('month', day::timestamp)::date AS period_start,
                  count(DISTINCT correspondent) AS correspondents
           FROM correspondent_daily WHERE received + sent > 0 GROUP BY 1, 2) c USING (account_id, period_start);

CREATE OR REPLACE VIEW correspondent_weekly AS
SELECT account_id, correspondent, date_trunc('week', day::timestamp)::date AS week_start,
       sum(received) AS received, sum(sent) AS sent, count(*) FILTER (WHERE received + sent > 0) AS active_days
FROM correspondent_daily GROUP BY 1, 2, 3;

CREATE OR REPLACE VIEW correspondent_monthly AS
SELECT account_id, correspondent, date_trunc('month', day::timestamp)::date AS month_start,
       sum(received) AS received, sum(sent) AS sent, count(*) FILTER (WHERE received + sent > 0) AS active_days
FROM correspondent_daily GROUP BY 1, 2, 3;
