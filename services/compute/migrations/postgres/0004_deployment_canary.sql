-- Whether a deployment started its release as a canary beside the current
-- one (0 or 1), so that its record and its failure say so.
ALTER TABLE deployments ADD COLUMN canary BIGINT NOT NULL DEFAULT 0;
