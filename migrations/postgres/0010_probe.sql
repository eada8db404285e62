-- The status probe (issue 19): what asking first did in a replay, and why an event is
-- confirmed without a receipt (its event type is one of the source's no_receipt_types).
ALTER TABLE replays ADD COLUMN skipped_probe BIGINT NOT NULL DEFAULT 0;  -- items the handler's answer settled
ALTER TABLE replays ADD COLUMN probes BIGINT NOT NULL DEFAULT 0;         -- probes sent by the run
ALTER TABLE replays ADD COLUMN probes_failed BIGINT NOT NULL DEFAULT 0;  -- of them, failed as a whole
ALTER TABLE events ADD COLUMN outcome_reason TEXT;                        -- set when not a receipt's doing
