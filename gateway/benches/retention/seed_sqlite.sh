#!/bin/sh
# Seeds a migrated SQLite file for purge_throughput.sh: $1 db file, $2 events, $3 received time (ms).
sqlite3 "$1" <<SQL
PRAGMA journal_mode=WAL;
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $2)
INSERT INTO events (id, source, dedup_key, event_type, received_at, delivery_state, outcome, attempts, ladder_attempts, delivered_at, seq)
SELECT printf('evt_%026X', n), 'orders', 'k' || n, 't', $3 + n, 'delivered', 'confirmed', 1, 1, $3 + n, n FROM g;
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $2)
INSERT INTO event_payloads (event_id, headers, body) SELECT printf('evt_%026X', n), '[]', randomblob(1024) FROM g;
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $2)
INSERT INTO attempts (event_id, number, kind, gateway, started_at, latency_ms, status_code) SELECT printf('evt_%026X', n), 1, 'scheduled', 'seed', $3 + n, 3, 200 FROM g;
SQL
