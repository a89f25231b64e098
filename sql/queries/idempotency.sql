-- Idempotency keys: claiming a key, completing or releasing it, replay lookup, cleanup.

-- name: claim_idempotency_key
-- Inserts the key as in progress, or takes over a row that has expired or whose request
-- stopped without completing or releasing it (its process died). Returns no row when a
-- live row already owns the key.
-- $1 organization_id, $2 livemode, $3 key, $4 request_method, $5 request_path,
-- $6 request_fingerprint, $7 owner_request_id, $8 retention in seconds,
-- $9 seconds after which an in-progress row counts as abandoned
INSERT INTO idempotency_keys AS existing (
    organization_id, livemode, key, request_method, request_path, request_fingerprint,
    owner_request_id, expires_at
)
VALUES ($1, $2, $3, $4, $5, $6, $7, clock_timestamp() + make_interval(secs => $8))
ON CONFLICT (organization_id, livemode, key) DO UPDATE
SET request_method = EXCLUDED.request_method,
    request_path = EXCLUDED.request_path,
    request_fingerprint = EXCLUDED.request_fingerprint,
    owner_request_id = EXCLUDED.owner_request_id,
    status = 'in_progress',
    response_status = NULL,
    response_headers = NULL,
    response_body = NULL,
    created_at = clock_timestamp(),
    expires_at = EXCLUDED.expires_at
WHERE existing.expires_at <= clock_timestamp()
   OR (existing.status = 'in_progress'
       AND existing.created_at <= clock_timestamp() - make_interval(secs => $9))
RETURNING owner_request_id;

-- name: get_idempotency_key
-- $1 organization_id, $2 livemode, $3 key
SELECT *
FROM idempotency_keys
WHERE organization_id = $1 AND livemode = $2 AND key = $3
  AND expires_at > clock_timestamp();

-- name: complete_idempotency_key
-- Stores the response of the request that owns the key.
-- $1 organization_id, $2 livemode, $3 key, $4 owner_request_id, $5 response_status,
-- $6 response_headers, $7 response_body
UPDATE idempotency_keys
SET status = 'completed',
    response_status = $5,
    response_headers = $6,
    response_body = $7
WHERE organization_id = $1 AND livemode = $2 AND key = $3 AND owner_request_id = $4
  AND status = 'in_progress';

-- name: release_idempotency_key
-- Deletes the key of a request whose response is not kept (a 5xx, for one), so the
-- client can retry with the same key.
-- $1 organization_id, $2 livemode, $3 key, $4 owner_request_id
DELETE FROM idempotency_keys
WHERE organization_id = $1 AND livemode = $2 AND key = $3 AND owner_request_id = $4
  AND status = 'in_progress';

-- name: delete_expired_idempotency_keys
-- Deletes up to $1 expired keys, for the worker's periodic sweep; the command tag
-- (DELETE n) gives the count, and the batch size keeps each statement short.
-- $1 batch size
WITH expired AS (
    SELECT organization_id, livemode, key
    FROM idempotency_keys
    WHERE expires_at <= clock_timestamp()
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
DELETE FROM idempotency_keys AS target
USING expired
WHERE target.organization_id = expired.organization_id
  AND target.livemode = expired.livemode
  AND target.key = expired.key
  AND target.expires_at <= clock_timestamp();
