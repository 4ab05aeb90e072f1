-- The data service's records: servers, databases, bindings, backups.
CREATE TABLE servers (
    id             TEXT   PRIMARY KEY,
    name           TEXT   NOT NULL UNIQUE,
    -- The admin URL, sealed (it holds a password).
    admin_url_enc  TEXT   NOT NULL,
    address        TEXT   NOT NULL,
    capacity       BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE databases (
    id            TEXT   PRIMARY KEY,
    team          TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    server_id     TEXT   NOT NULL REFERENCES servers (id),
    -- Generated identifiers on the server (never the user's name).
    db_ident      TEXT   NOT NULL,
    role_ident    TEXT   NOT NULL,
    password_enc  TEXT   NOT NULL,
    -- A rotation in progress: the new password, until the server has it.
    pending_password_enc TEXT,
    plan          TEXT   NOT NULL,
    -- provisioning → ready → deleting
    state         TEXT   NOT NULL,
    request_id    TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (team, name)
);
CREATE INDEX databases_request ON databases (team, request_id);

CREATE TABLE bindings (
    id           TEXT   PRIMARY KEY,
    database_id  TEXT   NOT NULL REFERENCES databases (id),
    team         TEXT   NOT NULL,
    app          TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (database_id, app)
);

CREATE TABLE backups (
    id           TEXT   PRIMARY KEY,
    database_id  TEXT   NOT NULL,
    team         TEXT   NOT NULL,
    database     TEXT   NOT NULL,
    path         TEXT   NOT NULL,
    size_bytes   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
