-- Traffic's records: routes, and its own copy of the apps and endpoints
-- compute announced (traffic never reads compute's database).
CREATE TABLE routes (
    id          TEXT   PRIMARY KEY,
    team        TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    host        TEXT   NOT NULL,
    path_prefix TEXT   NOT NULL,
    -- JSON array of {app, release, weight}.
    backends    TEXT   NOT NULL,
    max_body_bytes BIGINT NOT NULL,
    timeout_ms  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (team, name)
);
CREATE INDEX routes_host ON routes (host);

CREATE TABLE apps (
    team       TEXT   NOT NULL,
    app        TEXT   NOT NULL,
    first_seen BIGINT NOT NULL,
    PRIMARY KEY (team, app)
);

CREATE TABLE endpoints (
    instance_id  TEXT    PRIMARY KEY,
    team         TEXT    NOT NULL,
    app          TEXT    NOT NULL,
    release      BIGINT  NOT NULL,
    host         TEXT    NOT NULL,
    port         BIGINT  NOT NULL,
    -- 1 while an observe check of this instance fails.
    check_failed BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX endpoints_app ON endpoints (team, app);
