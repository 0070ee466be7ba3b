-- 008_card_lookups: what the correspondent card (GET /api/v1/.../correspondents/{address})
-- and the owed/awaiting lists look up, found by index rather than by scanning.
--
-- Owed and awaiting ask the parent_keys GIN index once per candidate message ("has
-- anything answered this one?"). With GIN's fast update on, every insert lands in an
-- unsorted pending list that each lookup scans whole until VACUUM merges it: after a first
-- harvest of 50,000 messages one lookup took 1.5 ms and an owed list a second. Inserts now
-- go straight into the index (a little slower per folded message), and what is pending
-- already is merged now.
ALTER INDEX message_index_parent_keys_idx SET (fastupdate = off);
SELECT gin_clean_pending_list('message_index_parent_keys_idx'::regclass);

-- A card lists one correspondent's flagged messages, newest first; the primary key
-- (account_id, msg_key) made that a scan of all the account's flags.
CREATE INDEX auth_flags_correspondent_idx ON auth_flags (account_id, correspondent, sent_at DESC, msg_key);
