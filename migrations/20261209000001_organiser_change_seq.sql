-- The change sequence of the event's latest organiser change (`event_updated`): set by the
-- same statement that bumps `change_seq` for that change, under the event row lock, and
-- carried in every change notification and stream message. A stream coalesces changes and
-- names only the last one, so an organiser's change followed within the gap by a sale was
-- shown only as the sale; with this value every message says whether the organiser changed
-- the event since the watcher last read it. 0: never changed since this migration (events
-- changed before it count as read by whoever watches them now).

ALTER TABLE events
    ADD COLUMN organiser_change_seq bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT events_organiser_change_seq_range
        CHECK (organiser_change_seq >= 0 AND organiser_change_seq <= change_seq);
