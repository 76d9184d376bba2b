-- `checkin_scans`' primary key leads with the nonce, compared bytewise.
--
-- Every statement that reads or updates scans names them by nonce (`nonce = ANY(…)` of a
-- batch) within one event. With `(event_id, nonce)`, statistics older than the door's first
-- minutes (the planner saw a new event as a few rows) made the planner search the key by
-- `event_id` alone and filter the nonces after: recording a batch's answers walked every
-- scan of the event, 10–26 ms per batch of about 70 and growing with every scan. Led by the
-- nonce, the key can only be searched nonce by nonce. A nonce is still unique per event
-- (the key's columns are the same; `ON CONFLICT (event_id, nonce)` infers it as before).
--
-- Nonces are 1 to 128 characters of `[A-Za-z0-9._:-]` (`checkin_scans_nonce_shape`), which
-- sort the same in "C" as in the database's default collation; "C" compares with memcmp
-- instead of strcoll on copies (see 20261206000001_hot_insert_indexes.sql). The key is
-- rebuilt once, in this migration's transaction.
ALTER TABLE checkin_scans DROP CONSTRAINT checkin_scans_pkey;
ALTER TABLE checkin_scans ALTER COLUMN nonce TYPE text COLLATE "C";
ALTER TABLE checkin_scans ADD CONSTRAINT checkin_scans_pkey PRIMARY KEY (nonce, event_id);
