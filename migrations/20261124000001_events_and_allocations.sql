-- Events and the ticket allocations (holds) made against them.
-- The CHECK constraints make an oversold or unbalanced event unstorable, whatever the code does.

CREATE TABLE events (
    id                          uuid        PRIMARY KEY,
    name                        text        NOT NULL,
    date                        timestamptz NOT NULL,
    total_tickets               integer     NOT NULL,
    available_tickets           integer     NOT NULL,
    reserved_tickets            integer     NOT NULL DEFAULT 0,
    purchased_tickets           integer     NOT NULL DEFAULT 0,
    max_tickets_per_fingerprint integer,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT events_name_date_key UNIQUE (name, date),
    CONSTRAINT events_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
    CONSTRAINT events_total_range CHECK (total_tickets BETWEEN 1 AND 1000000),
    CONSTRAINT events_available_range CHECK (available_tickets BETWEEN 0 AND total_tickets),
    CONSTRAINT events_reserved_range CHECK (reserved_tickets BETWEEN 0 AND total_tickets),
    CONSTRAINT events_purchased_range CHECK (purchased_tickets BETWEEN 0 AND total_tickets),
    CONSTRAINT events_counts_balance
        CHECK (available_tickets + reserved_tickets + purchased_tickets = total_tickets),
    CONSTRAINT events_cap_range
        CHECK (max_tickets_per_fingerprint IS NULL
               OR max_tickets_per_fingerprint BETWEEN 1 AND total_tickets)
);

-- Listing orders by date then id.
CREATE INDEX events_date_id_idx ON events (date, id);

CREATE TABLE ticket_allocations (
    id                 uuid        PRIMARY KEY,
    event_id           uuid        NOT NULL REFERENCES events (id) ON DELETE RESTRICT,
    quantity           integer     NOT NULL,
    status             text        NOT NULL DEFAULT 'reserved',
    fingerprint_hash   text        NOT NULL,
    expires_at         timestamptz NOT NULL,
    reserved_at        timestamptz NOT NULL DEFAULT now(),
    payment_pending_at timestamptz,
    purchased_at       timestamptz,
    cancelled_at       timestamptz,
    expired_at         timestamptz,
    payment_reference  text,
    confirmation_code  text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT ticket_allocations_quantity_positive CHECK (quantity > 0),
    CONSTRAINT ticket_allocations_status_known
        CHECK (status IN ('reserved', 'payment_pending', 'purchased', 'cancelled', 'expired')),
    CONSTRAINT ticket_allocations_fingerprint_is_hash CHECK (fingerprint_hash ~ '^[0-9a-f]{64}$'),
    -- Each status carries the record of how it was reached.
    CONSTRAINT ticket_allocations_pending_has_reference
        CHECK (status <> 'payment_pending' OR (payment_reference IS NOT NULL AND payment_pending_at IS NOT NULL)),
    CONSTRAINT ticket_allocations_purchased_is_complete
        CHECK ((status = 'purchased') = (purchased_at IS NOT NULL AND confirmation_code IS NOT NULL)),
    CONSTRAINT ticket_allocations_cancelled_has_time CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL)),
    CONSTRAINT ticket_allocations_expired_has_time CHECK ((status = 'expired') = (expired_at IS NOT NULL)),
    CONSTRAINT ticket_allocations_payment_reference_key UNIQUE (payment_reference),
    CONSTRAINT ticket_allocations_confirmation_code_key UNIQUE (confirmation_code)
);

-- Counting and listing an event's allocations by status.
CREATE INDEX ticket_allocations_event_status_idx ON ticket_allocations (event_id, status);
-- The expiry sweep reads only live holds, oldest deadline first; the partial index stays small.
CREATE INDEX ticket_allocations_live_expiry_idx ON ticket_allocations (expires_at)
    WHERE status IN ('reserved', 'payment_pending');
-- The per-fingerprint cap sums one buyer's allocations for one event.
CREATE INDEX ticket_allocations_fingerprint_event_idx ON ticket_allocations (fingerprint_hash, event_id);
-- "My tickets": one buyer's allocations, newest first.
CREATE INDEX ticket_allocations_fingerprint_created_idx
    ON ticket_allocations (fingerprint_hash, created_at DESC, id DESC);

-- Charges recorded by the built-in simulated payment provider, keyed by the idempotent
-- payment reference so a charge's outcome can be looked up after a crash.
CREATE TABLE payment_charges (
    reference  text        PRIMARY KEY,
    outcome    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT payment_charges_outcome_known CHECK (outcome IN ('charged', 'declined', 'voided'))
);

-- Server-wide settings shared by every instance (the generated fingerprint secret).
CREATE TABLE settings (
    key        text        PRIMARY KEY,
    value      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
