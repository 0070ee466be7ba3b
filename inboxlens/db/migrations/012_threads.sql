-- 012_threads: owed and awaiting as a person means them (issue 13.6), the Message-ID a card
-- links to, and the authserv-id harvest sees on top of received mail (issue 13.5).
--
-- message_index.thread_key: one key per conversation, from the message's own headers
-- (inboxlens.metrics.keys.thread_key): the Gmail thread id, else the root of References,
-- else In-Reply-To, else the message itself. A received message is answered once you wrote
-- in its thread at the same second or later; a thread is awaited when its latest message is
-- yours (docs/insights.md). to_me: a received message had your address in To or Cc (NULL
-- for sent mail, and for rows folded before this migration: unknown, counted as to you).
-- message_id: the Message-ID without angle brackets (NULL before this migration).
ALTER TABLE message_index
    ADD COLUMN message_id text,
    ADD COLUMN thread_key bytea CHECK (length(thread_key) = 16),
    ADD COLUMN to_me boolean;

-- Rows folded before have no References left: a Gmail thread keys by its id as new rows do;
-- any other message starts at its parent (or itself), then climbs to the parent's key as
-- long as that parent is indexed, so a chain of indexed replies ends at its oldest indexed
-- message. A forged cycle of parents stops climbing after 30 rounds.
UPDATE message_index
SET thread_key = CASE WHEN gm_thread_id IS NOT NULL
                      THEN substring(sha256('\x746872696400'::bytea || convert_to(gm_thread_id::text, 'UTF8')) FOR 16)
                      ELSE coalesce(parent_keys[1], msg_key) END;
DO $$
DECLARE
    moved bigint;
    rounds integer := 0;
BEGIN
    LOOP
        UPDATE message_index m SET thread_key = p.thread_key
        FROM message_index p
        WHERE m.gm_thread_id IS NULL AND p.account_id = m.account_id AND p.msg_key = m.thread_key
          AND p.msg_key <> m.msg_key AND p.thread_key <> m.thread_key;
        GET DIAGNOSTICS moved = ROW_COUNT;
        rounds := rounds + 1;
        EXIT WHEN moved = 0 OR rounds >= 30;
    END LOOP;
END
$$;
ALTER TABLE message_index ALTER COLUMN thread_key SET NOT NULL;

-- "Did you write in this thread since?" and "is this the thread's latest?": one index
-- lookup per waiting message.
CREATE INDEX message_index_thread_key_idx ON message_index (account_id, thread_key, direction, sent_at, msg_key);

-- The authserv-id of the topmost Authentication-Results on most of the received mail of
-- the account's latest sync that saw one: offered as the one to trust (doctor, dashboard).
ALTER TABLE harvest_state ADD COLUMN seen_authserv_id text CHECK (length(seen_authserv_id) BETWEEN 1 AND 255);
