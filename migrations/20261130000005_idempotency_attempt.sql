-- The attempt that holds a claim (a fencing token). A claim taken over as stale gets a new
-- attempt id, so the attempt it was taken from can no longer record, release or park it:
-- its record fails its effect's transaction instead of putting a second effect under one key.
-- Existing rows get a random id: no running attempt knows it, as none ran before this column.

ALTER TABLE idempotency_keys
    ADD COLUMN attempt uuid NOT NULL DEFAULT gen_random_uuid();
