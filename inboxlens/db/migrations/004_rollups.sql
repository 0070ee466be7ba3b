-- 004_rollups: daily rollups cut in each account's time zone, weekly and monthly views
-- over them, and the compact message index that makes folding raw rows exactly-once.
--
-- inboxlens.metrics.rollups.aggregate() moves raw_headers rows into message_index and
-- adds them to the daily tables in one transaction; the raw rows are deleted there.
-- message_index keeps only what later insights need (no subject, no other header).

-- One row per message ever folded. Its primary key is what makes folding exactly-once:
-- a message harvested again after its raw row was folded (a new UIDVALIDITY refetches a
-- whole mailbox; a message moved to another folder) conflicts here and is not counted.
-- msg_key is harvest's key, the first 16 bytes of SHA-256("id" NUL Message-ID) when the
-- message has one; parent_keys are the same hash of its In-Reply-To ids (or of the last
-- References id when it has no In-Reply-To), so a reply finds its parent by primary key.
CREATE TABLE message_index (
    account_id      bigint NOT NULL REFERENCES mail_accounts (id) ON DELETE CASCADE,
    msg_key         bytea NOT NULL CHECK (length(msg_key) = 16),
    sent_at         timestamptz NOT NULL,
    direction       text NOT NULL CHECK (direction IN ('sent', 'received')),
    automated       boolean NOT NULL,
    correspondents  text[] NOT NULL,   -- lower-cased: From when received, To and Cc when sent
    parent_keys     bytea[] NOT NULL,
    gm_thread_id    bigint,
    folded_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, msg_key)
);
CREATE INDEX message_index_account_sent_at_idx ON message_index (account_id, sent_at);

-- One row per account that was ever aggregated. aggregate() locks it (an upsert) for the
-- length of its transaction, so two aggregators of one account take turns.
CREATE TABLE metrics_state (
    account_id         bigint PRIMARY KEY REFERENCES mail_accounts (id) ON DELETE CASCADE,
    runs               bigint NOT NULL DEFAULT 0,
    messages_folded    bigint NOT NULL DEFAULT 0,
    duplicates_seen    bigint NOT NULL DEFAULT 0,
    last_aggregated_at timestamptz
);

-- day is the local calendar date in the account's time zone, however many hours it has
-- (23 or 25 across a DST change). The hour arrays have 24 buckets, index 1 = 00:00-00:59
-- local time; an hour repeated when clocks go back counts twice in its bucket.
-- correspondents is the number of rows correspondent_daily has for the day (distinct
-- counts do not add up, so aggregate() recounts it for the days it touched).
CREATE TABLE account_daily (
    account_id        bigint NOT NULL REFERENCES mail_accounts (id) ON DELETE CASCADE,
    day               date NOT NULL,
    received          integer NOT NULL DEFAULT 0,
    sent              integer NOT NULL DEFAULT 0,
    correspondents    integer NOT NULL DEFAULT 0,
    received_by_hour  integer[] NOT NULL CHECK (cardinality(received_by_hour) = 24),
    sent_by_hour      integer[] NOT NULL CHECK (cardinality(sent_by_hour) = 24),
    PRIMARY KEY (account_id, day)
);

-- received: messages from them; sent: messages with them in To or Cc (once per message).
CREATE TABLE correspondent_daily (
    account_id     bigint NOT NULL REFERENCES mail_accounts (id) ON DELETE CASCADE,
    correspondent  text NOT NULL CHECK (correspondent = lower(correspondent) AND correspondent <> ''),
    day            date NOT NULL,
    received       integer NOT NULL DEFAULT 0,
    sent           integer NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, correspondent, day)
);
CREATE INDEX correspondent_daily_account_day_idx ON correspondent_daily (account_id, day);

-- Element-wise sums of equally long integer arrays (histograms), NULL-tolerant.
CREATE FUNCTION metrics_array_add(a integer[], b integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN a IS NULL THEN b WHEN b IS NULL THEN a ELSE
        ARRAY(SELECT coalesce(x, 0) + coalesce(y, 0) FROM unnest(a, b) WITH ORDINALITY AS t (x, y, i) ORDER BY i)
    END
$$;
CREATE AGGREGATE metrics_array_sum(integer[]) (SFUNC = metrics_array_add, STYPE = integer[]);

-- An array of size zeros but value at (1-based) slot.
CREATE FUNCTION metrics_one_hot(size integer, slot integer, value integer) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_fill(0, ARRAY[slot - 1]) || value || array_fill(0, ARRAY[size - slot])
$$;

-- Weekly (ISO weeks: week_start is the Monday) and monthly rollups, from the daily
-- tables only (day::timestamp, so no session time zone gets involved). by_weekday:
-- index 1 = Monday ... 7 = Sunday (ISO day of week).
CREATE VIEW account_weekly AS
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
           FROM correspondent_daily GROUP BY 1, 2) c USING (account_id, period_start);

CREATE VIEW account_monthly AS
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
           FROM correspondent_daily GROUP BY 1, 2) c USING (account_id, period_start);

CREATE VIEW correspondent_weekly AS
SELECT account_id, correspondent, date_trunc('week', day::timestamp)::date AS week_start,
       sum(received) AS received, sum(sent) AS sent, count(*) AS active_days
FROM correspondent_daily GROUP BY 1, 2, 3;

CREATE VIEW correspondent_monthly AS
SELECT account_id, correspondent, date_trunc('month', day::timestamp)::date AS month_start,
       sum(received) AS received, sum(sent) AS sent, count(*) AS active_days
FROM correspondent_daily GROUP BY 1, 2, 3;
