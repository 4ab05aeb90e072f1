-- A canary: a second release of the app that runs beside the current one,
-- with its own instance count, until a deploy or rollback ends it.
ALTER TABLE apps ADD COLUMN canary_release_id TEXT;
ALTER TABLE apps ADD COLUMN canary_instances BIGINT NOT NULL DEFAULT 0;
