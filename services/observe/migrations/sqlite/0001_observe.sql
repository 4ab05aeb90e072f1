-- Observe's records: apps and instances learned from compute, checks and
-- their targets' states, results and per-minute rollups, alerting, and the
-- platform event log.
CREATE TABLE apps (
    team       TEXT   NOT NULL,
    app        TEXT   NOT NULL,
    app_id     TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (team, app)
);

CREATE TABLE instances (
    instance_id TEXT   PRIMARY KEY,
    team        TEXT   NOT NULL,
    app_id      TEXT   NOT NULL,
    app         TEXT   NOT NULL,
    host        TEXT   NOT NULL,
    port        BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX instances_app ON instances (team, app);

CREATE TABLE checks (
    id            TEXT   PRIMARY KEY,
    team          TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    -- The app whose instances are checked; empty for a URL check of no app.
    app           TEXT   NOT NULL,
    url           TEXT   NOT NULL,
    kind          TEXT   NOT NULL,
    -- JSON: method, path, status range, body substring, gRPC service.
    spec          TEXT   NOT NULL,
    interval_ms   BIGINT NOT NULL,
    timeout_ms    BIGINT NOT NULL,
    fail_after    BIGINT NOT NULL,
    recover_after BIGINT NOT NULL,
    is_default    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (team, name)
);
CREATE INDEX checks_app ON checks (team, app);

-- The confirmed state of each target ('' = the URL), so a restart keeps it.
CREATE TABLE target_states (
    check_id TEXT   NOT NULL,
    target   TEXT   NOT NULL,
    state    TEXT   NOT NULL,
    since    BIGINT NOT NULL,
    PRIMARY KEY (check_id, target)
);

-- Raw results, kept for `results_retention_secs`.
CREATE TABLE results (
    check_id   TEXT   NOT NULL,
    target     TEXT   NOT NULL,
    at         BIGINT NOT NULL,
    ok         BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    error      TEXT   NOT NULL
);
CREATE INDEX results_check ON results (check_id, at);
CREATE INDEX results_at ON results (at);

-- Per check and minute: runs, passes and a latency histogram (b0..b11 are
-- the buckets of `model::LATENCY_BUCKETS_MS`), kept 25 hours.
CREATE TABLE rollups (
    check_id TEXT   NOT NULL,
    minute   BIGINT NOT NULL,
    runs     BIGINT NOT NULL,
    ok       BIGINT NOT NULL,
    b0 BIGINT NOT NULL, b1 BIGINT NOT NULL, b2 BIGINT NOT NULL, b3 BIGINT NOT NULL,
    b4 BIGINT NOT NULL, b5 BIGINT NOT NULL, b6 BIGINT NOT NULL, b7 BIGINT NOT NULL,
    b8 BIGINT NOT NULL, b9 BIGINT NOT NULL, b10 BIGINT NOT NULL, b11 BIGINT NOT NULL,
    PRIMARY KEY (check_id, minute)
);
CREATE INDEX rollups_minute ON rollups (minute);

CREATE TABLE channels (
    id         TEXT   PRIMARY KEY,
    team       TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    kind       TEXT   NOT NULL,
    target     TEXT   NOT NULL,
    secret     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (team, name)
);

CREATE TABLE rules (
    id             TEXT   PRIMARY KEY,
    team           TEXT   NOT NULL,
    name           TEXT   NOT NULL,
    condition      TEXT   NOT NULL,
    app            TEXT   NOT NULL,
    check_name     TEXT   NOT NULL,
    -- JSON list of channel names.
    channels       TEXT   NOT NULL,
    crash_restarts BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    UNIQUE (team, name)
);

CREATE TABLE alerts (
    id          TEXT   PRIMARY KEY,
    team        TEXT   NOT NULL,
    rule_id     TEXT   NOT NULL,
    rule        TEXT   NOT NULL,
    condition   TEXT   NOT NULL,
    app         TEXT   NOT NULL,
    check_name  TEXT   NOT NULL,
    -- What the alert is about: the check id, or the app for compute alerts.
    alert_key   TEXT   NOT NULL,
    summary     TEXT   NOT NULL,
    is_open     BIGINT NOT NULL,
    fired_at    BIGINT NOT NULL,
    resolved_at BIGINT
);
CREATE INDEX alerts_open ON alerts (rule_id, alert_key, is_open);

-- Notifications to send, retried with backoff.
CREATE TABLE deliveries (
    id         TEXT   PRIMARY KEY,
    team       TEXT   NOT NULL,
    channel_id TEXT   NOT NULL,
    payload    TEXT   NOT NULL,
    attempts   BIGINT NOT NULL,
    next_at    BIGINT NOT NULL,
    -- pending → delivered | failed
    state      TEXT   NOT NULL,
    last_error TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX deliveries_pending ON deliveries (state, next_at);

-- Every event of the stream, in stream order.
CREATE TABLE event_log (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT   NOT NULL UNIQUE,
    type     TEXT   NOT NULL,
    source   TEXT   NOT NULL,
    subject  TEXT   NOT NULL,
    team     TEXT   NOT NULL,
    app      TEXT   NOT NULL,
    time_ms  BIGINT NOT NULL,
    data     TEXT   NOT NULL
);
CREATE INDEX event_log_team ON event_log (team, seq);
CREATE INDEX event_log_time ON event_log (time_ms);
