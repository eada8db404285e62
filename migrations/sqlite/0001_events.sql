-- The durable event log and its delivery schedule (SQLite). Times are unix milliseconds.
CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    source          TEXT NOT NULL,
    dedup_key       TEXT NOT NULL,
    event_type      TEXT,
    received_at     INTEGER NOT NULL,
    headers         TEXT NOT NULL,
    body            BLOB NOT NULL,
    delivery_state  TEXT NOT NULL DEFAULT 'pending',
    outcome         TEXT NOT NULL DEFAULT 'unknown',
    error_code      TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    ladder_attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_owner     TEXT,
    lease_until     INTEGER,
    delivered_at    INTEGER,
    UNIQUE (source, dedup_key)
);
CREATE INDEX events_due ON events (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX events_received ON events (received_at);
CREATE INDEX events_source_received ON events (source, received_at);

CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL REFERENCES events (id),
    number           INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    replay_id        TEXT,
    gateway          TEXT NOT NULL,
    started_at       INTEGER NOT NULL,
    latency_ms       INTEGER NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    response_excerpt TEXT
);
CREATE INDEX attempts_event ON attempts (event_id, id);
