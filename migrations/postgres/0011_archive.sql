-- The archive before purge (issue 17): the file an event was given to. An event is claimed
-- for a file (`archive_file`) in one transaction, the file is written from the claimed rows
-- (temp file, fsync, rename), then `archived_at` is set on them: only then may a purge take
-- the event. A file claimed and not yet marked written is finished by the next run (written
-- again if it is not there, taken as it is if it is), so no event is lost or written twice.
ALTER TABLE events ADD COLUMN archive_file TEXT;
CREATE INDEX events_archive_pending ON events (archive_file) WHERE archive_file IS NOT NULL AND archived_at IS NULL;
