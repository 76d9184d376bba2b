-- Each event's change sequence: bumped by every statement that announces a change to the
-- event (under its row lock), and carried in the notification, so live statistics streams
-- number their messages from the database: ids keep growing across restarts and are the
-- same on every instance for the same change.

ALTER TABLE events
    ADD COLUMN change_seq bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT events_change_seq_nonnegative CHECK (change_seq >= 0);
