-- Backstops in the schema for two promises the code keeps under the event row lock: the
-- per-buyer cap, and the allocation lifecycle. Neither is relied on by the code (it decides
-- first); each turns a bug into a failed statement instead of a broken promise.

-- The cap every buyer of the event is held to: the event's cap, or its total when it has
-- none.
ALTER TABLE events
    ADD COLUMN buyer_cap integer
        GENERATED ALWAYS AS (coalesce(max_tickets_per_fingerprint, total_tickets)) STORED;

-- Tickets each buyer holds for each event (reserved, payment_pending and purchased), kept
-- by the database itself (the triggers below), so that no writer, whatever its version or
-- its bug, can move a hold without moving the counter. `max_tickets` is a copy of the
-- event's `buyer_cap`, written when the row is made and rewritten by the trigger on events
-- whenever the cap changes, so the CHECK compares against the current cap: a grant above
-- the cap, and a cap lowered below what a buyer holds, both fail. (A foreign key to
-- `events (id, buyer_cap)` with ON UPDATE CASCADE would keep the copy too, but it checks
-- every new counter row against the event, one lookup per buyer inside the hottest
-- statement: measured, a quarter of the batched hold rate. For the same reason the table has
-- no foreign key to events at all: rows are only ever made by the triggers below, from
-- allocations whose own foreign key names a real event, and an event with holds cannot be
-- deleted (that foreign key is ON DELETE RESTRICT).)
CREATE TABLE buyer_tickets (
    event_id         uuid    NOT NULL,
    fingerprint_hash text    NOT NULL,
    held_tickets     integer NOT NULL,
    max_tickets      integer NOT NULL,

    PRIMARY KEY (event_id, fingerprint_hash),
    CONSTRAINT buyer_tickets_within_cap CHECK (held_tickets BETWEEN 0 AND max_tickets)
);

-- A new cap (or, without one, a new total) is every counter's new bound at once; the CHECK
-- refuses the event's update if a buyer already holds more.
CREATE FUNCTION buyer_tickets_follow_cap() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE buyer_tickets SET max_tickets = NEW.buyer_cap WHERE event_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER buyer_tickets_on_cap_change
    AFTER UPDATE OF max_tickets_per_fingerprint, total_tickets ON events
    FOR EACH ROW WHEN (OLD.buyer_cap IS DISTINCT FROM NEW.buyer_cap)
    EXECUTE FUNCTION buyer_tickets_follow_cap();

-- The counter starts from the holds stored so far. Should stored holds already break a cap,
-- the CHECK fails and so does the migration: that data needs a person, not a default.
INSERT INTO buyer_tickets (event_id, fingerprint_hash, held_tickets, max_tickets)
SELECT a.event_id, a.fingerprint_hash, sum(a.quantity), e.buyer_cap
FROM ticket_allocations a
JOIN events e ON e.id = a.event_id
WHERE a.status IN ('reserved', 'payment_pending', 'purchased')
GROUP BY a.event_id, a.fingerprint_hash, e.buyer_cap;

-- The counter follows every statement that writes holds: one trigger per statement (not per
-- row), which aggregates the statement's rows per buyer, so a batch of 200 holds moves each
-- of its buyers' rows once. A counter row is created on a buyer's first hold with the
-- event's current cap. Going negative fails the CHECK too: that is a counter that drifted
-- (a hold removed by hand), and it is refused rather than hidden.
CREATE FUNCTION buyer_tickets_follow_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO buyer_tickets (event_id, fingerprint_hash, held_tickets, max_tickets)
    SELECT a.event_id, a.fingerprint_hash, sum(a.quantity), e.buyer_cap
    FROM added a JOIN events e ON e.id = a.event_id
    WHERE a.status IN ('reserved', 'payment_pending', 'purchased')
    GROUP BY a.event_id, a.fingerprint_hash, e.buyer_cap
    ON CONFLICT (event_id, fingerprint_hash)
    DO UPDATE SET held_tickets = buyer_tickets.held_tickets + EXCLUDED.held_tickets;
    RETURN NULL;
END
$$;

CREATE FUNCTION buyer_tickets_follow_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Existing rows are updated, and only missing ones inserted: an INSERT … ON CONFLICT
    -- checks the proposed row's CHECK before it finds the conflict, so a negative move could
    -- not go through it. A negative move with no row to take it from fails the CHECK, as a
    -- drifted counter should.
    WITH moves AS (
        SELECT event_id, fingerprint_hash, sum(tickets) AS tickets
        FROM (
            SELECT event_id, fingerprint_hash, quantity AS tickets FROM after_rows
            WHERE status IN ('reserved', 'payment_pending', 'purchased')
            UNION ALL
            SELECT event_id, fingerprint_hash, -quantity FROM before_rows
            WHERE status IN ('reserved', 'payment_pending', 'purchased')
        ) rows
        GROUP BY event_id, fingerprint_hash
        HAVING sum(tickets) <> 0
    ), moved AS (
        UPDATE buyer_tickets b SET held_tickets = b.held_tickets + m.tickets
        FROM moves m
        WHERE b.event_id = m.event_id AND b.fingerprint_hash = m.fingerprint_hash
        RETURNING b.event_id, b.fingerprint_hash
    )
    INSERT INTO buyer_tickets (event_id, fingerprint_hash, held_tickets, max_tickets)
    SELECT m.event_id, m.fingerprint_hash, m.tickets, e.buyer_cap
    FROM moves m JOIN events e ON e.id = m.event_id
    WHERE NOT EXISTS (
        SELECT 1 FROM moved
        WHERE moved.event_id = m.event_id AND moved.fingerprint_hash = m.fingerprint_hash);
    RETURN NULL;
END
$$;

-- No code deletes holds; a delete by hand (or an event's cascade, which removes the
-- counter rows too) takes its tickets off whatever counter row is left.
CREATE FUNCTION buyer_tickets_follow_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE buyer_tickets b SET held_tickets = b.held_tickets - d.tickets
    FROM (
        SELECT event_id, fingerprint_hash, sum(quantity) AS tickets FROM removed
        WHERE status IN ('reserved', 'payment_pending', 'purchased')
        GROUP BY event_id, fingerprint_hash
    ) d
    WHERE b.event_id = d.event_id AND b.fingerprint_hash = d.fingerprint_hash;
    RETURN NULL;
END
$$;

CREATE TRIGGER buyer_tickets_on_insert
    AFTER INSERT ON ticket_allocations REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION buyer_tickets_follow_insert();
CREATE TRIGGER buyer_tickets_on_update
    AFTER UPDATE ON ticket_allocations REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows
    FOR EACH STATEMENT EXECUTE FUNCTION buyer_tickets_follow_update();
CREATE TRIGGER buyer_tickets_on_delete
    AFTER DELETE ON ticket_allocations REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION buyer_tickets_follow_delete();

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
