-- Webhook endpoints, the events sent to them, one delivery per event and endpoint, and
-- every attempt of a delivery.

CREATE TABLE webhook_endpoints (
    id               text PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    livemode         boolean NOT NULL,
    url              text NOT NULL,
    description      text,
    events           text[] NOT NULL CHECK (cardinality(events) > 0),
    enabled          boolean NOT NULL DEFAULT true,
    -- Fernet token of {"signing_secret": "whsec_..."}; see postfuze_imports/crypto.py.
    signing_secret   bytea NOT NULL,
    -- Why the endpoint is disabled: 'gone' (it answered 410), 'failing' (its
    -- deliveries failed for 5 days) or 'manual' (disabled through the API).
    disabled_reason  text CHECK (disabled_reason IN ('gone', 'failing', 'manual')),
    -- Start of the current run of failed attempts; a successful attempt clears it.
    failing_since    timestamptz,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    deleted_at       timestamptz,
    CHECK (enabled = (disabled_reason IS NULL))
);

CREATE INDEX webhook_endpoints_listing
    ON webhook_endpoints (organization_id, livemode, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;

CREATE TABLE webhook_events (
    id               text PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    livemode         boolean NOT NULL,
    type             text NOT NULL,
    -- The JSON body exactly as it is sent and signed, so every retry sends the same bytes.
    body             text NOT NULL,
    created_at       timestamptz NOT NULL
);

CREATE TABLE webhook_deliveries (
    id                text PRIMARY KEY,
    event_id          text NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    endpoint_id       text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'succeeded', 'failed', 'canceled')),
    attempt_count     integer NOT NULL DEFAULT 0,
    -- When a pending delivery is due. A claim moves it to the end of the claim lease, so
    -- the delivery of a dispatcher that died becomes due again by itself.
    next_attempt_at   timestamptz,
    claimed_until     timestamptz,
    -- Fences the writes of a dispatcher whose claim lease expired and was taken over.
    claim_token       uuid,
    last_attempt_at   timestamptz,
    last_status_code  integer,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);

CREATE INDEX webhook_deliveries_due
    ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_listing
    ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_endpoint_pending
    ON webhook_deliveries (endpoint_id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_event
    ON webhook_deliveries (event_id);

CREATE TABLE webhook_attempts (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id       text NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    -- 1 for the first attempt of the delivery.
    attempt_number    integer NOT NULL CHECK (attempt_number >= 1),
    attempted_at      timestamptz NOT NULL,
    -- Null when no HTTP response arrived (timeout, connection failure, blocked URL).
    status_code       integer,
    duration_ms       integer NOT NULL CHECK (duration_ms >= 0),
    error             text,
    -- The start of the response body, at most 1 KiB of it, decoded as UTF-8.
    response_excerpt  text
);

CREATE INDEX webhook_attempts_delivery
    ON webhook_attempts (delivery_id, attempt_number, id);
