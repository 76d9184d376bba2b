-- A hold has no payment reference until its payment begins, and no confirmation code until
-- it is purchased. As table-wide UNIQUE constraints, the two keys took an entry for every
-- hold's INSERT and for every status UPDATE (never a HOT update: `status` is indexed), NULL
-- or not; NULLs sort last, so every such entry of every concurrent statement went to the
-- same rightmost leaf page of each key, under that page's lock. Unique indexes over the
-- values that are set make the same promise (NULLs never conflicted) and are written only
-- for a row that has a value: a hold's INSERT writes neither, step one of a payment only
-- the reference.
--
-- Both values are ASCII (`pay_<32 hex>_<32 hex>`, `BX-` and eight characters of a
-- 31-symbol alphabet) and only compared for equality, so they are compared bytewise
-- ("C"; see 20261206000001_hot_insert_indexes.sql). The table is not rewritten; the indexes
-- are built once, in this migration's transaction. No foreign key refers to either column.
ALTER TABLE ticket_allocations DROP CONSTRAINT ticket_allocations_payment_reference_key;
ALTER TABLE ticket_allocations DROP CONSTRAINT ticket_allocations_confirmation_code_key;
ALTER TABLE ticket_allocations
    ALTER COLUMN payment_reference TYPE text COLLATE "C",
    ALTER COLUMN confirmation_code TYPE text COLLATE "C";
CREATE UNIQUE INDEX ticket_allocations_payment_reference_key
    ON ticket_allocations (payment_reference) WHERE payment_reference IS NOT NULL;
CREATE UNIQUE INDEX ticket_allocations_confirmation_code_key
    ON ticket_allocations (confirmation_code) WHERE confirmation_code IS NOT NULL;
