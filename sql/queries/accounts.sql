-- Organizations, API keys and social accounts.

-- name: insert_organization
-- $1 id, $2 name
INSERT INTO organizations (id, name) VALUES ($1, $2) RETURNING *;

-- name: get_organization
-- $1 id
SELECT * FROM organizations WHERE id = $1;

-- name: insert_api_key
-- $1 id, $2 organization_id, $3 key_hash, $4 key_prefix, $5 livemode, $6 scopes
INSERT INTO api_keys (id, organization_id, key_hash, key_prefix, livemode, scopes)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *;

-- name: get_api_key_by_hash
-- $1 key_hash
SELECT * FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL;

-- name: insert_social_account
-- $1 id, $2 organization_id, $3 livemode, $4 platform, $5 tenant_id, $6 username,
-- $7 display_name, $8 network_unique_id, $9 api_base_url, $10 credentials (encrypted),
-- $11 token_expires_at
INSERT INTO social_accounts (
    id, organization_id, livemode, platform, tenant_id, username, display_name,
    network_unique_id, api_base_url, credentials, token_expires_at
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING *;

-- name: get_social_account
-- $1 organization_id, $2 livemode, $3 id
SELECT * FROM social_accounts WHERE organization_id = $1 AND livemode = $2 AND id = $3;

-- name: get_social_account_by_id
-- $1 id
SELECT * FROM social_accounts WHERE id = $1;

-- name: list_social_accounts
-- $1 organization_id, $2 livemode, $3 platform or NULL, $4 tenant_id or NULL,
-- $5 created_at and $6 id of the previous page's last account (NULL for the first),
-- $7 page size plus one
SELECT *
FROM social_accounts
WHERE organization_id = $1 AND livemode = $2
  AND ($3::text IS NULL OR platform = $3)
  AND ($4::text IS NULL OR tenant_id = $4)
  AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $7;

-- name: disconnect_social_account
-- $1 organization_id, $2 livemode, $3 id
UPDATE social_accounts
SET status = 'disconnected', updated_at = now()
WHERE organization_id = $1 AND livemode = $2 AND id = $3
RETURNING *;

-- name: update_account_credentials
-- $1 id, $2 credentials (encrypted), $3 token_expires_at
UPDATE social_accounts
SET credentials = $2,
    token_expires_at = $3,
    status = CASE WHEN status = 'token_expired' THEN 'active' ELSE status END,
    updated_at = now()
WHERE id = $1;

-- name: mark_account_token_expired
-- $1 id
UPDATE social_accounts
SET status = 'token_expired', updated_at = now()
WHERE id = $1 AND status = 'active';

-- name: mark_account_synced
-- $1 id
UPDATE social_accounts SET last_synced_at = now(), updated_at = now() WHERE id = $1;
