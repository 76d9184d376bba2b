-- The waiting list: buyers who found a ticket type sold out line up for it, and tickets that
-- come back are offered to them in join order, as `reserved` holds, under the event row lock
-- (src/waiting_list.rs, docs/concurrency.md#the-waiting-list).
--
-- An entry moves waiting → offered → accepted | declined | expired, or waiting → left, or
-- waiting → expired (passed over: its buyer could no longer take the tickets; see
-- `waiting_list::offer_returned`). Everything but the first move is final.

CREATE TABLE waiting_list_entries (
    id               uuid        PRIMARY KEY,
    -- Join order: an identity, not the clock, so two joins in one microsecond still have an
    -- order, and it is the order the event row lock granted them in (a join takes that lock).
    seq              bigint      GENERATED ALWAYS AS IDENTITY,
    event_id         uuid        NOT NULL REFERENCES events (id) ON DELETE RESTRICT,
    ticket_type_id   uuid        NOT NULL,
    fingerprint_hash text        NOT NULL,
    quantity         integer     NOT NULL,
    -- How long the hold offered to this entry stays reserved: the joining instance's
    -- `--waiting-list-offer-seconds`, fixed at join, so whichever transaction makes the offer
    -- (a cancel, an expiry, a refund, an organiser's change) keeps the promise made then.
    offer_seconds    integer     NOT NULL,
    status           text        NOT NULL DEFAULT 'waiting',
    -- The hold offered to the entry; set with `offered` and kept after.
    allocation_id    uuid        REFERENCES ticket_allocations (id) ON DELETE RESTRICT,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    offered_at       timestamptz,
    ended_at         timestamptz,

    CONSTRAINT waiting_list_entries_seq_key UNIQUE (seq),
    FOREIGN KEY (ticket_type_id, event_id) REFERENCES ticket_types (id, event_id),
    CONSTRAINT waiting_list_entries_quantity_positive CHECK (quantity > 0),
    CONSTRAINT waiting_list_entries_offer_seconds_range
        CHECK (offer_seconds BETWEEN 1 AND 604800),
    CONSTRAINT waiting_list_entries_fingerprint_is_hash
        CHECK (fingerprint_hash ~ '^[0-9a-f]{64}$'),
    CONSTRAINT waiting_list_entries_status_known
        CHECK (status IN ('waiting', 'offered', 'accepted', 'declined', 'expired', 'left')),
    -- An entry has a hold exactly when it was offered one.
    CONSTRAINT waiting_list_entries_offer_has_hold
        CHECK ((allocation_id IS NULL) = (offered_at IS NULL)),
    CONSTRAINT waiting_list_entries_offered_has_hold
        CHECK (status NOT IN ('offered', 'accepted', 'declined') OR allocation_id IS NOT NULL),
    CONSTRAINT waiting_list_entries_ended_has_time
        CHECK ((status IN ('waiting', 'offered')) = (ended_at IS NULL))
);

-- One live entry per buyer and type (`ALREADY_WAITING`); after it ends, the buyer may join
-- again, at the back.
CREATE UNIQUE INDEX waiting_list_entries_one_live_per_buyer
    ON waiting_list_entries (ticket_type_id, fingerprint_hash)
    WHERE status IN ('waiting', 'offered');
-- The line of an event, in join order: what every offer walks.
CREATE INDEX waiting_list_entries_line_idx
    ON waiting_list_entries (event_id, seq) WHERE status = 'waiting';
-- A type's line: its length (each type's `waiting`) and an entry's position in it.
CREATE INDEX waiting_list_entries_type_line_idx
    ON waiting_list_entries (ticket_type_id, seq) WHERE status = 'waiting';
-- A buyer's entries (`GET /waiting-list`), newest first.
CREATE INDEX waiting_list_entries_buyer_idx ON waiting_list_entries (fingerprint_hash, seq);
-- The organiser's list of an event, in join order.
CREATE INDEX waiting_list_entries_event_idx ON waiting_list_entries (event_id, seq);
-- The entry an offered hold belongs to (the trigger below follows holds by it).
CREATE UNIQUE INDEX waiting_list_entries_offer_idx
    ON waiting_list_entries (allocation_id) WHERE allocation_id IS NOT NULL;

-- Counts kept on the event row, read with the lock every purchase takes: how many wait, and
-- how many of its available tickets are set aside for the head of a line that waits for
-- more than came back (strict order: they are sold to nobody else). The quotas keep their
-- own share of the set-aside tickets. Both are written only by
-- `waiting_list::offer_returned`, under the event lock.
ALTER TABLE events
    ADD COLUMN waiting_list_length integer NOT NULL DEFAULT 0,
    ADD COLUMN set_aside_tickets   integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT events_waiting_list_length_range CHECK (waiting_list_length >= 0),
    ADD CONSTRAINT events_set_aside_range CHECK (set_aside_tickets >= 0);
ALTER TABLE quotas
    ADD COLUMN set_aside_tickets integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT quotas_set_aside_range CHECK (set_aside_tickets >= 0);

-- The lifecycle's moves, checked on every status write like the holds'.
CREATE FUNCTION waiting_list_entries_check_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.status, NEW.status) NOT IN (
        ('waiting', 'offered'),
        ('waiting', 'left'),
        ('waiting', 'expired'),
        ('offered', 'accepted'),
        ('offered', 'declined'),
        ('offered', 'expired')
    ) THEN
        RAISE EXCEPTION 'waiting list entry % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'waiting_list_entries_status_transition',
                  TABLE = 'waiting_list_entries';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER waiting_list_entries_status_transition
    BEFORE UPDATE OF status ON waiting_list_entries
    FOR EACH ROW EXECUTE FUNCTION waiting_list_entries_check_transition();

-- `events.waiting_list_length` counts the entries that wait, kept by the rows themselves so
-- no writer can forget it. Every writer of entries holds the event row lock already (a join,
-- a leave and an offer all take it), so this update waits for nothing.
CREATE FUNCTION waiting_list_length_follow_entries() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    delta integer := (NEW.status = 'waiting')::integer
        - (TG_OP = 'UPDATE' AND OLD.status = 'waiting')::integer;
BEGIN
    IF delta <> 0 THEN
        UPDATE events SET waiting_list_length = waiting_list_length + delta
        WHERE id = NEW.event_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER waiting_list_length_on_insert
    AFTER INSERT ON waiting_list_entries
    FOR EACH ROW EXECUTE FUNCTION waiting_list_length_follow_entries();
CREATE TRIGGER waiting_list_length_on_update
    AFTER UPDATE OF status ON waiting_list_entries
    FOR EACH ROW EXECUTE FUNCTION waiting_list_length_follow_entries();

-- An offered entry follows its hold, whatever path moves the hold: paid → `accepted`,
-- cancelled by its holder → `declined`, lapsed → `expired`. The tickets a declined or lapsed
-- offer gives back move on to the next in line in the same transaction
-- (`waiting_list::offer_returned`, called by every path that returns tickets).
CREATE FUNCTION waiting_list_entries_follow_hold() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE waiting_list_entries
    SET status = CASE NEW.status
                     WHEN 'purchased' THEN 'accepted'
                     WHEN 'cancelled' THEN 'declined'
                     ELSE 'expired'
                 END,
        ended_at = clock_timestamp()
    WHERE allocation_id = NEW.id AND status = 'offered';
    RETURN NULL;
END
$$;

CREATE TRIGGER waiting_list_entries_follow_hold
    AFTER UPDATE OF status ON ticket_allocations
    FOR EACH ROW
    WHEN (NEW.status IN ('purchased', 'cancelled', 'expired')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION waiting_list_entries_follow_hold();
