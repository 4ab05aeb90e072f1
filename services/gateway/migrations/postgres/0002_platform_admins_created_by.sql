-- Who made each platform admin (the API manages them now; the first one is
-- made by `strata-bootstrap`).
ALTER TABLE platform_admins ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
