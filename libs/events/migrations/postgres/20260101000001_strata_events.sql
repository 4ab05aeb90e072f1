-- The transactional outbox and the consumers' inbox, owned by strata-events.
CREATE TABLE strata_outbox (
    seq        BIGSERIAL PRIMARY KEY,
    event_id   TEXT    NOT NULL UNIQUE,
    subject    TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    sent_at    BIGINT
);
CREATE INDEX strata_outbox_pending ON strata_outbox (seq) WHERE sent_at IS NULL;

CREATE TABLE strata_inbox (
    consumer   TEXT   NOT NULL,
    event_id   TEXT   NOT NULL,
    handled_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
