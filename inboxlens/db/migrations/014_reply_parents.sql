-- 014_reply_parents: the fold finds a new message's replies by a btree lookup (issue 16.5).
--
-- Matching replies asked "which indexed messages name one of these new keys as parent?"
-- with parent_keys && $new_keys, a test the planner can only run on every message of the
-- account: each fold read the whole account (88 ms for 1,000 new rows against 16,000), and
-- the parent_keys GIN index, probed key by key, was read by a scan per key when the table
-- had no statistics yet (a first harvest, before autovacuum analyses it). reply_parents
-- holds the same edges, one row per (message, parent key), so each new key is one probe of
-- its primary key (account_id, parent_key, ...): a cost per new message, whatever the
-- planner believes about the table. The fold writes a message's rows with its index row.
CREATE TABLE reply_parents (
    account_id  bigint NOT NULL REFERENCES mail_accounts (id) ON DELETE CASCADE,
    parent_key  bytea NOT NULL CHECK (length(parent_key) = 16),
    msg_key     bytea NOT NULL CHECK (length(msg_key) = 16),
    PRIMARY KEY (account_id, parent_key, msg_key)
);

INSERT INTO reply_parents (account_id, parent_key, msg_key)
SELECT m.account_id, p.key, m.msg_key
FROM message_index m CROSS JOIN unnest(m.parent_keys) AS p (key)
ON CONFLICT DO NOTHING;

-- The 24 hourly counts of a day or a correspondent from the hours that had any: one call
-- per group, where summing one-hot arrays cost two SQL function calls per message.
CREATE FUNCTION metrics_by_hour(hours integer[], counts integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY(SELECT coalesce(counts[array_position(hours, h)], 0) FROM generate_series(0, 23) AS h ORDER BY h)
$$;

-- Owed and awaiting ask reply_parents too ("has anything answered this one?"), so the GIN
-- index goes: it was the costliest part of indexing a message (about a sixth of the CPU of
-- an incremental fold of 1,000 rows), and every message paid for it, replies or not.
DROP INDEX message_index_parent_keys_idx;
