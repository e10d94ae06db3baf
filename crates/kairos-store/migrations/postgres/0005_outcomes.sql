-- The signal loop: the routed prompt's embedding on the request's row, and outcomes (explicit
-- feedback and implicit signals), one per request, metric and model.
ALTER TABLE requests ADD COLUMN IF NOT EXISTS embedding TEXT;

CREATE TABLE outcomes (
    request_id  TEXT             NOT NULL,
    metric      TEXT             NOT NULL,
    model       TEXT             NOT NULL,
    workspace   TEXT,
    key_id      TEXT             NOT NULL,
    task        TEXT,
    embedding   TEXT,
    -- In [0, 1] (checked by the writers, not here: a CHECK failure would block a ledger batch).
    score       DOUBLE PRECISION NOT NULL,
    weight      DOUBLE PRECISION NOT NULL,
    -- 'explicit' | 'implicit'.
    source      TEXT             NOT NULL,
    -- The caller's comment or the implicit signal's reasons.
    detail      TEXT,
    created_ms  BIGINT           NOT NULL,
    updated_ms  BIGINT           NOT NULL,
    PRIMARY KEY (request_id, metric, model)
);
CREATE INDEX outcomes_updated_ms ON outcomes (updated_ms);
