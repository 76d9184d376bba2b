-- What the purchase transaction may keep between transactions of one instance: an event's
-- ticket types (names, prices, windows) change rarely, while its counts change with every
-- hold. `catalogue_version` counts the changes to the event's types and quota set, and
-- `quota_count` the quotas it has; the purchase transaction reads both with the event row
-- under its lock and reuses the types it read before when the version is the one it read
-- them at, and skips the quota read altogether on an event without quotas.
--
-- Triggers keep both, so no writer can forget them: every insert, update or delete of a
-- ticket type, and every insert or delete of a quota, bumps the version in the writer's own
-- transaction. The writers already hold the event row lock (they change what purchases
-- decide on), so the update of the event row here takes no new lock and orders nothing new.
-- A quota's counts are not cached (they are read under the quota locks every time), so
-- their updates leave the version alone.
ALTER TABLE events
    ADD COLUMN catalogue_version bigint  NOT NULL DEFAULT 0,
    ADD COLUMN quota_count       integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT events_quota_count_nonnegative CHECK (quota_count >= 0);

UPDATE events e SET quota_count = (SELECT count(*) FROM quotas q WHERE q.event_id = e.id);

CREATE FUNCTION events_catalogue_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'quotas' AND TG_OP = 'INSERT' THEN
        UPDATE events SET catalogue_version = catalogue_version + 1,
                          quota_count = quota_count + 1
         WHERE id = NEW.event_id;
    ELSIF TG_TABLE_NAME = 'quotas' AND TG_OP = 'DELETE' THEN
        UPDATE events SET catalogue_version = catalogue_version + 1,
                          quota_count = quota_count - 1
         WHERE id = OLD.event_id;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE events SET catalogue_version = catalogue_version + 1 WHERE id = OLD.event_id;
    ELSE
        UPDATE events SET catalogue_version = catalogue_version + 1 WHERE id = NEW.event_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER ticket_types_bump_catalogue_version
    AFTER INSERT OR UPDATE OR DELETE ON ticket_types
    FOR EACH ROW EXECUTE FUNCTION events_catalogue_changed();

CREATE TRIGGER quotas_bump_catalogue_version
    AFTER INSERT OR DELETE ON quotas
    FOR EACH ROW EXECUTE FUNCTION events_catalogue_changed();
