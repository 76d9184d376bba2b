-- The organiser's list of an event's orders (`GET /events/{id}/orders`): one event's
-- allocations, every buyer's, newest first, a page at a time. `ticket_allocations_event_status_idx`
-- finds the event's rows but not in that order, so every page would read and sort all of
-- the event's allocations; this index hands them over in page order and stops at the page's
-- end. A status filter walks the same entries and checks each row; its count uses
-- `ticket_allocations_event_status_idx`, and a confirmation code is found by
-- `ticket_allocations_confirmation_code_key` (20261208000002).
--
-- A hold's INSERT pays one more index entry, under the event lock. Within one event the
-- entries arrive in `created_at` order, so they go to the event's newest leaf page; a status
-- change already writes a new entry in every index of the table (`status` is indexed, so no
-- update is HOT), this one included. Built in this migration's transaction, as the others.
CREATE INDEX ticket_allocations_event_created_idx
    ON ticket_allocations (event_id, created_at DESC, id DESC);
