-- The durable event log and its delivery schedule (PostgreSQL). Times are unix milliseconds.
CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    source          TEXT NOT NULL,
    dedup_key       TEXT NOT NULL,
    event_type      TEXT,
    received_at     BIGINT NOT NULL,
    headers         TEXT NOT NULL,
    body            BYTEA NOT NULL,
    delivery_state  TEXT NOT NULL DEFAULT 'pending',
    outcome         TEXT NOT NULL DEFAULT 'unknown',
    error_code      TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    ladder_attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_owner     TEXT,
    lease_until     BIGINT,
    delivered_at    BIGINT,
    UNIQUE (source, dedup_key)
);
CREATE INDEX events_due ON events (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX events_received ON events (received_at);
CREATE INDEX events_source_received ON events (source, received_at);

CREATE TABLE attempts (
    id               BIGSERIAL PRIMARY KEY,
    event_id         TEXT NOT NULL REFERENCES events (id),
    number           BIGINT NOT NULL,
    kind             TEXT NOT NULL,
    replay_id        TEXT,
    gateway          TEXT NOT NULL,
    started_at       BIGINT NOT NULL,
    latency_ms       BIGINT NOT NULL,
    status_code      BIGINT,
    error            TEXT,
    response_excerpt TEXT
);
CREATE INDEX attempts_event ON attempts (event_id, id);
