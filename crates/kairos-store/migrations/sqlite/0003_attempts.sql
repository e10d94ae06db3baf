-- Every upstream attempt of a request (retries, fallbacks, skipped targets), as JSON.
ALTER TABLE requests ADD COLUMN attempts_detail TEXT;
