-- Idempotency keys of POST requests: the first request's fingerprint and, once it has
-- finished, its response, replayed to retries with the same key for at least 24 hours.

CREATE TABLE idempotency_keys (
    organization_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    livemode             boolean NOT NULL,
    -- The Idempotency-Key header value as sent: 1 to 255 visible ASCII characters.
    key                  text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_method       text NOT NULL,
    -- Path and query string of the first request.
    request_path         text NOT NULL,
    -- SHA-256 of the first request's body bytes.
    request_fingerprint  bytea NOT NULL CHECK (length(request_fingerprint) = 32),
    -- Request id of the request that owns the key; only it may complete or release it.
    owner_request_id     text NOT NULL,
    status               text NOT NULL DEFAULT 'in_progress'
                         CHECK (status IN ('in_progress', 'completed')),
    response_status      integer,
    -- Only the headers a replay must repeat: Content-Type and Location.
    response_headers     jsonb,
    response_body        bytea,
    created_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at           timestamptz NOT NULL,
    PRIMARY KEY (organization_id, livemode, key),
    CHECK ((status = 'completed') = (response_status IS NOT NULL AND response_body IS NOT NULL))
);

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
