-- Retention (issue 17): when an event's payload was purged (its row stays; a replay skips it
-- and counts it as `skipped_purged`) and when an archive wrote it out (a purge never
-- deletes what an enabled archive has not written); the replays' own count of items skipped
-- for a purged payload; what a purge looks up: replay items by event (deleted with it), body
-- hashes by age (deleted past their window).
ALTER TABLE events ADD COLUMN payload_purged_at INTEGER;
ALTER TABLE events ADD COLUMN archived_at INTEGER;
ALTER TABLE replays ADD COLUMN skipped_purged INTEGER NOT NULL DEFAULT 0;
CREATE INDEX replay_items_event ON replay_items (event_id);
CREATE INDEX body_hashes_received ON body_hashes (received_at);
