-- Webhooks: endpoints, events, deliveries, claiming and attempts.
--
-- A transaction that locks an endpoint and some of its deliveries locks the endpoint
-- row first, so the dispatcher's result writes and the API's updates do not deadlock.

-- name: insert_webhook_endpoint
-- $1 id, $2 organization_id, $3 livemode, $4 url, $5 description, $6 events,
-- $7 encrypted signing secret
INSERT INTO webhook_endpoints (
    id, organization_id, livemode, url, description, events, signing_secret
)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING *;

-- name: get_webhook_endpoint
-- $1 organization_id, $2 livemode, $3 endpoint id
SELECT *
FROM webhook_endpoints
WHERE organization_id = $1 AND livemode = $2 AND id = $3 AND deleted_at IS NULL;

-- name: lock_webhook_endpoint
-- Locks an endpoint for an update; NO KEY UPDATE lets concurrent inserts of
-- deliveries, whose foreign key needs only KEY SHARE, go on.
-- $1 organization_id, $2 livemode, $3 endpoint id
SELECT *
FROM webhook_endpoints
WHERE organization_id = $1 AND livemode = $2 AND id = $3 AND deleted_at IS NULL
FOR NO KEY UPDATE;

-- name: list_webhook_endpoints
-- $1 organization_id, $2 livemode,
-- $3 created_at and $4 id of the last endpoint of the previous page (both NULL for the
-- first), $5 page size plus one
SELECT *
FROM webhook_endpoints
WHERE organization_id = $1 AND livemode = $2 AND deleted_at IS NULL
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::text))
ORDER BY created_at DESC, id DESC
LIMIT $5;

-- name: update_webhook_endpoint
-- Changes the given fields; NULL keeps a field as it is. Enabling a disabled endpoint
-- clears its disabled_reason and failing_since; disabling an enabled one sets
-- disabled_reason to 'manual'.
-- $1 endpoint id, $2 url, $3 events, $4 description, $5 enabled
UPDATE webhook_endpoints
SET url = coalesce($2, url),
    events = coalesce($3, events),
    description = coalesce($4, description),
    enabled = coalesce($5, enabled),
    disabled_reason = CASE
        WHEN $5 IS TRUE THEN NULL
        WHEN $5 IS FALSE AND enabled THEN 'manual'
        ELSE disabled_reason
    END,
    failing_since = CASE WHEN $5 IS TRUE AND NOT enabled THEN NULL ELSE failing_since END,
    updated_at = clock_timestamp()
WHERE id = $1 AND deleted_at IS NULL
RETURNING *;

-- name: delete_webhook_endpoint
-- Soft delete: the row stays for the deliveries that refer to it.
-- $1 organization_id, $2 livemode, $3 endpoint id
UPDATE webhook_endpoints
SET deleted_at = clock_timestamp(), updated_at = clock_timestamp()
WHERE organization_id = $1 AND livemode = $2 AND id = $3 AND deleted_at IS NULL
RETURNING id;

-- name: webhook_subscribers
-- Endpoints that receive a new event of this type.
-- $1 organization_id, $2 livemode, $3 event type
SELECT id
FROM webhook_endpoints
WHERE organization_id = $1 AND livemode = $2 AND enabled AND deleted_at IS NULL
  AND $3 = ANY (events)
ORDER BY created_at, id;

-- name: insert_webhook_event
-- $1 id, $2 organization_id, $3 livemode, $4 type, $5 JSON body as sent, $6 created_at
INSERT INTO webhook_events (id, organization_id, livemode, type, body, created_at)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: insert_webhook_deliveries
-- One pending delivery per pair of $1 and $3.
-- $1 delivery ids, $2 event id, $3 endpoint ids, $4 when they are due
INSERT INTO webhook_deliveries (id, event_id, endpoint_id, status, next_attempt_at)
SELECT new.id, $2, new.endpoint_id, 'pending', $4
FROM unnest($1::text[], $3::text[]) AS new (id, endpoint_id);

-- name: claim_webhook_deliveries
-- Claims due deliveries for one dispatcher: each becomes due again at $3, the end of
-- the claim lease, unless the dispatcher records its attempt first.
-- $1 now, $2 maximum number of deliveries, $3 end of the claim lease, $4 claim token
UPDATE webhook_deliveries AS d
SET claimed_until = $3,
    next_attempt_at = $3,
    claim_token = $4,
    updated_at = $1
FROM webhook_events AS e, webhook_endpoints AS w
WHERE d.id IN (
    SELECT due.id
    FROM webhook_deliveries AS due
    WHERE due.status = 'pending' AND due.next_attempt_at <= $1
    ORDER BY due.next_attempt_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
  AND e.id = d.event_id
  AND w.id = d.endpoint_id
RETURNING d.id, d.event_id, d.endpoint_id, d.attempt_count, e.type AS event_type, e.body,
    w.url, w.signing_secret, w.enabled AND w.deleted_at IS NULL AS endpoint_active;

-- name: finish_webhook_attempt
-- Writes the outcome of an attempt to a claimed delivery and releases the claim.
-- Returns no row when the claim was lost: its lease expired and another dispatcher
-- claimed the delivery, or the delivery was ended meanwhile.
-- $1 delivery id, $2 claim token, $3 new status, $4 next_attempt_at (NULL unless
-- pending), $5 attempted_at, $6 status code or NULL, $7 error or NULL, $8 now
UPDATE webhook_deliveries
SET status = $3,
    attempt_count = attempt_count + 1,
    next_attempt_at = $4,
    claimed_until = NULL,
    claim_token = NULL,
    last_attempt_at = $5,
    last_status_code = $6,
    last_error = $7,
    updated_at = $8
WHERE id = $1 AND claim_token = $2 AND status = 'pending'
RETURNING attempt_count;

-- name: cancel_claimed_webhook_delivery
-- Cancels a claimed delivery whose endpoint was disabled or deleted after it was queued.
-- $1 delivery id, $2 claim token, $3 reason, $4 now
UPDATE webhook_deliveries
SET status = 'canceled',
    next_attempt_at = NULL,
    claimed_until = NULL,
    claim_token = NULL,
    last_error = $3,
    updated_at = $4
WHERE id = $1 AND claim_token = $2 AND status = 'pending';

-- name: insert_webhook_attempt
-- $1 delivery id, $2 attempt number, $3 attempted_at, $4 status code or NULL,
-- $5 duration in milliseconds, $6 error or NULL, $7 response excerpt or NULL
INSERT INTO webhook_attempts (
    delivery_id, attempt_number, attempted_at, status_code, duration_ms, error,
    response_excerpt
)
VALUES ($1, $2, $3, $4, $5, $6, $7);

-- name: clear_webhook_endpoint_failing
-- After a successful attempt. Leaves (and locks) nothing when the endpoint was not failing.
-- $1 endpoint id, $2 now
UPDATE webhook_endpoints
SET failing_since = NULL, updated_at = $2
WHERE id = $1 AND failing_since IS NOT NULL;

-- name: mark_webhook_endpoint_failing
-- After a failed attempt: starts the run of failures unless one is under way.
-- Returns the start of the run.
-- $1 endpoint id, $2 attempted_at of the failed attempt
UPDATE webhook_endpoints
SET failing_since = coalesce(failing_since, $2),
    updated_at = CASE WHEN failing_since IS NULL THEN $2 ELSE updated_at END
WHERE id = $1
RETURNING failing_since;

-- name: disable_webhook_endpoint
-- Returns the id when this call disabled the endpoint, no row when it already was.
-- $1 endpoint id, $2 disabled_reason, $3 now
UPDATE webhook_endpoints
SET enabled = false, disabled_reason = $2, updated_at = $3
WHERE id = $1 AND enabled
RETURNING id;

-- name: end_pending_webhook_deliveries
-- Ends every pending delivery of an endpoint, claimed ones included. A dispatcher that
-- has claimed one of them finds its claim lost when it records its attempt.
-- $1 endpoint id, $2 new status ('failed' or 'canceled'), $3 reason, $4 now
UPDATE webhook_deliveries
SET status = $2,
    next_attempt_at = NULL,
    claimed_until = NULL,
    claim_token = NULL,
    last_error = $3,
    updated_at = $4
WHERE endpoint_id = $1 AND status = 'pending';

-- name: list_webhook_deliveries
-- $1 endpoint id, $2 created_at and $3 id of the last delivery of the previous page
-- (both NULL for the first), $4 page size plus one
SELECT d.*, e.type AS event_type
FROM webhook_deliveries AS d
JOIN webhook_events AS e ON e.id = d.event_id
WHERE d.endpoint_id = $1
  AND ($2::timestamptz IS NULL OR (d.created_at, d.id) < ($2, $3::text))
ORDER BY d.created_at DESC, d.id DESC
LIMIT $4;

-- name: get_webhook_delivery
-- $1 endpoint id, $2 delivery id
SELECT d.*, e.type AS event_type
FROM webhook_deliveries AS d
JOIN webhook_events AS e ON e.id = d.event_id
WHERE d.endpoint_id = $1 AND d.id = $2;

-- name: lock_webhook_delivery
-- $1 endpoint id, $2 delivery id
SELECT d.*
FROM webhook_deliveries AS d
WHERE d.endpoint_id = $1 AND d.id = $2
FOR NO KEY UPDATE;

-- name: make_webhook_delivery_due
-- Brings an unclaimed pending delivery forward to now; no row when it is claimed.
-- $1 delivery id, $2 now
UPDATE webhook_deliveries
SET next_attempt_at = $2, updated_at = $2
WHERE id = $1 AND status = 'pending' AND claim_token IS NULL
RETURNING id;

-- name: list_webhook_attempts
-- Every attempt of the given deliveries, oldest first within each.
-- $1 delivery ids
SELECT *
FROM webhook_attempts
WHERE delivery_id = ANY ($1::text[])
ORDER BY delivery_id, attempt_number, id;
