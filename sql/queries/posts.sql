-- Posts, imported and published.

-- name: get_post
-- $1 organization_id, $2 livemode, $3 id
SELECT * FROM posts WHERE organization_id = $1 AND livemode = $2 AND id = $3;

-- name: list_posts
-- $1 organization_id, $2 livemode, $3 social_account_id or NULL, $4 source or NULL,
-- $5 published_at lower bound or NULL, $6 published_at upper bound or NULL (inclusive),
-- $7 published_at and $8 id of the previous page's last post (NULL for the first),
-- $9 page size plus one
SELECT *
FROM posts
WHERE organization_id = $1 AND livemode = $2
  AND ($3::uuid IS NULL OR social_account_id = $3)
  AND ($4::text IS NULL OR source = $4)
  AND ($5::timestamptz IS NULL OR published_at >= $5)
  AND ($6::timestamptz IS NULL OR published_at <= $6)
  AND ($7::timestamptz IS NULL OR (published_at, id) < ($7, $8::uuid))
ORDER BY published_at DESC, id DESC
LIMIT $9;
