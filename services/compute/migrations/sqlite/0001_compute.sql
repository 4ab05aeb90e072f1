-- Compute's state: apps and their desired state, config, releases,
-- deployments, uploads, and the instances this node runs.
CREATE TABLE apps (
    id          TEXT   PRIMARY KEY,
    team        TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    -- The release that should run (NULL before the first deploy).
    release_id  TEXT,
    -- How many instances of it should run.
    instances   BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (team, name)
);

CREATE TABLE config_vars (
    app_id  TEXT   NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    key     TEXT   NOT NULL,
    value   TEXT   NOT NULL,
    secret  BIGINT NOT NULL,
    PRIMARY KEY (app_id, key)
);

CREATE TABLE releases (
    id          TEXT   PRIMARY KEY,
    app_id      TEXT   NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    version     BIGINT NOT NULL,
    source      TEXT   NOT NULL,
    buildpack   TEXT   NOT NULL,
    -- JSON array: the program and its arguments.
    argv        TEXT   NOT NULL,
    workdir     TEXT   NOT NULL,
    -- JSON object: the config snapshot (secrets included; never shown).
    env         TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (app_id, version)
);

CREATE TABLE deployments (
    id           TEXT   PRIMARY KEY,
    app_id       TEXT   NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    release_id   TEXT,
    version      BIGINT NOT NULL,
    status       TEXT   NOT NULL,
    reason       TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
CREATE INDEX deployments_app ON deployments (app_id, created_at);

CREATE TABLE uploads (
    id          TEXT   PRIMARY KEY,
    app_id      TEXT   NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    path        TEXT   NOT NULL,
    size_bytes  BIGINT NOT NULL,
    files       BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Instances this node runs; kept so a restarted compute can re-adopt them.
CREATE TABLE instances (
    id          TEXT   PRIMARY KEY,
    app_id      TEXT   NOT NULL,
    release_id  TEXT   NOT NULL,
    version     BIGINT NOT NULL,
    state       TEXT   NOT NULL,
    host        TEXT   NOT NULL,
    port        BIGINT NOT NULL,
    pid         BIGINT NOT NULL,
    -- The process start time (clock ticks after boot), to tell a reused pid.
    pid_start   BIGINT NOT NULL,
    restarts    BIGINT NOT NULL,
    started_at  BIGINT NOT NULL
);
