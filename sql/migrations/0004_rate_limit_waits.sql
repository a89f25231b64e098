-- Rate-limit waits in a row without a stored page, so a network that keeps answering
-- 429 fails the job instead of holding the account's queue forever.
ALTER TABLE import_jobs ADD COLUMN wait_count integer NOT NULL DEFAULT 0;
