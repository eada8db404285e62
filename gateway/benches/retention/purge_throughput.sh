#!/bin/bash
# Figures in BENCHMARKS.md ("Retention's purge"). Needs psql / sqlite3 and PostgreSQL on 127.0.0.1:5432.
# Purge throughput: N settled events (1 KiB payload, one attempt each) received 2 h ago, one
# gateway with retention payloads = events = 1h: its first run purges them all.
# $1 = sqlite|postgres, $2 = N
set -e
BIN=${BIN:-target/release/hookwarden}   # run from the workspace root
N=$2
DIR=$(mktemp -d)
T0=$(( $(date +%s%3N) - 7200000 ))
if [ "$1" = sqlite ]; then URL="sqlite://$DIR/hw.db"; else
  NAME=hw_rbench_$$; psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE DATABASE $NAME"; URL="postgres://postgres@127.0.0.1:5432/$NAME"; fi
cfg() { cat > $DIR/hw.toml <<TOML
[server]
listen = "127.0.0.1:18$((RANDOM % 900 + 100))"
[database]
url = "$URL"
[retention]
payloads = "$1"
events = "$1"
unsettled = "30d"
run_every = "1h"
[[sources]]
name = "orders"
verify = { kind = "none" }
forward_to = "http://127.0.0.1:9/"
signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOML
}
cfg 30d
$BIN serve --config $DIR/hw.toml > $DIR/migrate.log 2>&1 & PID=$!; sleep 2; kill $PID; wait $PID || true
if [ "$1" = sqlite ]; then $(dirname "$0")/seed_sqlite.sh $DIR/hw.db $N $T0 >/dev/null; else
  psql -q -h 127.0.0.1 -U postgres -d $NAME -v n=$N -v t0=$T0 -f $(dirname "$0")/seed_pg.sql; psql -q -h 127.0.0.1 -U postgres -d $NAME -c "VACUUM ANALYZE"; fi
[ "$1" = sqlite ] && ls -la $DIR/hw.db | awk '{print "file before:", $5}'
cfg 1h
START=$(date +%s%3N)
RUST_LOG=info $BIN serve --config $DIR/hw.toml > $DIR/run.log 2>&1 & PID=$!
until grep -q "retention purged" $DIR/run.log; do sleep 0.05; done
END=$(date +%s%3N)
kill $PID; wait $PID || true
grep "retention purged" $DIR/run.log | sed 's/\x1b\[[0-9;]*m//g' | tail -1
echo "$1 N=$N: purge run (with start-up) $((END-START)) ms"
[ "$1" = sqlite ] && ls -la $DIR/hw.db | awk '{print "file after:", $5}'
[ "$1" = postgres ] && psql -q -h 127.0.0.1 -U postgres -d test -c "DROP DATABASE $NAME"
rm -rf $DIR
