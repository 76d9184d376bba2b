-- The catalogue: an event sells ticket types with prices, counted against shared quotas; an
-- allocation (an order) holds one line per type; purchased orders can be refunded.
--
-- Every count the sale promises is a CHECK, as on `events`: a quota cannot hold more than
-- its size, a line cannot refund more than it sold, an order's refunds cannot exceed its
-- total. Prices are integers in the currency's minor unit, at most 1,000,000,000, so an
-- order's total and an event's gross (at most 1,000,000 tickets) stay below 10^15: far
-- inside bigint, and inside the integers a JavaScript number holds exactly (2^53).

-- Money and sales windows on the event. Rows stored before this migration sold in EUR.
ALTER TABLE events
    ADD COLUMN currency       text NOT NULL DEFAULT 'EUR',
    ADD COLUMN sales_start_at timestamptz,
    ADD COLUMN sales_end_at   timestamptz,
    ADD CONSTRAINT events_currency_code CHECK (currency ~ '^[A-Z]{3}$'),
    ADD CONSTRAINT events_sales_window
        CHECK (sales_start_at IS NULL OR sales_end_at IS NULL OR sales_end_at > sales_start_at);
-- New events name their currency (the app's `--default-currency` when the client does not).
ALTER TABLE events ALTER COLUMN currency DROP DEFAULT;

CREATE TABLE ticket_types (
    id             uuid        PRIMARY KEY,
    event_id       uuid        NOT NULL REFERENCES events (id) ON DELETE RESTRICT,
    name           text        NOT NULL,
    description    text,
    price          bigint      NOT NULL,
    max_per_order  integer,
    sales_start_at timestamptz,
    sales_end_at   timestamptz,
    active         boolean     NOT NULL DEFAULT true,
    -- The type `{quantity}` without `ticketTypeId` buys: "General admission", made with the
    -- event. Exactly one per event (the partial unique index below, and the app makes it in
    -- the event's own transaction).
    is_default     boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at     timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT ticket_types_event_name_key UNIQUE (event_id, name),
    -- The target of the composite foreign keys that keep quotas and lines inside one event.
    CONSTRAINT ticket_types_id_event_key UNIQUE (id, event_id),
    CONSTRAINT ticket_types_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
    CONSTRAINT ticket_types_description_length
        CHECK (description IS NULL OR char_length(description) <= 2000),
    CONSTRAINT ticket_types_price_range CHECK (price BETWEEN 0 AND 1000000000),
    CONSTRAINT ticket_types_max_per_order_range
        CHECK (max_per_order IS NULL OR max_per_order BETWEEN 1 AND 1000000),
    CONSTRAINT ticket_types_sales_window
        CHECK (sales_start_at IS NULL OR sales_end_at IS NULL OR sales_end_at > sales_start_at)
);

CREATE UNIQUE INDEX ticket_types_one_default ON ticket_types (event_id) WHERE is_default;
-- Listing an event's types in creation order.
CREATE INDEX ticket_types_event_created_idx ON ticket_types (event_id, created_at, id);

-- Every event stored so far sells its tickets as one free "General admission" type.
INSERT INTO ticket_types (id, event_id, name, price, is_default, created_at)
SELECT gen_random_uuid(), id, 'General admission', 0, true, created_at FROM events;

-- A quota: a pool of `size` tickets shared by the types it contains, counted as the event's
-- own counts are (available + reserved + purchased = size). The counts move in the same
-- statement as the event's (see `db::events::move_counts`), under the event row lock.
CREATE TABLE quotas (
    id                uuid        PRIMARY KEY,
    event_id          uuid        NOT NULL REFERENCES events (id) ON DELETE RESTRICT,
    name              text        NOT NULL,
    size              integer     NOT NULL,
    available_tickets integer     NOT NULL,
    reserved_tickets  integer     NOT NULL DEFAULT 0,
    purchased_tickets integer     NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT quotas_id_event_key UNIQUE (id, event_id),
    CONSTRAINT quotas_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
    CONSTRAINT quotas_size_range CHECK (size BETWEEN 0 AND 1000000),
    CONSTRAINT quotas_available_nonnegative CHECK (available_tickets >= 0),
    CONSTRAINT quotas_reserved_nonnegative CHECK (reserved_tickets >= 0),
    CONSTRAINT quotas_purchased_nonnegative CHECK (purchased_tickets >= 0),
    CONSTRAINT quotas_counts_balance
        CHECK (available_tickets + reserved_tickets + purchased_tickets = size)
);

CREATE INDEX quotas_event_id_idx ON quotas (event_id, id);

-- Which types count against which quota. The composite keys keep a quota and its types in
-- one event.
CREATE TABLE quota_ticket_types (
    quota_id       uuid NOT NULL,
    ticket_type_id uuid NOT NULL,
    event_id       uuid NOT NULL,

    PRIMARY KEY (quota_id, ticket_type_id),
    FOREIGN KEY (quota_id, event_id) REFERENCES quotas (id, event_id) ON DELETE CASCADE,
    FOREIGN KEY (ticket_type_id, event_id) REFERENCES ticket_types (id, event_id)
);

CREATE INDEX quota_ticket_types_type_idx ON quota_ticket_types (ticket_type_id);

-- Orders: an allocation's money, in its event's currency (which never changes), fixed when
-- it is made: `total` is the sum of its lines' `unit_price × quantity` (0 for an allocation
-- with no lines, as those stored before this migration are made free below).
ALTER TABLE ticket_allocations
    ADD COLUMN total             bigint  NOT NULL DEFAULT 0,
    ADD COLUMN refunded_quantity integer NOT NULL DEFAULT 0,
    ADD COLUMN refunded_amount   bigint  NOT NULL DEFAULT 0,
    ADD COLUMN refunded_at       timestamptz,
    ADD CONSTRAINT ticket_allocations_total_nonnegative CHECK (total >= 0),
    ADD CONSTRAINT ticket_allocations_refunded_quantity_range
        CHECK (refunded_quantity BETWEEN 0 AND quantity),
    ADD CONSTRAINT ticket_allocations_refunded_amount_range
        CHECK (refunded_amount BETWEEN 0 AND total),
    -- Only a purchase can have been refunded, and `refunded` means nothing is left.
    ADD CONSTRAINT ticket_allocations_refunds_need_purchase
        CHECK (refunded_quantity = 0 OR status IN ('purchased', 'refunded')),
    ADD CONSTRAINT ticket_allocations_refunded_is_complete
        CHECK ((status = 'refunded') = (refunded_at IS NOT NULL)
               AND (status <> 'refunded' OR refunded_quantity = quantity));

-- A refunded purchase keeps the record of its purchase.
ALTER TABLE ticket_allocations DROP CONSTRAINT ticket_allocations_purchased_is_complete;
ALTER TABLE ticket_allocations ADD CONSTRAINT ticket_allocations_purchased_is_complete
    CHECK ((status IN ('purchased', 'refunded'))
           = (purchased_at IS NOT NULL AND confirmation_code IS NOT NULL));

ALTER TABLE ticket_allocations DROP CONSTRAINT ticket_allocations_status_known;
ALTER TABLE ticket_allocations ADD CONSTRAINT ticket_allocations_status_known
    CHECK (status IN ('reserved', 'payment_pending', 'purchased', 'cancelled', 'expired', 'refunded'));

-- One line per ticket type of an order, at the price the type had when the order was made.
-- `quantity` of the allocation is the sum of its lines' (the app writes both in one
-- statement; the overlap race test compares them).
--
-- No foreign keys, for the reason `buyer_tickets` has none: a key checks every new line
-- against its allocation and its type, two lookups per line inside the batch's INSERT, and
-- measured they cost about a tenth of the batched hold rate (docs/performance.md). Lines are
-- written by one statement only (`db::allocations::insert_reserved`), together with the
-- allocation they belong to, for types read under the event lock from the event's own
-- `ticket_types`; no allocation and no ticket type is ever deleted (their own keys are ON
-- DELETE RESTRICT and no route deletes either). Every read of lines goes through their
-- allocation (by event), so the table needs no index but its key.
CREATE TABLE allocation_lines (
    allocation_id     uuid    NOT NULL,
    ticket_type_id    uuid    NOT NULL,
    quantity          integer NOT NULL,
    unit_price        bigint  NOT NULL,
    refunded_quantity integer NOT NULL DEFAULT 0,

    PRIMARY KEY (allocation_id, ticket_type_id),
    CONSTRAINT allocation_lines_quantity_positive CHECK (quantity > 0),
    CONSTRAINT allocation_lines_unit_price_range CHECK (unit_price BETWEEN 0 AND 1000000000),
    CONSTRAINT allocation_lines_refunded_range CHECK (refunded_quantity BETWEEN 0 AND quantity)
);

-- Every allocation stored so far is one free line of its event's default type.
INSERT INTO allocation_lines (allocation_id, ticket_type_id, quantity, unit_price)
SELECT a.id, t.id, a.quantity, 0
FROM ticket_allocations a JOIN ticket_types t ON t.event_id = a.event_id AND t.is_default;

-- A refund of some or all of a purchased order's lines. `pending` is committed before the
-- provider is asked (outside every lock), then becomes `completed` (the tickets return to
-- the pools in that same transaction) or `failed`; the sweeper settles one left pending by
-- a crash. A pending refund's lines count against what may still be refunded, so two
-- parallel refunds can never give back one ticket twice.
CREATE TABLE refunds (
    id            uuid        PRIMARY KEY,
    allocation_id uuid        NOT NULL REFERENCES ticket_allocations (id) ON DELETE RESTRICT,
    status        text        NOT NULL DEFAULT 'pending',
    amount        bigint      NOT NULL,
    currency      text        NOT NULL,
    reason        text,
    reference     text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    settled_at    timestamptz,

    CONSTRAINT refunds_reference_key UNIQUE (reference),
    CONSTRAINT refunds_status_known CHECK (status IN ('pending', 'completed', 'failed')),
    CONSTRAINT refunds_settled_has_time CHECK ((status = 'pending') = (settled_at IS NULL)),
    CONSTRAINT refunds_amount_nonnegative CHECK (amount >= 0),
    CONSTRAINT refunds_currency_code CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT refunds_reason_length CHECK (reason IS NULL OR char_length(reason) <= 500)
);

CREATE INDEX refunds_allocation_idx ON refunds (allocation_id, created_at);
CREATE INDEX refunds_pending_idx ON refunds (created_at) WHERE status = 'pending';

CREATE TABLE refund_lines (
    refund_id      uuid    NOT NULL REFERENCES refunds (id) ON DELETE CASCADE,
    ticket_type_id uuid    NOT NULL,
    quantity       integer NOT NULL,
    amount         bigint  NOT NULL,

    PRIMARY KEY (refund_id, ticket_type_id),
    CONSTRAINT refund_lines_quantity_positive CHECK (quantity > 0),
    CONSTRAINT refund_lines_amount_nonnegative CHECK (amount >= 0)
);

-- The simulated provider's ledger records what each charge took (amount, currency and the
-- test card token; none for a void or a charge made before this migration), and what it
-- refunded.
ALTER TABLE payment_charges
    ADD COLUMN amount   bigint,
    ADD COLUMN currency text,
    ADD COLUMN token    text,
    ADD CONSTRAINT payment_charges_amount_nonnegative CHECK (amount IS NULL OR amount >= 0);

-- A refund by reference: `refunded` (money given back), `refused` (more than the charge has
-- left), `voided` (recovery settled a refund the provider never received).
CREATE TABLE payment_refunds (
    reference        text        PRIMARY KEY,
    charge_reference text        NOT NULL REFERENCES payment_charges (reference),
    amount           bigint      NOT NULL,
    currency         text        NOT NULL,
    outcome          text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT payment_refunds_amount_nonnegative CHECK (amount >= 0),
    CONSTRAINT payment_refunds_outcome_known CHECK (outcome IN ('refunded', 'refused', 'voided'))
);

-- A refunded ticket no longer counts against its buyer's cap: the counters count each live
-- allocation's quantity less what was refunded of it.
CREATE OR REPLACE FUNCTION buyer_tickets_follow_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO buyer_tickets (event_id, fingerprint_hash, held_tickets, max_tickets)
    SELECT a.event_id, a.fingerprint_hash, sum(a.quantity - a.refunded_quantity), e.buyer_cap
    FROM added a JOIN events e ON e.id = a.event_id
    WHERE a.status IN ('reserved', 'payment_pending', 'purchased')
    GROUP BY a.event_id, a.fingerprint_hash, e.buyer_cap
    ON CONFLICT (event_id, fingerprint_hash)
    DO UPDATE SET held_tickets = buyer_tickets.held_tickets + EXCLUDED.held_tickets;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION buyer_tickets_follow_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Existing rows are updated, and only missing ones inserted: an INSERT … ON CONFLICT
    -- checks the proposed row's CHECK before it finds the conflict, so a negative move could
    -- not go through it. A negative move with no row to take it from fails the CHECK, as a
    -- drifted counter should.
    WITH moves AS (
        SELECT event_id, fingerprint_hash, sum(tickets) AS tickets
        FROM (
            SELECT event_id, fingerprint_hash, quantity - refunded_quantity AS tickets
            FROM after_rows
            WHERE status IN ('reserved', 'payment_pending', 'purchased')
            UNION ALL
            SELECT event_id, fingerprint_hash, refunded_quantity - quantity FROM before_rows
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

CREATE OR REPLACE FUNCTION buyer_tickets_follow_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE buyer_tickets b SET held_tickets = b.held_tickets - d.tickets
    FROM (
        SELECT event_id, fingerprint_hash, sum(quantity - refunded_quantity) AS tickets
        FROM removed
        WHERE status IN ('reserved', 'payment_pending', 'purchased')
        GROUP BY event_id, fingerprint_hash
    ) d
    WHERE b.event_id = d.event_id AND b.fingerprint_hash = d.fingerprint_hash;
    RETURN NULL;
END
$$;

-- The lifecycle gains its last move: a purchase refunded in full. Same table as
-- `AllocationStatus::can_become`.
CREATE OR REPLACE FUNCTION ticket_allocations_check_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.status, NEW.status) NOT IN (
        ('reserved', 'payment_pending'),
        ('reserved', 'cancelled'),
        ('reserved', 'expired'),
        ('payment_pending', 'purchased'),
        ('payment_pending', 'reserved'),
        ('payment_pending', 'expired'),
        ('purchased', 'refunded')
    ) THEN
        RAISE EXCEPTION 'allocation % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'ticket_allocations_status_transition',
                  TABLE = 'ticket_allocations';
    END IF;
    RETURN NEW;
END
$$;
