-- Scoped API tokens: an organiser token may do whatever the `--admin-token` may; a door token
-- only the check-in routes, of one event when it is bound to one. `boxoffice tokens create`
-- makes them and prints the token once; only its SHA-256 is kept, so a copy of the database
-- (a backup, a replica) lets nobody act with a token.
--
-- Every request that presents a token looks its digest up here (`token_hash` is unique, so
-- indexed) and refuses a revoked one: revocation takes effect at once on every instance,
-- since none of them caches a token.
CREATE TABLE api_tokens (
    id          uuid        PRIMARY KEY,
    name        text,
    scope       text        NOT NULL,
    event_id    uuid        REFERENCES events (id) ON DELETE RESTRICT,
    -- SHA-256 of the whole token text. The token carries 256 random bits, so a plain digest
    -- (no salt, no slow hash) cannot be reversed, and one lookup by it is enough.
    token_hash  bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Set once by `boxoffice tokens revoke`; a revoked token is kept for the listing.
    revoked_at  timestamptz,

    CONSTRAINT api_tokens_token_hash_key UNIQUE (token_hash),
    CONSTRAINT api_tokens_token_hash_length CHECK (octet_length(token_hash) = 32),
    CONSTRAINT api_tokens_scope CHECK (scope IN ('organiser', 'door')),
    CONSTRAINT api_tokens_name_length CHECK (name IS NULL OR char_length(name) BETWEEN 1 AND 100),
    -- An organiser acts on every event; only a door token may be confined to one.
    CONSTRAINT api_tokens_event_only_for_door CHECK (event_id IS NULL OR scope = 'door'),
    CONSTRAINT api_tokens_revoked_after_created CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);
