-- Check-in at the door (docs/admission.md, "Check-in" and "Offline scanning"): the answer
-- given to every scan that carried a nonce, and the conflicts offline devices made.

-- One row per (event, nonce) of a scan that named an admission of the event: the scan and
-- the answer it got. The primary key is what makes a retried scan get the first answer: the
-- retry's INSERT … ON CONFLICT DO NOTHING waits for a concurrent first attempt to commit (or
-- roll back), then inserts nothing, and the retry reads the stored answer. A code that is
-- invalid or of another event is refused the same way whenever it is sent, so it needs no row.
-- No foreign keys, for the reason `allocation_lines` has none: they would check every row of
-- a coalesced batch's claim against its event and its admission, and take a key-share lock
-- on the admission the batch then updates. The one statement that writes rows
-- (`db::checkins::claim`) inserts only scans joined to an admission of the event in that same
-- statement, and neither events nor admissions are ever deleted.
CREATE TABLE checkin_scans (
    event_id          uuid        NOT NULL,
    nonce             text        NOT NULL,
    admission_id      uuid        NOT NULL,
    -- `online`: POST /events/{id}/checkins, decided by the server; `offline`: uploaded in a
    -- batch, decided by a door device before the server heard of it.
    source            text        NOT NULL,
    scanned_at        timestamptz NOT NULL,
    gate              text,
    -- What the scan was answered: `admitted`, `duplicate` or `revoked`.
    result            text        NOT NULL,
    -- The admission's check-in as the answer gave it (its own for `admitted`, the first one
    -- for `duplicate`); null for `revoked` of an admission never checked in.
    first_checked_in_at timestamptz,
    first_gate        text,
    recorded_at       timestamptz NOT NULL DEFAULT now(),

    PRIMARY KEY (event_id, nonce),
    CONSTRAINT checkin_scans_nonce_shape CHECK (nonce ~ '^[A-Za-z0-9._:-]{1,128}$'),
    CONSTRAINT checkin_scans_source_known CHECK (source IN ('online', 'offline')),
    CONSTRAINT checkin_scans_result_known CHECK (result IN ('admitted', 'duplicate', 'revoked')),
    CONSTRAINT checkin_scans_gate_length CHECK (gate IS NULL OR char_length(gate) BETWEEN 1 AND 64)
);

-- The scans that admitted an admission, to name the nonce of the admission a later, earlier
-- offline scan displaces.
CREATE INDEX checkin_scans_admission_idx ON checkin_scans (admission_id);

-- Two scans that both let the same person in: at least one was decided offline. `admitted_*`
-- is the scan that is the admission (the earliest); `conflicting_*` the other one. The
-- organiser reads them at GET /events/{id}/checkins/conflicts.
CREATE TABLE checkin_conflicts (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id           uuid        NOT NULL REFERENCES events (id) ON DELETE RESTRICT,
    admission_id       uuid        NOT NULL REFERENCES admissions (id) ON DELETE RESTRICT,
    admitted_at        timestamptz NOT NULL,
    admitted_gate      text,
    admitted_nonce     text,
    conflicting_at     timestamptz NOT NULL,
    conflicting_gate   text,
    conflicting_nonce  text,
    recorded_at        timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT checkin_conflicts_order CHECK (admitted_at <= conflicting_at)
);

CREATE INDEX checkin_conflicts_event_idx ON checkin_conflicts (event_id, recorded_at);

-- The admissions ever checked in (a refund after entry keeps `checked_in_at`): the stream's
-- `checkedIn`, counted by an index-only scan.
CREATE INDEX admissions_event_checked_in_idx ON admissions (event_id)
    WHERE checked_in_at IS NOT NULL;

-- The refund trigger now locks every admission of the refunded allocation, in id order, when
-- it meets the first refunded line (the later lines find them held): the order a batch of
-- check-ins locks admissions in, so a refund and a batch cannot wait on each other in a cycle.
-- (Locking line by line, in line order, could take a higher id before a lower one.) It locks
-- FOR NO KEY UPDATE, the lock a check-in's UPDATE takes, rather than FOR UPDATE, which would
-- also wait for the key shares that rows referencing an admission take (a conflict's).
CREATE OR REPLACE FUNCTION admissions_follow_refund() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM admissions
    WHERE allocation_id = NEW.allocation_id
    ORDER BY id
    FOR NO KEY UPDATE;
    UPDATE admissions SET status = 'revoked', revoked_at = now()
    WHERE id IN (
        SELECT id FROM admissions
        WHERE allocation_id = NEW.allocation_id AND ticket_type_id = NEW.ticket_type_id
          AND status <> 'revoked'
        ORDER BY status = 'checked_in', position DESC
        LIMIT NEW.refunded_quantity - OLD.refunded_quantity);
    RETURN NULL;
END $$;
