-- The overview's counts kept as events are written (issue 16): how many events of a source
-- were received in each minute, by outcome. The gap view reads these instead of grouping
-- every event of its window (about 2 s at a million events). Triggers on `events` keep them,
-- in the transaction of whatever statement wrote the event (ingest, receipts, resolutions,
-- the probe, retention's purge, import), so no writer can forget them. A minute's rows at
-- zero stay until its events are purged (the purge removes them).
CREATE TABLE event_counts (
    source  TEXT NOT NULL,
    minute  INTEGER NOT NULL,  -- received_at floored to the minute, unix ms
    outcome TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (source, minute, outcome)
) WITHOUT ROWID;

INSERT INTO event_counts (source, minute, outcome, n)
SELECT source, (received_at / 60000) * 60000, outcome, COUNT(*) FROM events GROUP BY 1, 2, 3;

CREATE TRIGGER event_counts_insert AFTER INSERT ON events BEGIN
    INSERT INTO event_counts (source, minute, outcome, n)
    VALUES (NEW.source, (NEW.received_at / 60000) * 60000, NEW.outcome, 1)
    ON CONFLICT (source, minute, outcome) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER event_counts_update AFTER UPDATE OF source, received_at, outcome ON events
WHEN OLD.source IS NOT NEW.source OR OLD.received_at IS NOT NEW.received_at OR OLD.outcome IS NOT NEW.outcome
BEGIN
    UPDATE event_counts SET n = n - 1
    WHERE source = OLD.source AND minute = (OLD.received_at / 60000) * 60000 AND outcome = OLD.outcome;
    INSERT INTO event_counts (source, minute, outcome, n)
    VALUES (NEW.source, (NEW.received_at / 60000) * 60000, NEW.outcome, 1)
    ON CONFLICT (source, minute, outcome) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER event_counts_delete AFTER DELETE ON events BEGIN
    UPDATE event_counts SET n = n - 1
    WHERE source = OLD.source AND minute = (OLD.received_at / 60000) * 60000 AND outcome = OLD.outcome;
    DELETE FROM event_counts WHERE source = OLD.source AND minute = (OLD.received_at / 60000) * 60000 AND n = 0;
END;

-- What the overview counts live, beside the counts: the unsettled events of a window, for
-- the overdue ones (delivered before now − SLA, still `unknown`: time decides, so no count
-- can hold it), the gap's first and last, and the failed ones by error code. Each covers
-- its query and holds only the events in that outcome.
CREATE INDEX events_unknown ON events (source, received_at, delivered_at) WHERE outcome = 'unknown';
CREATE INDEX events_failed ON events (source, received_at, error_code) WHERE outcome = 'failed';
-- The events list filtered by outcome, newest first (`ORDER BY id DESC`): SQLite sorted
-- every event of the outcome in the window instead (284 ms for a day's `unknown` ones at a
-- million events). `received_at` in it checks the window without reading the row.
-- PostgreSQL walks the primary key backwards there and needs none.
CREATE INDEX events_outcome_id ON events (outcome, id, received_at);
