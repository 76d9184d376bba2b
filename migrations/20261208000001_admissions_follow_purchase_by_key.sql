-- The admissions of a settle batch's purchases are made in time proportional to the batch,
-- not to the sale.
--
-- The trigger's transition tables carry no statistics, so the planner took each for one row:
-- it joined the new and old images of the statement's rows by a nested loop (every new row
-- against every old one: 17,556 comparisons for a batch of 133), and read the allocation
-- lines by merging with a walk of all of `allocation_lines`' key in order (8,480 entries six
-- seconds into a sale, more with every hold). That was 10-22 ms of each settle batch, under
-- the event lock.
--
-- Now the rows that became `purchased` are a set difference of the two images (hashed,
-- linear in the batch; a statement updates a row at most once, and `event_id` never
-- changes, so `(id, event_id)` names a row in both), and each one's lines are read through
-- the key by their allocation id (`LATERAL … OFFSET 0`, which the planner cannot turn into a
-- join over the whole table). The admissions made, and so every path to `purchased`, are
-- the same as before.
CREATE OR REPLACE FUNCTION admissions_follow_purchase() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO admissions (event_id, allocation_id, ticket_type_id, position)
    SELECT bought.event_id, bought.id, line.ticket_type_id,
           row_number() OVER (PARTITION BY bought.id ORDER BY line.ticket_type_id, n)
    FROM (SELECT id, event_id FROM after_rows WHERE status = 'purchased'
          EXCEPT
          SELECT id, event_id FROM before_rows WHERE status = 'purchased') AS bought
    CROSS JOIN LATERAL (
        SELECT l.ticket_type_id, l.quantity FROM allocation_lines l
        WHERE l.allocation_id = bought.id
        OFFSET 0) AS line
    CROSS JOIN LATERAL generate_series(1, line.quantity) AS n;
    RETURN NULL;
END $$;

-- `admissions_ticket_type_fkey` (the ticket type of this event, `(ticket_type_id,
-- event_id)`) already proves the event exists: a ticket type belongs to an existing event.
-- The second check of the same event cost a key lookup per admission made, under the event
-- lock of the settle batch.
ALTER TABLE admissions DROP CONSTRAINT admissions_event_id_fkey;
