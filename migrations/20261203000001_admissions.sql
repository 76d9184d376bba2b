-- Admission at the door (docs/admission.md): one admission per purchased ticket, the public
-- keys its codes are signed with, and the record of every scan.

-- The public half of every key a ticket code was ever signed with, so any instance (and any
-- door device, through the export) can verify a code signed by another. The key id is the
-- first 4 bytes of SHA-256 of the raw public key, in hex: derived, never chosen, so two
-- instances registering one key agree on its id. The private half of the generated key lives
-- in `settings` (like the fingerprint secret); a key read from `--signing-key-file` is never
-- stored.
CREATE TABLE signing_keys (
    id         text        PRIMARY KEY,
    public_key bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT signing_keys_id_shape CHECK (id ~ '^[0-9a-f]{8}$'),
    CONSTRAINT signing_keys_public_key_length CHECK (length(public_key) = 32),
    CONSTRAINT signing_keys_public_key_key UNIQUE (public_key)
);

-- One row per ticket of a purchased allocation, made by the trigger below in the transaction
-- that makes the allocation `purchased`, whichever path does it (a payment's settle batch,
-- recovery, a free order). `position` numbers the allocation's tickets from 1.
--
-- `status` moves valid → checked_in (a scan: one conditional UPDATE, `WHERE status =
-- 'valid'`, so of any number of simultaneous scans exactly one changes the row) and
-- valid | checked_in → revoked (a refund). A revoked admission keeps the time and gate of a
-- check-in it had.
CREATE TABLE admissions (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id       uuid        NOT NULL REFERENCES events (id) ON DELETE RESTRICT,
    allocation_id  uuid        NOT NULL REFERENCES ticket_allocations (id) ON DELETE RESTRICT,
    ticket_type_id uuid        NOT NULL,
    position       integer     NOT NULL,
    status         text        NOT NULL DEFAULT 'valid',
    checked_in_at  timestamptz,
    gate           text,
    revoked_at     timestamptz,

    CONSTRAINT admissions_ticket_type_fkey FOREIGN KEY (ticket_type_id, event_id)
        REFERENCES ticket_types (id, event_id) ON DELETE RESTRICT,
    CONSTRAINT admissions_allocation_position_key UNIQUE (allocation_id, position),
    CONSTRAINT admissions_position_positive CHECK (position > 0),
    CONSTRAINT admissions_status_known CHECK (status IN ('valid', 'checked_in', 'revoked')),
    CONSTRAINT admissions_valid_untouched
        CHECK ((status = 'valid') = (checked_in_at IS NULL AND revoked_at IS NULL)),
    CONSTRAINT admissions_checked_in_has_time
        CHECK ((status = 'checked_in') = (checked_in_at IS NOT NULL AND revoked_at IS NULL)),
    CONSTRAINT admissions_revoked_has_time CHECK ((status = 'revoked') = (revoked_at IS NOT NULL)),
    CONSTRAINT admissions_gate_only_when_checked_in CHECK (gate IS NULL OR checked_in_at IS NOT NULL),
    CONSTRAINT admissions_gate_length CHECK (gate IS NULL OR char_length(gate) BETWEEN 1 AND 64)
);

-- The event's admissions by status: statistics, the export, revocation lists.
CREATE INDEX admissions_event_status_idx ON admissions (event_id, status);

-- Every ticket of an allocation that becomes purchased gets its admission in the same
-- transaction, so no path to `purchased` can leave a paid ticket without a code.
CREATE FUNCTION admissions_follow_purchase() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO admissions (event_id, allocation_id, ticket_type_id, position)
    SELECT NEW.event_id, NEW.id, l.ticket_type_id,
           row_number() OVER (ORDER BY l.ticket_type_id, n)
    FROM allocation_lines l, generate_series(1, l.quantity) AS n
    WHERE l.allocation_id = NEW.id;
    RETURN NULL;
END $$;

CREATE TRIGGER admissions_follow_purchase
    AFTER UPDATE OF status ON ticket_allocations
    FOR EACH ROW
    WHEN (NEW.status = 'purchased' AND OLD.status IS DISTINCT FROM 'purchased')
    EXECUTE FUNCTION admissions_follow_purchase();

-- A completed refund of a line revokes as many of that line's admissions, those not yet
-- checked in first (the last positions first among equals), in the refund's own transaction.
-- The admissions of the line are locked before they are chosen: a scan committing meanwhile
-- is waited for, so the choice sees its result and a ticket just checked in is not picked
-- while a valid one remains. Lock order: the refund already holds the allocation (and the
-- event) before it reaches here; a scan locks only its one admission row and nothing after it,
-- so the two cannot wait on each other in a cycle.
CREATE FUNCTION admissions_follow_refund() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM admissions
    WHERE allocation_id = NEW.allocation_id AND ticket_type_id = NEW.ticket_type_id
    FOR UPDATE;
    UPDATE admissions SET status = 'revoked', revoked_at = now()
    WHERE id IN (
        SELECT id FROM admissions
        WHERE allocation_id = NEW.allocation_id AND ticket_type_id = NEW.ticket_type_id
          AND status <> 'revoked'
        ORDER BY status = 'checked_in', position DESC
        LIMIT NEW.refunded_quantity - OLD.refunded_quantity);
    RETURN NULL;
END $$;

CREATE TRIGGER admissions_follow_refund
    AFTER UPDATE OF refunded_quantity ON allocation_lines
    FOR EACH ROW
    WHEN (NEW.refunded_quantity > OLD.refunded_quantity)
    EXECUTE FUNCTION admissions_follow_refund();

-- Allocations purchased before this migration get their admissions now, the refunded ones
-- revoked.
INSERT INTO admissions (event_id, allocation_id, ticket_type_id, position)
SELECT a.event_id, a.id, l.ticket_type_id,
       row_number() OVER (PARTITION BY a.id ORDER BY l.ticket_type_id, n)
FROM ticket_allocations a
JOIN allocation_lines l ON l.allocation_id = a.id,
     generate_series(1, l.quantity) AS n
WHERE a.status IN ('purchased', 'refunded');

UPDATE admissions d SET status = 'revoked', revoked_at = now()
FROM (SELECT d2.id,
             row_number() OVER (PARTITION BY d2.allocation_id, d2.ticket_type_id
                                ORDER BY d2.position DESC) AS rank,
             l.refunded_quantity
      FROM admissions d2
      JOIN allocation_lines l
        ON l.allocation_id = d2.allocation_id AND l.ticket_type_id = d2.ticket_type_id) r
WHERE d.id = r.id AND r.rank <= r.refunded_quantity;
