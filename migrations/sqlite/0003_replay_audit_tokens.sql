-- Operator tokens (hashed), the append-only hash-chained audit log, persisted replay jobs
-- with their items, and operator resolutions of events.
CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT,
    details   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL UNIQUE
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE replays (
    id              TEXT PRIMARY KEY,
    state           TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    request         TEXT NOT NULL,
    destination     TEXT,
    rate            REAL NOT NULL,
    current_rate    REAL NOT NULL,
    eligible        INTEGER NOT NULL,
    sent            INTEGER NOT NULL DEFAULT 0,
    succeeded       INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    skipped_receipt INTEGER NOT NULL DEFAULT 0,
    skipped_other   INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     INTEGER,
    finished_at     INTEGER,
    error           TEXT
);
CREATE INDEX replays_running ON replays (state, lease_until);

CREATE TABLE replay_items (
    replay_id        TEXT NOT NULL REFERENCES replays (id),
    seq              INTEGER NOT NULL,
    event_id         TEXT NOT NULL,
    receipts_at_plan INTEGER NOT NULL,
    state            TEXT NOT NULL,
    status_code      INTEGER,
    latency_ms       INTEGER,
    error            TEXT,
    at               INTEGER,
    PRIMARY KEY (replay_id, seq)
);
CREATE INDEX replay_items_state ON replay_items (replay_id, state, seq);

ALTER TABLE events ADD COLUMN resolved_by TEXT;
ALTER TABLE events ADD COLUMN resolved_note TEXT;
ALTER TABLE events ADD COLUMN resolved_at INTEGER;

-- The audit log is append-only, also for anyone with a SQL shell.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
