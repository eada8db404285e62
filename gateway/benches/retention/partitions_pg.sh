#!/usr/bin/env bash
# Payload retention on PostgreSQL, the two designs compared in SQL alone (no gateway): the
# batched DELETE hookwarden runs (500 rows per transaction, 2 ms apart) against a table
# partitioned by day whose old day is dropped. Each design gets N old payloads of 1 KiB to
# remove while pgbench inserts new ones at RATE/s (4 clients), as ingest would; reported:
# how long the removal took, what VACUUM then costs (the plain table's dead rows), and the
# inserts' p50/p99 latency before and during the removal.
#
# gateway/benches/retention/partitions_pg.sh [N, default 200000] [RATE, default 500]
# Needs psql and pgbench, and PostgreSQL at $PGURL (default the test server, database
# partcmp, created and dropped here).
set -euo pipefail
n=${1:-200000}
rate=${2:-500}
admin=${PGADMIN:-postgresql://postgres@127.0.0.1:5432/test}
url=${PGURL:-postgresql://postgres@127.0.0.1:5432/partcmp}
work=$(mktemp -d)
trap 'rm -rf "$work"; psql -q "$admin" -c "DROP DATABASE IF EXISTS partcmp" >/dev/null 2>&1 || true' EXIT
psql -q "$admin" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS partcmp" -c "CREATE DATABASE partcmp" >/dev/null
q() { psql -qtAX "$url" "$@"; }
now_ms() { date +%s%3N; }

day=86400000
today=$(( $(now_ms) / day * day ))
old=$(( today - 3 * day ))

q <<SQL
CREATE TABLE plain (event_id TEXT PRIMARY KEY, received_at BIGINT NOT NULL, headers TEXT NOT NULL, body BYTEA NOT NULL);
CREATE INDEX plain_received ON plain (received_at);
-- The partition key must be in the primary key: event ids stay unique through events' own key.
CREATE TABLE parted (event_id TEXT NOT NULL, received_at BIGINT NOT NULL, headers TEXT NOT NULL, body BYTEA NOT NULL,
                     PRIMARY KEY (event_id, received_at)) PARTITION BY RANGE (received_at);
CREATE TABLE parted_old PARTITION OF parted FOR VALUES FROM ($old) TO ($((old + day)));
CREATE TABLE parted_now PARTITION OF parted FOR VALUES FROM ($((today - day))) TO ($((today + 2 * day)));
INSERT INTO plain SELECT 'old' || g, $old + g, '[]', convert_to(repeat('x', 1024), 'UTF8') FROM generate_series(1, $n) g;
INSERT INTO parted SELECT 'old' || g, $old + g, '[]', convert_to(repeat('x', 1024), 'UTF8') FROM generate_series(1, $n) g;
VACUUM ANALYZE plain;
VACUUM ANALYZE parted;
-- hookwarden's purge: batches of 500, each its own transaction, 2 ms apart.
CREATE PROCEDURE purge_plain(cutoff BIGINT) LANGUAGE plpgsql AS \$\$
DECLARE gone INT;
BEGIN
  LOOP
    DELETE FROM plain WHERE event_id IN (SELECT event_id FROM plain WHERE received_at < cutoff LIMIT 500);
    GET DIAGNOSTICS gone = ROW_COUNT;
    COMMIT;
    EXIT WHEN gone < 500;
    PERFORM pg_sleep(0.002);
  END LOOP;
END \$\$;
SQL

for table in plain parted; do
  cat > "$work/$table.sql" <<SQL
\set id random(1, 2000000000)
INSERT INTO $table VALUES ('new' || :id || '-' || :client_id, (extract(epoch from clock_timestamp()) * 1000)::bigint, '[]', convert_to(repeat('y', 1024), 'UTF8')) ON CONFLICT DO NOTHING;
SQL
done

# Inserts at the rate for $2 seconds into table $1, logging each transaction's latency.
load() {
  (cd "$work" && pgbench -n -c 4 -j 2 -R "$rate" -T "$2" -f "$work/$1.sql" --log --log-prefix="$3" "$url" >/dev/null 2>&1)
}
# p50 / p99 in ms of the inserts logged under prefix $1 (pgbench's third column is µs).
latency() {
  cat "$work/$1".* | awk '{ print $3 }' | sort -n |
    awk '{ v[NR] = $1 } END { printf "%.1f / %.1f ms (%d inserts)", v[int(NR * 0.5)] / 1000, v[int(NR * 0.99)] / 1000, NR }'
}

for table in plain parted; do
  load "$table" 10 "$table-quiet"
  load "$table" 20 "$table-purge" &
  loader=$!
  sleep 3
  started=$(now_ms)
  if [ "$table" = plain ]; then
    q -c "CALL purge_plain($((old + day)))"
  else
    q -c "DROP TABLE parted_old"
  fi
  took=$(( $(now_ms) - started ))
  wait "$loader"
  vacuum=0
  if [ "$table" = plain ]; then
    started=$(now_ms)
    q -c "VACUUM plain"
    vacuum=$(( $(now_ms) - started ))
  fi
  echo "$table: removed $n payloads in $took ms, then VACUUM $vacuum ms;" \
    "inserts at ${rate}/s p50 / p99: quiet $(latency "$table-quiet"), while removing $(latency "$table-purge")"
done
