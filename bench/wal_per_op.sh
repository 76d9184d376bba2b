#!/usr/bin/env bash
# The write-ahead log one hot event's run writes per operation (a hold, or a paid sale with
# --pay): a steady measure of the database's write work (index entries included), where CPU
# time on a shared machine is too noisy to tell schemas apart.
#
#   cargo build --release --workspace && bash bench/wal_per_op.sh          # holds
#   cargo build --release --workspace && bash bench/wal_per_op.sh --pay    # paid sales
#
# Extra arguments go to the load tool; BIN and LOAD name other builds' binaries. Needs psql.
# Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
BIN=${BIN:-target/$PROFILE/boxoffice}
LOAD=${LOAD:-target/$PROFILE/boxoffice-load}
DURATION=${DURATION:-10}
PORT=${PORT:-18451}
URL="http://127.0.0.1:$PORT"
DATA=$(mktemp -d /tmp/boxoffice-wal-XXXXXX)
chmod 755 "$DATA"
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT

RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA/data" \
  --rate-limit-per-address 0 --max-connections-per-address 0 >"$DATA/log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
  curl -fs "$URL/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "$URL/ready" >/dev/null || { cat "$DATA/log" >&2; exit 1; }
# The embedded cluster's socket lives in its directory; its superuser is postgres.
sql() { psql -At -h "$DATA/data/postgres" -U postgres -d boxoffice -c "$1"; }
sql "CHECKPOINT" >/dev/null
before=$(sql "SELECT wal_records || ' ' || wal_bytes FROM pg_stat_wal")
# Exit 2 is a finished run the tool found unsound: its rows are still counted, and it says why.
status=0
"$LOAD" --url "$URL" --json --tickets 1000000 --clients 256 --duration "$DURATION" "$@" \
  >"$DATA/report.json" || status=$?
[ "$status" -eq 0 ] || [ "$status" -eq 2 ] || { echo "the load tool failed ($status)" >&2; exit 1; }
after=$(sql "SELECT wal_records || ' ' || wal_bytes FROM pg_stat_wal")
holds=$(sql "SELECT count(*) FROM ticket_allocations")
paid=$(sql "SELECT count(*) FROM ticket_allocations WHERE status = 'purchased'")
python3 - "$before" "$after" "$holds" "$paid" <<'PY'
import sys
(r0, b0), (r1, b1) = (map(int, w.split()) for w in sys.argv[1:3])
holds, paid = int(sys.argv[3]), int(sys.argv[4])
ops, what = (paid, "paid sale") if paid else (holds, "hold")
print(f"{holds:,} holds, {paid:,} paid; per {what}: {(r1 - r0) / ops:.1f} WAL records, "
      f"{(b1 - b0) / ops:,.0f} bytes")
PY
