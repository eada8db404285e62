-- Headers and body move out of `events`: the delivery path updates an event row several
-- times (claim, result), and SQLite rewrites a whole row on update. Payloads never change.
CREATE TABLE event_payloads (
    event_id TEXT PRIMARY KEY,
    headers  TEXT NOT NULL,
    body     BLOB NOT NULL
);
INSERT INTO event_payloads (event_id, headers, body) SELECT id, headers, body FROM events;
ALTER TABLE events DROP COLUMN headers;
ALTER TABLE events DROP COLUMN body;
