-- The request ledger: exactly one row per request (also for errors and client disconnects).
-- Tables are created in the first schema of the connection's search_path.
CREATE TABLE requests (
    id                  TEXT    NOT NULL PRIMARY KEY,
    ts_ms               BIGINT  NOT NULL,
    key_id              TEXT    NOT NULL,
    workspace           TEXT,
    route               TEXT    NOT NULL,
    inbound_api         TEXT    NOT NULL,
    requested_model     TEXT    NOT NULL,
    served_model        TEXT,
    provider            TEXT,
    stream              BOOLEAN NOT NULL,
    status_code         INTEGER NOT NULL,
    outcome             TEXT    NOT NULL,
    error_kind          TEXT,
    input_tokens        BIGINT  NOT NULL,
    output_tokens       BIGINT  NOT NULL,
    cached_tokens       BIGINT  NOT NULL,
    cache_write_tokens  BIGINT  NOT NULL,
    reasoning_tokens    BIGINT  NOT NULL,
    usage_source        TEXT    NOT NULL,
    cost_micros         BIGINT,
    latency_total_us    BIGINT  NOT NULL,
    latency_upstream_us BIGINT,
    overhead_us         BIGINT  NOT NULL,
    ttft_us             BIGINT,
    metadata            TEXT,
    end_user            TEXT,
    trace_id            TEXT    NOT NULL,
    attempts            INTEGER NOT NULL
);

CREATE INDEX requests_ts_ms ON requests (ts_ms);
CREATE INDEX requests_key_id_ts_ms ON requests (key_id, ts_ms);
CREATE INDEX requests_served_model_ts_ms ON requests (served_model, ts_ms);
CREATE INDEX requests_trace_id ON requests (trace_id);
