-- The gateway's records: teams, their members, platform admins and API tokens.
CREATE TABLE teams (
    id          TEXT   PRIMARY KEY,
    -- The name identity tokens carry; every service scopes by it.
    name        TEXT   NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE members (
    team        TEXT   NOT NULL REFERENCES teams (name),
    subject     TEXT   NOT NULL,
    -- owner, member or viewer
    role        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (team, subject)
);
CREATE INDEX members_subject ON members (subject);

CREATE TABLE platform_admins (
    subject     TEXT   PRIMARY KEY,
    created_at  BIGINT NOT NULL
);

CREATE TABLE tokens (
    id          TEXT   PRIMARY KEY,
    team        TEXT   NOT NULL REFERENCES teams (name),
    subject     TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    -- Hex SHA-256 of the secret; the secret itself is never stored.
    secret_hash TEXT   NOT NULL UNIQUE,
    hint        TEXT   NOT NULL,
    -- Space-separated: read, write, admin.
    scopes      TEXT   NOT NULL,
    created_by  TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX tokens_team_subject ON tokens (team, subject);
