-- Import jobs: creation, listing, claiming, checkpoints, finishing, cancel, sweep.

-- name: insert_import_job
-- $1 id, $2 organization_id, $3 livemode, $4 social_account_id, $5 tenant_id,
-- $6 from_date (as given), $7 to_date (as given), $8 window_start, $9 window_end,
-- $10 post_limit
INSERT INTO import_jobs (
    id, organization_id, livemode, social_account_id, tenant_id,
    from_date, to_date, window_start, window_end, post_limit
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING *;

-- name: get_import_job
-- $1 organization_id, $2 livemode, $3 social_account_id, $4 job id
SELECT *
FROM import_jobs
WHERE organization_id = $1 AND livemode = $2 AND social_account_id = $3 AND id = $4;

-- name: get_import_job_by_id
-- $1 job id
SELECT * FROM import_jobs WHERE id = $1;

-- name: list_import_jobs
-- $1 organization_id, $2 livemode, $3 social_account_id,
-- $4 created_at and $5 id of the last job of the previous page (both NULL for the first),
-- $6 page size plus one
SELECT *
FROM import_jobs
WHERE organization_id = $1 AND livemode = $2 AND social_account_id = $3
  AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::text))
ORDER BY created_at DESC, id DESC
LIMIT $6;

-- name: claim_import_job
-- Claims one due job: the given one when $1 is not NULL, else the one due longest.
-- Only the oldest unfinished job of an account is eligible, so an account runs one
-- import at a time and in order. A job whose lease expired without a release was
-- abandoned by a crashed worker: the claim counts it in crash_count.
-- $1 job id or NULL, $2 new lease token, $3 lease length in seconds
UPDATE import_jobs AS j
SET status = 'running',
    lease_token = $2,
    lease_expires_at = clock_timestamp() + make_interval(secs => $3),
    started_at = coalesce(j.started_at, clock_timestamp()),
    crash_count = j.crash_count + (j.lease_token IS NOT NULL)::int,
    imported_count = coalesce(j.imported_count, 0),
    updated_at = clock_timestamp()
WHERE j.id = (
    SELECT c.id
    FROM import_jobs AS c
    WHERE c.status IN ('pending', 'running')
      AND c.run_after <= clock_timestamp()
      AND (c.lease_token IS NULL OR c.lease_expires_at < clock_timestamp())
      AND ($1::text IS NULL OR c.id = $1)
      AND NOT EXISTS (
          SELECT 1
          FROM import_jobs AS older
          WHERE older.social_account_id = c.social_account_id
            AND older.status IN ('pending', 'running')
            AND (older.created_at, older.id) < (c.created_at, c.id)
      )
    ORDER BY c.run_after, c.created_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING j.*;

-- name: due_import_jobs
-- Jobs a worker could claim now; the sweep sends a wake-up for each.
-- $1 maximum number of ids
SELECT c.id
FROM import_jobs AS c
WHERE c.status IN ('pending', 'running')
  AND c.run_after <= clock_timestamp()
  AND (c.lease_token IS NULL OR c.lease_expires_at < clock_timestamp())
  AND NOT EXISTS (
      SELECT 1
      FROM import_jobs AS older
      WHERE older.social_account_id = c.social_account_id
        AND older.status IN ('pending', 'running')
        AND (older.created_at, older.id) < (c.created_at, c.id)
  )
ORDER BY c.run_after
LIMIT $1;

-- name: lock_leased_job
-- Locks the job row for a write fenced by the lease; no row means the lease was lost.
-- $1 job id, $2 lease token
SELECT id, imported_count, cancel_requested_at
FROM import_jobs
WHERE id = $1 AND lease_token = $2 AND status = 'running'
FOR UPDATE;

-- name: record_page
-- Stores a page's counts and checkpoint and renews the lease, in the page's transaction.
-- $1 job id, $2 lease token, $3 posts newly stored, $4 posts fetched, $5 checkpoint,
-- $6 lease length in seconds
UPDATE import_jobs
SET imported_count = coalesce(imported_count, 0) + $3,
    fetched_count = fetched_count + $4,
    checkpoint = $5,
    retry_count = 0,
    wait_count = 0,
    lease_expires_at = clock_timestamp() + make_interval(secs => $6),
    updated_at = clock_timestamp()
WHERE id = $1 AND lease_token = $2
RETURNING cancel_requested_at;

-- name: renew_lease
-- $1 job id, $2 lease token, $3 lease length in seconds
UPDATE import_jobs
SET lease_expires_at = clock_timestamp() + make_interval(secs => $3)
WHERE id = $1 AND lease_token = $2 AND status = 'running'
RETURNING cancel_requested_at;

-- name: release_import_job
-- Gives the job back to the queue until $3 seconds from now (a rate-limit wait or a
-- retry); the status stays running.
-- $1 job id, $2 lease token, $3 delay in seconds, $4 add to retry_count (0 or 1),
-- $5 add to wait_count (0 or 1)
UPDATE import_jobs
SET lease_token = NULL,
    lease_expires_at = NULL,
    run_after = clock_timestamp() + make_interval(secs => $3),
    retry_count = retry_count + $4,
    wait_count = wait_count + $5,
    updated_at = clock_timestamp()
WHERE id = $1 AND lease_token = $2
RETURNING *;

-- name: get_wait_count
-- $1 job id
SELECT wait_count FROM import_jobs WHERE id = $1;

-- name: finish_import_job
-- $1 job id, $2 lease token (NULL to finish a job no worker holds), $3 status,
-- $4 error_message
UPDATE import_jobs
SET status = $3,
    error_message = $4,
    finished_at = clock_timestamp(),
    lease_token = NULL,
    lease_expires_at = NULL,
    updated_at = clock_timestamp()
WHERE id = $1
  AND status IN ('pending', 'running')
  AND lease_token IS NOT DISTINCT FROM $2
RETURNING *;

-- name: request_cancel
-- Marks a leased running job for cancellation at the worker's next page boundary.
-- $1 job id
UPDATE import_jobs
SET cancel_requested_at = coalesce(cancel_requested_at, clock_timestamp()),
    updated_at = clock_timestamp()
WHERE id = $1 AND status = 'running'
RETURNING *;

-- name: lock_import_job
-- $1 job id
SELECT * FROM import_jobs WHERE id = $1 FOR UPDATE;

-- name: next_job_of_account
-- The oldest unfinished job of an account, woken when the job before it ends.
-- $1 social_account_id
SELECT id
FROM import_jobs
WHERE social_account_id = $1 AND status IN ('pending', 'running')
ORDER BY created_at, id
LIMIT 1;

-- name: insert_posts
-- Stores a page of posts; a post the account already has is left as it is.
-- $1 organization_id, $2 livemode, $3 social_account_id, $4 platform, $5 import id,
-- $6 jsonb array of posts with keys id, platform_post_id, platform_post_url, content,
-- media, published_at, metrics, raw
INSERT INTO posts (
    id, organization_id, livemode, social_account_id, platform, platform_post_id,
    platform_post_url, content, media, published_at, source, import_id, metrics, raw
)
SELECT p.id, $1, $2, $3, $4, p.platform_post_id, p.platform_post_url, p.content,
       p.media, p.published_at, 'imported', $5, p.metrics, p.raw
FROM jsonb_to_recordset($6::jsonb) AS p (
    id uuid,
    platform_post_id text,
    platform_post_url text,
    content text,
    media jsonb,
    published_at timestamptz,
    metrics jsonb,
    raw jsonb
)
ON CONFLICT (social_account_id, platform_post_id) DO NOTHING
RETURNING 1;
