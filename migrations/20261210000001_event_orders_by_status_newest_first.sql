-- The organiser's list of an event's orders (`GET /events/{id}/orders`): one event's
-- allocations, every buyer's, newest first, a page at a time. `(event_id, status)` found the
-- event's rows but not in that order, so every page would read and sort all of the event's
-- allocations. Its entries now carry the page order after the status: with a status, the
-- list walks that status's entries in page order and stops at the page's end; without one,
-- it merges the six statuses' walks (a `UNION ALL` the planner reads as a Merge Append), and
-- still reads no more than the page, those before it and one entry per status. Everything
-- that searched `(event_id, status)` (the expiry sweep's per-event batch, the counts by
-- status, the foreign key's referencing column) searches the same prefix.
--
-- One index rather than a second one beside `(event_id, status)`: every hold's INSERT and
-- every status change (no status change is a HOT update) writes an entry to each index of
-- the table under the event lock, and a second index cost about 6 % of PostgreSQL's CPU per
-- paid sale (docs/performance.md). Built in this migration's transaction, as the others.
DROP INDEX ticket_allocations_event_status_idx;
CREATE INDEX ticket_allocations_event_status_created_idx
    ON ticket_allocations (event_id, status, created_at DESC, id DESC);
