-- Idempotency keys: the first response to a keyed request, replayed to retries of it.
-- A key is scoped to the buyer (fingerprint hash) and kept for 24 hours.

CREATE TABLE idempotency_keys (
    fingerprint_hash text        NOT NULL,
    key              text        NOT NULL,
    -- SHA-256 of the method, path and canonical body: the same key with another request
    -- is refused rather than replayed.
    request_hash     text        NOT NULL,
    state            text        NOT NULL DEFAULT 'in_progress',
    response_status  integer,
    response_body    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- When the current attempt claimed the key; a claim left by a crashed attempt is
    -- taken over once it is stale (its effect never committed, see docs/reliability.md).
    claimed_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,

    PRIMARY KEY (fingerprint_hash, key),
    CONSTRAINT idempotency_keys_key_length CHECK (char_length(key) BETWEEN 1 AND 255),
    CONSTRAINT idempotency_keys_state_known CHECK (state IN ('in_progress', 'completed')),
    CONSTRAINT idempotency_keys_completed_has_response
        CHECK ((state = 'completed') = (response_status IS NOT NULL AND response_body IS NOT NULL))
);

-- The hourly purge of keys older than 24 hours.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
