-- The order events were received, from the database rather than from a host's clock: `seq`
-- grows with each stored event. SQLite has one writer, so the gateway numbers events in the
-- order it commits them; the events stored before are numbered in the order they were
-- inserted (their rowids, which the one writer also gave out in commit order).
ALTER TABLE events ADD COLUMN seq INTEGER;
UPDATE events SET seq = rowid;
