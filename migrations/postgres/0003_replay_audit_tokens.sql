-- Operator tokens (hashed), the append-only hash-chained audit log, persisted replay jobs
-- with their items, and operator resolutions of events.
CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE audit_log (
    seq       BIGSERIAL PRIMARY KEY,
    at        BIGINT NOT NULL,
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
    created_at      BIGINT NOT NULL,
    request         TEXT NOT NULL,
    destination     TEXT,
    rate            DOUBLE PRECISION NOT NULL,
    current_rate    DOUBLE PRECISION NOT NULL,
    eligible        BIGINT NOT NULL,
    sent            BIGINT NOT NULL DEFAULT 0,
    succeeded       BIGINT NOT NULL DEFAULT 0,
    failed          BIGINT NOT NULL DEFAULT 0,
    skipped_receipt BIGINT NOT NULL DEFAULT 0,
    skipped_other   BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     BIGINT,
    finished_at     BIGINT,
    error           TEXT
);
CREATE INDEX replays_running ON replays (state, lease_until);

CREATE TABLE replay_items (
    replay_id        TEXT NOT NULL REFERENCES replays (id),
    seq              BIGINT NOT NULL,
    event_id         TEXT NOT NULL,
    receipts_at_plan BIGINT NOT NULL,
    state            TEXT NOT NULL,
    status_code      BIGINT,
    latency_ms       BIGINT,
    error            TEXT,
    at               BIGINT,
    PRIMARY KEY (replay_id, seq)
);
CREATE INDEX replay_items_state ON replay_items (replay_id, state, seq);

ALTER TABLE events ADD COLUMN resolved_by TEXT;
ALTER TABLE events ADD COLUMN resolved_note TEXT;
ALTER TABLE events ADD COLUMN resolved_at BIGINT;

-- The audit log is append-only, also for anyone with a SQL shell.
CREATE FUNCTION hookwarden_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION hookwarden_audit_append_only();
