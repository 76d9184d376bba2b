#!/usr/bin/env bash
# The benchmark behind docs/performance.md: one run of every scenario on this machine,
# against release builds, with the embedded PostgreSQL. Results go to target/bench/: each
# run's JSON report, its HTML report (NAME.html) and its charts (charts/NAME/*.svg).
#
#   cargo build --release --workspace && bash bench/run.sh
#
# Smaller runs for a quick look (any debug build works too):
#
#   PROFILE=debug DURATION=2 STREAMS=500 ARRIVAL_RATE=200 SPIKE_RATE=800 bash bench/run.sh
#
# Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
BIN=target/$PROFILE/boxoffice
LOAD=target/$PROFILE/boxoffice-load
OUT=target/bench
DURATION=${DURATION:-10}
PORT=${PORT:-18400}
# The on-sale scenarios: idle streams beside the holds, and the open model's arrivals.
STREAMS=${STREAMS:-10000}
ARRIVAL_RATE=${ARRIVAL_RATE:-500}
SPIKE_RATE=${SPIKE_RATE:-2000}
SPIKE_SECONDS=${SPIKE_SECONDS:-2}
# The organiser's token of the bench server: the tool creates its events with it and
# compares every run's counts with the rows (GET /events/{id}/report).
TOKEN=bench-organiser-token
mkdir -p "$OUT/charts"
# Thousands of streams are thousands of sockets on each side: raise the open-file limit as
# far as this shell may (docs/operations.md says what a deployment raises).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
DATA=$(mktemp -d /tmp/boxoffice-bench-XXXXXX)
chmod 755 "$DATA"
URL="http://127.0.0.1:$PORT"
SERVER_PID=

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
cleanup() { stop_server; rm -rf "$DATA"; }
trap cleanup EXIT

start_server() { # mode
  # Every client runs on 127.0.0.1: the per-address limits (requests, and connections: 2,000
  # clients, thousands of streams) would measure themselves, so they are off.
  RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" \
    --purchase-mode "$1" --rate-limit-per-address 0 --max-connections-per-address 0 --admin-token "$TOKEN" \
    >"$OUT/server-$1.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    curl -fs "$URL/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not start" >&2
  exit 1
}

load() { # name, args...
  local name=$1
  shift
  echo "== $name: $*" >&2
  # Exit status 2 is a run that is not sound, 3 one whose verification is incomplete: keep
  # its report for bench/report.py, which marks it; any other failure stops the bench.
  "$LOAD" --url "$URL" --json --admin-token "$TOKEN" --report "$OUT/$name.html" \
    --charts-dir "$OUT/charts/$name" "$@" >"$OUT/$name.json" || case $? in 2 | 3) ;; *) false ;; esac
  jq -c '{reservations_per_second, tickets_per_second, requests_per_second, latency_ms, codes, sound, verdict}' "$OUT/$name.json" >&2
  jq -c '.steps[] | {name, per_second, p99: .latency_ms.p99, answers}' "$OUT/$name.json" >&2
}

peak_rss_kb() { awk '/^VmHWM/ {print $2}' "/proc/$SERVER_PID/status"; }

# pgbench with 256 clients needs more than PostgreSQL's default 100 connections: raise it
# once in the cluster's own configuration (the server restarts with it).
start_server batched
"$(dirname "$(ls /usr/lib/postgresql/*/bin/psql | sort -V | tail -1)")/psql" -h "$DATA/postgres" -U postgres -d boxoffice \
  -qc "ALTER SYSTEM SET max_connections = 400"
stop_server

# 1. Hot event, per-request then batched, 64 and 256 clients.
for mode in per-request batched; do
  start_server "$mode"
  for clients in 64 256; do
    load "hot-$mode-$clients" --tickets 1000000 --clients "$clients" --duration "$DURATION"
  done
  if [ "$mode" = batched ]; then
    peak_rss_kb >"$OUT/peak-rss-kb-batched-256"
    # 1b. The catalogue on the same server, right after the single-type run it is compared
    # with: three types (A in Q1 and Q2, B in Q2, C in none), orders of one to three lines.
    load hot-types-batched-256 --tickets 1000000 --clients 256 --duration "$DURATION" \
      --ticket-types 3 --quotas overlap --max-lines 3 --price 2500 --price 4000 --price 1000
    # 2. The seed scenario: 2000 buyers at once for 100 tickets.
    load seed-2000-for-100 --tickets 100 --clients 2000 --requests 2000
    # 3. Sold-out rejections.
    load sold-out --tickets 1 --clients 256 --duration "$DURATION"
    # 4. Reads of one event.
    load read-event --tickets 10 --clients 256 --duration "$DURATION" --read-only
    # 7. The flash sale (issue 12), on the same server, one after the other: holds only,
    # hold then pay at once, holds beside $STREAMS idle streams, reads of the hot event.
    load sale-holds --tickets 1000000 --clients 256 --duration "$DURATION"
    load sale-pay --tickets 1000000 --clients 256 --duration "$DURATION" --pay
    load sale-holds-streams --tickets 1000000 --clients 256 --duration "$DURATION" \
      --idle-streams "$STREAMS"
    load sale-reads --tickets 1000000 --clients 256 --duration "$DURATION" --read-only
    # 8. An on-sale: buyers arrive at $ARRIVAL_RATE/s after a spike of $SPIKE_RATE/s for
    # $SPIKE_SECONDS s; orders of 1-2 priced types in overlapping quotas; they think 0.2-2 s,
    # then most pay, 5% with a declining card, 5% cancel, 10% abandon; 10% watch the stream.
    load onsale-spike --tickets 1000000 --duration "$DURATION" \
      --arrival-rate "$ARRIVAL_RATE" --spike-rate "$SPIKE_RATE" --spike-seconds "$SPIKE_SECONDS" \
      --ticket-types 3 --quotas overlap --max-lines 2 --price 2500 --price 4000 --price 1000 \
      --think-ms 200-2000 --pay --decline-share 0.05 --cancel-share 0.05 --abandon-share 0.1 \
      --watch-share 0.1
    # 9. The doors open (issue 13): 20,000 paid tickets, then 256 door devices scan their
    # codes (`--scan`, which has its own report: no HTML or charts).
    echo "== scan-256" >&2
    "$LOAD" --url "$URL" --json --admin-token "$TOKEN" --scan --scan-tickets 20000 \
      --clients 256 --duration "$DURATION" >"$OUT/scan-256.json" || [ $? -eq 2 ]
    jq -c '{scans_per_second, latency_ms, sound, verdict}' \
      "$OUT/scan-256.json" >&2
    # Memory per idle live-statistics subscriber, on a fresh server process (one that has
    # served the runs above reuses the memory they freed, and would show less). The tool
    # reads the server's resident memory before the streams open and once every one has its
    # first message (`--server-pid`): opening 10,000 takes this machine more than ten
    # seconds, so a reading at a fixed time would count the streams opened so far as all.
    stop_server
    start_server batched
    "$LOAD" --url "$URL" --json --admin-token "$TOKEN" --tickets 10 --clients 1 --requests 1 \
      --idle-streams "$STREAMS" --stream-sources 4 --hold-streams-seconds 1 \
      --server-pid "$SERVER_PID" >"$OUT/streams.json"
    jq -ec "{subscribers: .streams.opened,
             rss_before_kb: (.streams.server_rss_before_kib // error(\"no resident memory read\")),
             rss_with_subscribers_kb: (.streams.server_rss_open_kib // error(\"no resident memory read\")),
             kib_per_subscriber: .streams.server_kib_per_stream}" \
      "$OUT/streams.json" >"$OUT/sse-memory.json"
    cat "$OUT/sse-memory.json" >&2
  fi
  stop_server
done

# 5. The reference line: pgbench, one UPDATE of one hot row per transaction.
start_server batched
PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/pgbench | sort -V | tail -1)")
SOCK="$DATA/postgres"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
"$PGBIN/psql" -h "$SOCK" -U postgres -d boxoffice -qc \
  "DROP TABLE IF EXISTS bench_hot; CREATE TABLE bench_hot (id int PRIMARY KEY, n bigint NOT NULL); INSERT INTO bench_hot VALUES (1, 0);"
echo 'UPDATE bench_hot SET n = n + 1 WHERE id = 1;' >"$DATA/hot.sql"
chmod 644 "$DATA/hot.sql"
for clients in 64 256; do
  echo "== pgbench $clients clients" >&2
  as_pg "$PGBIN/pgbench" -h "$SOCK" -U postgres -n -c "$clients" -j 2 -T "$DURATION" -f "$DATA/hot.sql" boxoffice \
    >"$OUT/pgbench-$clients.txt" 2>&1 || true
  grep -E '^tps' "$OUT/pgbench-$clients.txt" >&2 || echo "pgbench $clients: no tps (too short a run?)" >&2
done
stop_server
echo "results in $OUT" >&2
