-- The receipt ledger: append-only, one row per receipt id.
CREATE TABLE receipts (
    receipt_id       TEXT PRIMARY KEY,
    event_id         TEXT NOT NULL REFERENCES events (id),
    key_id           TEXT NOT NULL,
    status           TEXT NOT NULL,
    target_record_id TEXT,
    error_code       TEXT,
    detail           TEXT,
    signed_at        INTEGER NOT NULL,
    received_at      INTEGER NOT NULL,
    via              TEXT NOT NULL,
    body             TEXT NOT NULL,
    signature        TEXT NOT NULL
);
CREATE INDEX receipts_event ON receipts (event_id, received_at);

ALTER TABLE events ADD COLUMN receipts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN outcome_at INTEGER;
CREATE INDEX events_outcome_received ON events (outcome, received_at);
