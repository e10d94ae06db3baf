-- The request ledger: exactly one row per request (also for errors and client disconnects).
-- STRICT: SQLite enforces the declared column types. Booleans are stored as 0/1 integers.
CREATE TABLE requests (
    id                  TEXT    NOT NULL PRIMARY KEY,
    ts_ms               INTEGER NOT NULL,
    key_id              TEXT    NOT NULL,
    workspace           TEXT,
    route               TEXT    NOT NULL,
    inbound_api         TEXT    NOT NULL,
    requested_model     TEXT    NOT NULL,
    served_model        TEXT,
    provider            TEXT,
    stream              INTEGER NOT NULL,
    status_code         INTEGER NOT NULL,
    outcome             TEXT    NOT NULL,
    error_kind          TEXT,
    input_tokens        INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    cached_tokens       INTEGER NOT NULL,
    cache_write_tokens  INTEGER NOT NULL,
    reasoning_tokens    INTEGER NOT NULL,
    usage_source        TEXT    NOT NULL,
    cost_micros         INTEGER,
    latency_total_us    INTEGER NOT NULL,
    latency_upstream_us INTEGER,
    overhead_us         INTEGER NOT NULL,
    ttft_us             INTEGER,
    metadata            TEXT,
    end_user            TEXT,
    trace_id            TEXT    NOT NULL,
    attempts            INTEGER NOT NULL
) STRICT;

CREATE INDEX requests_ts_ms ON requests (ts_ms);
CREATE INDEX requests_key_id_ts_ms ON requests (key_id, ts_ms);
CREATE INDEX requests_served_model_ts_ms ON requests (served_model, ts_ms);
CREATE INDEX requests_trace_id ON requests (trace_id);
