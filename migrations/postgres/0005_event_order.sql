-- The order events were received, from the database rather than from the gateways' clocks:
-- `seq` is drawn from a sequence as each event's row is inserted, inside the transaction
-- that commits it, whichever gateway took the event. The events stored before are numbered
-- by the time their gateway received them (all that was known of their order).
ALTER TABLE events ADD COLUMN seq BIGINT;
CREATE SEQUENCE events_seq OWNED BY events.seq;
UPDATE events SET seq = numbered.n
FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY received_at, id) AS n FROM events) numbered
WHERE events.id = numbered.id;
SELECT setval('events_seq', COALESCE((SELECT MAX(seq) FROM events), 0) + 1, false);
ALTER TABLE events ALTER COLUMN seq SET DEFAULT nextval('events_seq');
ALTER TABLE events ALTER COLUMN seq SET NOT NULL;
