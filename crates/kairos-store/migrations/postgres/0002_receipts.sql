-- Routing (model="auto"): the classified task and the decision's receipt, on the request's row.
ALTER TABLE requests ADD COLUMN IF NOT EXISTS task TEXT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS receipt TEXT;
CREATE INDEX IF NOT EXISTS requests_task_ts ON requests (task, ts_ms) WHERE task IS NOT NULL;
