-- Organizations, API keys, social accounts, import jobs and posts.

CREATE TABLE organizations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id               uuid PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- SHA-256 of the whole key; the key itself is shown once and never stored.
    key_hash         bytea NOT NULL UNIQUE,
    -- The first characters of the key, so an operator can tell keys apart.
    key_prefix       text NOT NULL,
    livemode         boolean NOT NULL,
    scopes           text[] NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz
);

CREATE TABLE social_accounts (
    id                 uuid PRIMARY KEY,
    organization_id    uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    livemode           boolean NOT NULL,
    platform           text NOT NULL,
    tenant_id          text,
    username           text NOT NULL,
    display_name       text,
    network_unique_id  text NOT NULL,
    status             text NOT NULL DEFAULT 'active'
                       CHECK (status IN ('active', 'token_expired', 'disconnected')),
    api_base_url       text,
    -- Fernet token of the JSON credentials; see postfuze_imports/crypto.py.
    credentials        bytea NOT NULL,
    token_expires_at   timestamptz,
    last_synced_at     timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- One connected (not disconnected) account per network identity in each mode.
CREATE UNIQUE INDEX social_accounts_identity
    ON social_accounts (organization_id, livemode, platform, network_unique_id)
    WHERE status <> 'disconnected';
CREATE INDEX social_accounts_listing
    ON social_accounts (organization_id, livemode, created_at DESC, id DESC);

CREATE TABLE import_jobs (
    id                   text PRIMARY KEY,
    organization_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    livemode             boolean NOT NULL,
    social_account_id    uuid NOT NULL REFERENCES social_accounts (id) ON DELETE CASCADE,
    tenant_id            text,
    status               text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    -- The window as the client sent it (echoed), and as inclusive UTC bounds.
    from_date            text,
    to_date              text,
    window_start         timestamptz,
    window_end           timestamptz,
    post_limit           integer NOT NULL CHECK (post_limit BETWEEN 1 AND 1000),
    imported_count       integer,
    -- Posts fetched inside the window so far, stored or already present; the limit
    -- applies to this number.
    fetched_count        integer NOT NULL DEFAULT 0,
    error_message        text,
    started_at           timestamptz,
    finished_at          timestamptz,
    created_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Scheduling: a job is due when run_after has passed and no live lease holds it.
    run_after            timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_token          uuid,
    lease_expires_at     timestamptz,
    -- Claims taken over from a worker whose lease expired without a release.
    crash_count          integer NOT NULL DEFAULT 0,
    -- Transient network failures in a row; reset by every stored page.
    retry_count          integer NOT NULL DEFAULT 0,
    checkpoint           jsonb,
    cancel_requested_at  timestamptz,
    CHECK (window_start IS NULL OR window_end IS NULL OR window_start <= window_end)
);

CREATE INDEX import_jobs_due
    ON import_jobs (run_after)
    WHERE status IN ('pending', 'running');
CREATE INDEX import_jobs_account_queue
    ON import_jobs (social_account_id, created_at, id)
    WHERE status IN ('pending', 'running');
CREATE INDEX import_jobs_account_listing
    ON import_jobs (social_account_id, created_at DESC, id DESC);

CREATE TABLE posts (
    id                 uuid PRIMARY KEY,
    organization_id    uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    livemode           boolean NOT NULL,
    social_account_id  uuid NOT NULL REFERENCES social_accounts (id) ON DELETE CASCADE,
    platform           text NOT NULL,
    platform_post_id   text NOT NULL,
    platform_post_url  text,
    content            text NOT NULL DEFAULT '',
    media              jsonb NOT NULL DEFAULT '[]',
    published_at       timestamptz NOT NULL,
    source             text NOT NULL CHECK (source IN ('imported', 'published')),
    import_id          text REFERENCES import_jobs (id) ON DELETE SET NULL,
    metrics            jsonb NOT NULL DEFAULT '{}',
    -- The network's payload as received; kept for reprocessing, not served by the API.
    raw                jsonb NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (social_account_id, platform_post_id)
);

CREATE INDEX posts_listing
    ON posts (organization_id, livemode, published_at DESC, id DESC);
CREATE INDEX posts_account_listing
    ON posts (social_account_id, published_at DESC, id DESC);
