-- Backstops in the schema for two promises the code keeps under the event row lock: the
-- per-buyer cap, and the allocation lifecycle. Neither is relied on by the code (it decides
-- first); each turns a bug into a failed statement instead of a broken promise.

-- The cap every buyer of the event is held to: the event's cap, or its total when it has
-- none, so the foreign key below is checked for every event (a NULL column would exempt the
-- row from it).
ALTER TABLE events
    ADD COLUMN buyer_cap integer
        GENERATED ALWAYS AS (coalesce(max_tickets_per_fingerprint, total_tickets)) STORED,
    ADD CONSTRAINT events_id_buyer_cap_key UNIQUE (id, buyer_cap);

-- Tickets each buyer holds for each event (reserved, payment_pending and purchased), moved
-- by the same statements that create holds and end them. `max_tickets` is a copy of the
-- event's `buyer_cap` that the database itself keeps in step (ON UPDATE CASCADE), so the
-- CHECK compares against the current cap: a grant above the cap, and a cap lowered below
-- what a buyer holds, both fail.
CREATE TABLE buyer_tickets (
    event_id         uuid    NOT NULL,
    fingerprint_hash text    NOT NULL,
    held_tickets     integer NOT NULL,
    max_tickets      integer NOT NULL,

    PRIMARY KEY (event_id, fingerprint_hash),
    CONSTRAINT buyer_tickets_within_cap CHECK (held_tickets BETWEEN 0 AND max_tickets),
    CONSTRAINT buyer_tickets_event_cap_fkey FOREIGN KEY (event_id, max_tickets)
        REFERENCES events (id, buyer_cap) ON UPDATE CASCADE ON DELETE CASCADE
);

-- The counter starts from the holds stored so far. Should stored holds already break a cap,
-- the CHECK fails and so does the migration: that data needs a person, not a default.
INSERT INTO buyer_tickets (event_id, fingerprint_hash, held_tickets, max_tickets)
SELECT a.event_id, a.fingerprint_hash, sum(a.quantity), e.buyer_cap
FROM ticket_allocations a
JOIN events e ON e.id = a.event_id
WHERE a.status IN ('reserved', 'payment_pending', 'purchased')
GROUP BY a.event_id, a.fingerprint_hash, e.buyer_cap;

-- The lifecycle's moves, the same table as `AllocationStatus::can_become`
-- (src/domain/status.rs; the test `the_database_and_can_become_agree_on_every_transition`
-- compares the two). A trigger, because a CHECK sees only the new row and a transition is a
-- rule about the old and the new status together. Every update that names `status` is
-- checked, even one that keeps it: no status becomes itself.
CREATE FUNCTION ticket_allocations_check_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.status, NEW.status) NOT IN (
        ('reserved', 'payment_pending'),
        ('reserved', 'cancelled'),
        ('reserved', 'expired'),
        ('payment_pending', 'purchased'),
        ('payment_pending', 'reserved'),
        ('payment_pending', 'expired')
    ) THEN
        RAISE EXCEPTION 'allocation % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'ticket_allocations_status_transition',
                  TABLE = 'ticket_allocations';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER ticket_allocations_status_transition
    BEFORE UPDATE OF status ON ticket_allocations
    FOR EACH ROW EXECUTE FUNCTION ticket_allocations_check_transition();
