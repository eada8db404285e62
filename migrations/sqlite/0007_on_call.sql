-- The on-call path (issue 15): an operator's resolution is its own outcome, `resolved`,
-- never `confirmed` (it settles the event without claiming the application applied it).
-- Events resolved before this keep their history; those no `applied` receipt confirmed
-- since are counted as resolved from now on.
UPDATE events SET outcome = 'resolved'
 WHERE resolved_at IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM receipts r WHERE r.event_id = events.id AND r.status = 'applied');

-- A replay job may be paused (`state = 'paused'`): who paused it and when, for the API.
ALTER TABLE replays ADD COLUMN paused_at INTEGER;
ALTER TABLE replays ADD COLUMN paused_by TEXT;
