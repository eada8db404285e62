#!/usr/bin/env bash
# Instructions per ingested event, counted rather than timed: the gateway runs under
# callgrind while the ingest bench drives it (48 connections), once short and once long.
# (long - short) / (events long - events short) cancels start-up and the warm-up of the
# statement cache. SHA-256 is reported apart: valgrind runs it in software, ~1 us on the
# real CPU. Repeatable to within a few per cent whatever else the machine is doing, which
# wall-clock figures on a shared 2-core machine are not (see BENCHMARKS.md).
#
# gateway/benches/callgrind_ingest.sh [short seconds, default 20] [long seconds, default 60]
set -euo pipefail
cd "$(dirname "$0")/../.."
short=${1:-20}
long=${2:-60}
command -v valgrind >/dev/null || { echo "callgrind_ingest: needs valgrind" >&2; exit 1; }

cargo bench -p hookwarden --bench ingest_load --no-run
bench=$(ls -t target/release/deps/ingest_load-* | grep -v '\.d$' | head -n 1)
gateway=target/release/hookwarden
work=$(mktemp -d)
cp "$gateway" "$work/hookwarden.real"
restore() { cp "$work/hookwarden.real" "$gateway"; rm -rf "$work"; }
trap restore EXIT
# The bench starts target/release/hookwarden; for now that is valgrind around the real one.
cat > "$gateway" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$work/cg.%p $work/hookwarden.real "\$@"
EOF
chmod +x "$gateway"

# One run: accepted events, all instructions, SHA-256's instructions.
run() {
  rm -f "$work"/cg.*
  local events file total sha
  events=$("$bench" --bench --seconds "$1" --connections 48 2>&1 | awk '/^  accepted/ { print $2 }')
  file=$(ls "$work"/cg.*)
  total=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  sha=$(callgrind_annotate --inclusive=yes "$file" 2>/dev/null |
    awk '/sha2::sha256::compress256 \[/ && !seen { gsub(",", "", $1); print $1; seen = 1 }')
  echo "$events $total ${sha:-0}"
}
read -r e1 t1 s1 < <(run "$short")
read -r e2 t2 s2 < <(run "$long")
echo "under valgrind: $e1 events in ${short} s, $e2 in ${long} s"
echo "instructions per event, steady state, SHA-256 left out: $(( ((t2 - s2) - (t1 - s1)) / (e2 - e1) ))"
echo "SHA-256 instructions per event (software under valgrind): $(( (s2 - s1) / (e2 - e1) ))"
