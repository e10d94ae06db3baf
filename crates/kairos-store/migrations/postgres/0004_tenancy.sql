-- Workspaces, virtual keys, provider credentials (encrypted) and the admin audit log.
-- Settings are JSON objects (validated by the gateway); secrets never appear in them.
CREATE TABLE workspaces (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    settings    TEXT    NOT NULL,
    created_ms  BIGINT  NOT NULL,
    updated_ms  BIGINT  NOT NULL,
    deleted_ms  BIGINT
);
CREATE INDEX workspaces_updated_ms ON workspaces (updated_ms);

CREATE TABLE virtual_keys (
    id            TEXT    NOT NULL PRIMARY KEY,
    workspace_id  TEXT    NOT NULL REFERENCES workspaces (id),
    name          TEXT    NOT NULL,
    -- Hex SHA-256 of the key: the key itself is shown once and never stored.
    key_hash      TEXT    NOT NULL UNIQUE,
    -- The first characters of the key, for recognising it in listings.
    key_prefix    TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    settings      TEXT    NOT NULL,
    expires_ms    BIGINT,
    revoked_ms    BIGINT,
    created_ms    BIGINT  NOT NULL,
    updated_ms    BIGINT  NOT NULL
);
CREATE INDEX virtual_keys_updated_ms ON virtual_keys (updated_ms);
CREATE INDEX virtual_keys_workspace ON virtual_keys (workspace_id);

CREATE TABLE provider_credentials (
    workspace_id  TEXT    NOT NULL REFERENCES workspaces (id),
    provider      TEXT    NOT NULL,
    -- kairos-vault blob (AES-256-GCM, bound to workspace and provider).
    sealed        TEXT    NOT NULL,
    created_ms    BIGINT  NOT NULL,
    updated_ms    BIGINT  NOT NULL,
    PRIMARY KEY (workspace_id, provider)
);

CREATE TABLE audit_log (
    seq           BIGSERIAL PRIMARY KEY,
    ts_ms         BIGINT  NOT NULL,
    actor         TEXT    NOT NULL,
    workspace_id  TEXT,
    action        TEXT    NOT NULL,
    object_type   TEXT    NOT NULL,
    object_id     TEXT    NOT NULL,
    before_json   TEXT,
    after_json    TEXT
);
CREATE INDEX audit_log_workspace ON audit_log (workspace_id, seq);

ALTER TABLE requests ADD COLUMN IF NOT EXISTS byok BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS markup_micros BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS requests_workspace_ts_ms ON requests (workspace, ts_ms);
