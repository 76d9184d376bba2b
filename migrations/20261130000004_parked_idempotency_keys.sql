-- A keyed payment whose provider call failed (outcome unknown) parks its claim on the
-- allocation and the payment reference it awaits, instead of releasing it: the charge may
-- have happened, so the key is not free until that payment is settled. A retry resolves a
-- parked claim from the allocation; a parked claim is never taken over as stale.

ALTER TABLE idempotency_keys
    ADD COLUMN awaiting_allocation uuid,
    ADD COLUMN awaiting_reference  text,
    -- Both or neither: a parked claim names the payment whose outcome it waits for.
    ADD CONSTRAINT idempotency_keys_parked_names_payment
        CHECK ((awaiting_allocation IS NULL) = (awaiting_reference IS NULL)),
    -- Only a claim can be parked; a recorded response is final.
    ADD CONSTRAINT idempotency_keys_parked_in_progress
        CHECK (awaiting_allocation IS NULL OR state = 'in_progress');
