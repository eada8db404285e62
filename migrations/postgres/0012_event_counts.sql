-- The overview's counts kept as events are written (issue 16): how many events of a source
-- were received in each minute, by outcome. The gap view reads these instead of grouping
-- every event of its window (about 2 s at a million events). Triggers on `events` keep them,
-- in the transaction of whatever statement wrote the event (ingest, receipts, resolutions,
-- the probe, retention's purge, import), so no writer can forget them. They fire once per
-- statement, over its transition tables: a group commit of a hundred events is one grouped
-- upsert, not a hundred. Rows are upserted in key order, so two statements lock the rows they
-- share in the same order.
--
-- A count is split over a few rows (`shard`): concurrent transactions adding to one row wait
-- for each other's commit, and every ingest transaction adds to the current minute's. Each
-- event keeps the shard it was counted in (`events.count_shard`, taken from the connection
-- that inserted it, so the gateway's concurrent ingest transactions use different rows), and
-- whatever later moves or removes it takes it from that same row: a row at zero has no event
-- left, and a purge deletes it.
CREATE TABLE event_counts (
    source  TEXT NOT NULL,
    minute  BIGINT NOT NULL,  -- received_at floored to the minute, unix ms
    outcome TEXT NOT NULL,
    shard   SMALLINT NOT NULL,
    n       BIGINT NOT NULL,
    PRIMARY KEY (source, minute, outcome, shard)
);

-- Constant for the rows there are (no rewrite of the table), the connection's for new ones.
ALTER TABLE events ADD COLUMN count_shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE events ALTER COLUMN count_shard SET DEFAULT (pg_backend_pid() % 8);

INSERT INTO event_counts (source, minute, outcome, shard, n)
SELECT source, (received_at / 60000) * 60000, outcome, 0, COUNT(*) FROM events GROUP BY 1, 2, 3;

CREATE FUNCTION event_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_counts AS c (source, minute, outcome, shard, n)
    SELECT source, (received_at / 60000) * 60000, outcome, count_shard, COUNT(*) FROM new_events
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (source, minute, outcome, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

-- Fires on every UPDATE of `events` (a trigger with transition tables cannot name columns),
-- and counts only the rows whose source, received_at, outcome or shard changed.
CREATE FUNCTION event_counts_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_counts AS c (source, minute, outcome, shard, n)
    SELECT source, minute, outcome, shard, SUM(d) FROM (
        SELECT o.source, (o.received_at / 60000) * 60000 AS minute, o.outcome, o.count_shard AS shard, -1 AS d
        FROM old_events o JOIN new_events e ON e.id = o.id
        WHERE (o.source, o.received_at, o.outcome, o.count_shard) IS DISTINCT FROM (e.source, e.received_at, e.outcome, e.count_shard)
        UNION ALL
        SELECT e.source, (e.received_at / 60000) * 60000, e.outcome, e.count_shard, 1
        FROM old_events o JOIN new_events e ON e.id = o.id
        WHERE (o.source, o.received_at, o.outcome, o.count_shard) IS DISTINCT FROM (e.source, e.received_at, e.outcome, e.count_shard)
    ) moved
    GROUP BY 1, 2, 3, 4 HAVING SUM(d) <> 0 ORDER BY 1, 2, 3, 4
    ON CONFLICT (source, minute, outcome, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE FUNCTION event_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_counts AS c (source, minute, outcome, shard, n)
    SELECT source, (received_at / 60000) * 60000, outcome, count_shard, -COUNT(*) FROM old_events
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (source, minute, outcome, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    DELETE FROM event_counts c
    USING (SELECT DISTINCT source, (received_at / 60000) * 60000 AS minute FROM old_events) gone
    WHERE c.source = gone.source AND c.minute = gone.minute AND c.n = 0;
    RETURN NULL;
END $$;

CREATE TRIGGER event_counts_insert AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION event_counts_inserted();
CREATE TRIGGER event_counts_update AFTER UPDATE ON events
    REFERENCING OLD TABLE AS old_events NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION event_counts_updated();
CREATE TRIGGER event_counts_delete AFTER DELETE ON events
    REFERENCING OLD TABLE AS old_events FOR EACH STATEMENT EXECUTE FUNCTION event_counts_deleted();

-- What the overview counts live, beside the counts: the unsettled events of a window, for
-- the overdue ones (delivered before now − SLA, still `unknown`: time decides, so no count
-- can hold it), the gap's first and last, and the failed ones by error code. Each covers
-- its query and holds only the events in that outcome.
CREATE INDEX events_unknown ON events (source, received_at, delivered_at) WHERE outcome = 'unknown';
CREATE INDEX events_failed ON events (source, received_at, error_code) WHERE outcome = 'failed';
