-- The admissions of newly purchased allocations, made once per statement instead of once per
-- row. A settle batch makes about a hundred holds `purchased` in one UPDATE under the event
-- lock; the row-level trigger ran its INSERT once per hold (about 0.2 ms each, some 20 ms a
-- batch, with the event row locked). The statement-level trigger inserts them all in one
-- INSERT from the statement's transition tables, in the same transaction as before, so no
-- path to `purchased` can still leave a paid ticket without its admissions.
--
-- A trigger with transition tables cannot name columns (`UPDATE OF status`), so this one
-- fires after every UPDATE of `ticket_allocations` and finds the rows that became
-- `purchased` by joining the old and new images by id (a statement updates a row at most
-- once). An UPDATE that purchases nothing inserts nothing.
DROP TRIGGER admissions_follow_purchase ON ticket_allocations;

CREATE OR REPLACE FUNCTION admissions_follow_purchase() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO admissions (event_id, allocation_id, ticket_type_id, position)
    SELECT a.event_id, a.id, l.ticket_type_id,
           row_number() OVER (PARTITION BY a.id ORDER BY l.ticket_type_id, n)
    FROM after_rows a
    JOIN before_rows b ON b.id = a.id
    JOIN allocation_lines l ON l.allocation_id = a.id,
         generate_series(1, l.quantity) AS n
    WHERE a.status = 'purchased' AND b.status IS DISTINCT FROM 'purchased';
    RETURN NULL;
END $$;

CREATE TRIGGER admissions_follow_purchase
    AFTER UPDATE ON ticket_allocations
    REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION admissions_follow_purchase();
