#!/usr/bin/env bash
# Where a run's CPU goes: the CPU seconds the server, the load tool and the embedded
# PostgreSQL (all its processes) spend while one hot event is loaded, and per operation
# (a hold, or a paid sale with --pay). On a machine whose cores all three share, this says
# what each operation costs, which the rate alone does not.
#
#   cargo build --release --workspace && bash bench/cpu_split.sh          # holds
#   cargo build --release --workspace && bash bench/cpu_split.sh --pay    # paid sales
#
# Extra arguments go to the load tool; BIN and LOAD name other builds' binaries; KEEP_REPORT
# names a file to keep the load tool's JSON report in (its latencies per step). Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
BIN=${BIN:-target/$PROFILE/boxoffice}
LOAD=${LOAD:-target/$PROFILE/boxoffice-load}
DURATION=${DURATION:-10}
PORT=${PORT:-18450}
URL="http://127.0.0.1:$PORT"
DATA=$(mktemp -d /tmp/boxoffice-cpu-XXXXXX)
chmod 755 "$DATA"
REPORT=$(mktemp /tmp/boxoffice-cpu-XXXXXX.json)
LOG=$(mktemp /tmp/boxoffice-cpu-XXXXXX.log)
SERVER_PID=
LOAD_PID=
cleanup() {
  for pid in $LOAD_PID $SERVER_PID; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  [ -n "${KEEP_REPORT:-}" ] && cp "$REPORT" "$KEEP_REPORT"; rm -rf "$DATA" "$REPORT" "$LOG"
}
trap cleanup EXIT
fail() {
  echo "$1; the log:" >&2
  cat "$LOG" >&2
  exit 1
}

# User plus system CPU time of the given processes, in clock ticks (fields 14 and 15 of
# /proc/PID/stat; the command name in field 2 has no spaces for these processes). With
# `--reaped`, the first process's reaped children's too (fields 16 and 17).
ticks() {
  local total=0 pid fields reaped=
  if [ "$1" = --reaped ]; then
    reaped=1
    shift
  fi
  for pid in "$@"; do
    read -r -a fields <"/proc/$pid/stat" 2>/dev/null || continue
    total=$((total + fields[13] + fields[14]))
    if [ -n "$reaped" ]; then
      total=$((total + fields[15] + fields[16]))
      reaped=
    fi
  done
  echo "$total"
}

RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" \
  --rate-limit-per-address 0 --max-connections-per-address 0 >"$LOG" 2>&1 &
SERVER_PID=$!
ready=
for _ in $(seq 1 300); do
  if curl -fs "$URL/ready" >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.1
done
[ -n "$ready" ] || fail "the server did not start"
# This server's embedded PostgreSQL: its postmaster (the server's child) and the postmaster's
# children, counted with the CPU of the children it has reaped, so that a backend or worker
# that ends within the window still counts. Other clusters on the machine do not.
POSTMASTER=$(pgrep -P "$SERVER_PID" -x postgres || true)
[ -n "$POSTMASTER" ] || fail "no embedded PostgreSQL under the server (is DATABASE_URL set?)"
postgres_ticks() { ticks --reaped "$POSTMASTER" $(pgrep -P "$POSTMASTER" || true); }

# The window ends half a second before the run does, so that the load tool is still alive
# to be read. It starts with the tool, which first creates its event (a few milliseconds).
WINDOW=$(python3 -c "print($DURATION - 0.5)")
app0=$(ticks "$SERVER_PID")
pg0=$(postgres_ticks)
"$LOAD" --url "$URL" --json --tickets 1000000 --clients 256 --duration "$DURATION" "$@" \
  >"$REPORT" 2>>"$LOG" &
LOAD_PID=$!
sleep "$WINDOW"
load1=$(ticks "$LOAD_PID")
app1=$(ticks "$SERVER_PID")
pg1=$(postgres_ticks)
# Exit 2 is a finished run the tool found unsound: its figures still stand, and it says why.
status=0
wait "$LOAD_PID" || status=$?
LOAD_PID=
[ "$status" -eq 0 ] || [ "$status" -eq 2 ] || fail "the load tool failed ($status)"

python3 - "$REPORT" "$(getconf CLK_TCK)" "$(nproc)" "$WINDOW" \
  $((app1 - app0)) $((load1)) $((pg1 - pg0)) <<'PY'
import json, sys
report, hz, cores, window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
app, load, pg = (int(t) / hz for t in sys.argv[5:8])
d = json.load(open(report))
paid = d.get("payments_per_second", 0.0)
rate = paid if paid else d["reservations_per_second"]
what = "paid sale" if paid else "hold"
ops = rate * window
print(f"{rate:,.0f} {what}s/s; CPU over {window:.1f} s: server {app:.1f} s, load tool {load:.1f} s, "
      f"PostgreSQL {pg:.1f} s ({(app + load + pg) / (cores * window):.0%} of {cores} cores)")
print(f"per {what}: server {app / ops * 1e6:.0f} µs, load tool {load / ops * 1e6:.0f} µs, "
      f"PostgreSQL {pg / ops * 1e6:.0f} µs, together {(app + load + pg) / ops * 1e6:.0f} µs")
PY
