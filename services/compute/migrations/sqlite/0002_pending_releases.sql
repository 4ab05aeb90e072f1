-- Apps whose config changed outside an API call (a database binding): the
-- config is already saved; a new release with it is still to be rolled out.
CREATE TABLE pending_releases (
    app_id      TEXT   PRIMARY KEY,
    reason      TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);
