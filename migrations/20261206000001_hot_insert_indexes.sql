-- What every hold's INSERT pays for under the event lock, made cheaper.
--
-- 1. `ticket_allocations_fingerprint_event_idx` served the per-buyer cap when it summed a
--    buyer's allocations; the cap reads the `buyer_tickets` counters since
--    20261130000003, and nothing reads allocations by buyer and event any more. Each hold
--    still paid an insert into it, at a random place (buyers' hashes are random). Any read
--    of one buyer's allocations still has `ticket_allocations_fingerprint_created_idx`.
DROP INDEX ticket_allocations_fingerprint_event_idx;

-- 2. Byte order for the keys the hot inserts search: buyers' hashes (lower-case hex) and
--    statuses (ASCII words) sort the same in "C" as in the database's default collation,
--    but "C" compares with memcmp, while any other collation (C.UTF-8 included, on
--    PostgreSQL 15) copies both strings and calls strcoll for every comparison of every
--    index search. Each statement rebuilds the column's indexes; the table is not
--    rewritten (the type does not change).
--    The triggers that name `ticket_allocations.status` in their definition must be
--    dropped for the change and are made again exactly as before, inside this migration's
--    transaction, so no update runs unchecked.
DROP TRIGGER ticket_allocations_status_transition ON ticket_allocations;
DROP TRIGGER admissions_follow_purchase ON ticket_allocations;
DROP TRIGGER waiting_list_entries_follow_hold ON ticket_allocations;

ALTER TABLE ticket_allocations
    ALTER COLUMN fingerprint_hash TYPE text COLLATE "C",
    ALTER COLUMN status TYPE text COLLATE "C";
ALTER TABLE buyer_tickets ALTER COLUMN fingerprint_hash TYPE text COLLATE "C";
ALTER TABLE admissions ALTER COLUMN status TYPE text COLLATE "C";

CREATE TRIGGER ticket_allocations_status_transition
    BEFORE UPDATE OF status ON ticket_allocations
    FOR EACH ROW EXECUTE FUNCTION ticket_allocations_check_transition();

CREATE TRIGGER admissions_follow_purchase
    AFTER UPDATE OF status ON ticket_allocations
    FOR EACH ROW
    WHEN (NEW.status = 'purchased' AND OLD.status IS DISTINCT FROM 'purchased')
    EXECUTE FUNCTION admissions_follow_purchase();

CREATE TRIGGER waiting_list_entries_follow_hold
    AFTER UPDATE OF status ON ticket_allocations
    FOR EACH ROW
    WHEN (NEW.waiting_list_offer
          AND NEW.status IN ('purchased', 'cancelled', 'expired')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION waiting_list_entries_follow_hold();
