-- When a call was last made with a token (Unix ms). Written off the request
-- path, coalesced: at most once per token per flush interval, and at shutdown.
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;
