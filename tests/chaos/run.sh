#!/usr/bin/env bash
# The chaos run: a mixed workload (holds and multi-line orders, payments, declined cards,
# cancels, lapses, refunds, double-scanned check-ins, waiting-list offers) over several
# Boxoffice instances on the local Patroni cluster (deploy/ha), with faults injected at
# moments drawn from a seed, then judged by the history checker (`boxoffice-load check`).
#
#   tests/chaos/run.sh [--seed N] [--duration SECONDS] [--instances N]
#                      [--tickets N] [--faults 'SECONDS:KIND,…'] [--recovery-goals]
#                      [--out DIR]
#
# The event has --tickets tickets (default 1,500: it sells out within the run, so buyers
# join the waiting list and take the offers that lapses, cancels and refunds make).
#
# Fault kinds:
#   app-kill      kill -9 one instance (drawn from the seed), restarted a second later
#   pg-restart    PostgreSQL on the primary restarted in place (patronictl restart)
#   primary-kill  kill -9 of the primary's postmaster: Patroni promotes the sync standby
#   node-kill     kill -9 of the primary's Patroni and its PostgreSQL together (the machine
#                 dying): failover waits for the leader lease; the node rejoins 20 s later
# Without --faults, one fault per 30 s of the run, each kind at least once, at moments and
# on instances drawn from the seed; the same seed replays the same schedule. --faults gives
# a fixed schedule instead (the failover test's). With --recovery-goals, each database fault
# must be followed by a successful hold within 15 s, and every call retried through it must
# have its answer within 30 s of that recovery.
#
# Thirty watchers keep the event's statistics stream open throughout (reopened when their
# instance is killed); each must end on the event's final counts.
#
# Prints the seed first and a summary last; exits 0 only when the checker found nothing and
# every stream converged.
# Binaries: $BOXOFFICE_BIN and $LOAD_BIN, else the debug builds (built here). Leaves nothing
# running: the instances are killed and the cluster is stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/tests/chaos"
. "$ROOT/deploy/ha/common.sh"

seed=""
duration=180
instances=3
tickets=1500
faults=""
goals=0
out=""
while [ $# -gt 0 ]; do
    case $1 in
    --seed) seed=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --instances) instances=$2; shift 2 ;;
    --tickets) tickets=$2; shift 2 ;;
    --faults) faults=$2; shift 2 ;;
    --recovery-goals) goals=1; shift ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--seed N] [--duration S] [--instances N] [--tickets N] [--faults 'S:KIND,…'] [--recovery-goals] [--out DIR]" >&2; exit 64 ;;
    esac
done
[ -n "$seed" ] || seed=$(( $(od -An -N2 -tu2 /dev/urandom) ))
out=${out:-/tmp/boxoffice-chaos-$seed}
echo "chaos: seed $seed (replay: $0 --seed $seed --duration $duration --instances $instances --tickets $tickets${faults:+ --faults '$faults'})"
RANDOM=$seed

log() { echo "[chaos $(date +%T)] $*" >&2; }
now_us() { echo $(( $(date +%s%N) / 1000 )); }

if [ -z "${BOXOFFICE_BIN:-}" ] || [ -z "${LOAD_BIN:-}" ]; then
    (cd "$ROOT" && cargo build -q --workspace)
fi
BOXOFFICE_BIN=${BOXOFFICE_BIN:-$ROOT/target/debug/boxoffice}
LOAD_BIN=${LOAD_BIN:-$ROOT/target/debug/boxoffice-load}

rm -rf "$out"
mkdir -p "$out"
ADMIN_TOKEN=chaos-admin-token
APP_PORT_BASE=${CHAOS_APP_PORT_BASE:-18180}
app_pids=()

cleanup() {
    local pid
    for pid in "${app_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    bash "$ROOT/deploy/ha/down.sh" >"$out/ha-down.log" 2>&1 || true
}
trap cleanup EXIT

log "starting the cluster"
bash "$ROOT/deploy/ha/up.sh" >"$out/ha-up.log" 2>&1 || { cat "$out/ha-up.log" >&2; exit 1; }
DATABASE_URL=$(ha_database_url)

# Instance i (1-based) on port APP_PORT_BASE+i. Short holds and offers so that lapses and
# offers happen within the run; fast payment recovery so the checker need not wait long.
start_app() {
    local i=$1 port=$((APP_PORT_BASE + $1))
    "$BOXOFFICE_BIN" --database-url "$DATABASE_URL" --listen "127.0.0.1:$port" \
        --admin-token "$ADMIN_TOKEN" --hold-seconds 4 --waiting-list-offer-seconds 4 \
        --sweep-interval-ms 500 --payment-recovery-seconds 5 --request-timeout-ms 10000 \
        --rate-limit-per-address 1000000 --rate-limit-per-fingerprint 1000000 \
        --db-max-connections 16 >>"$out/app-$i.log" 2>&1 &
    app_pids[$i]=$!
}
wait_healthy() {
    local port=$((APP_PORT_BASE + $1)) deadline=$((SECONDS + 60))
    until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
        [ $SECONDS -lt $deadline ] || { log "instance $1 not healthy; see $out/app-$1.log"; return 1; }
        sleep 0.2
    done
}
urls=()
for i in $(seq 1 "$instances"); do
    start_app "$i"
    urls+=(--url "http://127.0.0.1:$((APP_PORT_BASE + i))")
done
for i in $(seq 1 "$instances"); do wait_healthy "$i"; done

# The schedule: "seconds:kind" lines.
schedule=()
if [ -n "$faults" ]; then
    IFS=',' read -r -a schedule <<<"$faults"
else
    kinds=(app-kill pg-restart primary-kill)
    count=$((duration / 30))
    [ "$count" -ge 3 ] || count=3
    while [ ${#kinds[@]} -lt "$count" ]; do
        all=(app-kill pg-restart primary-kill node-kill)
        kinds+=("${all[RANDOM % 4]}")
    done
    # Shuffle, then one fault in each equal slot of [10 s, duration - 15 s].
    for ((i = ${#kinds[@]} - 1; i > 0; i--)); do
        j=$((RANDOM % (i + 1)))
        t=${kinds[i]}; kinds[i]=${kinds[j]}; kinds[j]=$t
    done
    span=$((duration - 25))
    slot=$((span / count))
    for ((i = 0; i < count; i++)); do
        schedule+=("$((10 + i * slot + RANDOM % (slot > 5 ? slot - 5 : 1))):${kinds[i]}")
    done
fi
log "faults: ${schedule[*]}"

primary_node() {
    local i
    for i in 0 1 2; do
        if [ "$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:${HA_REST_PORTS[$i]}/primary")" = 200 ]; then
            echo "${HA_NODES[$i]}"
            return 0
        fi
    done
    return 1
}
record_fault() { # kind, detail
    printf '{"atUs":%s,"fault":"%s","detail":"%s"}\n' "$(now_us)" "$1" "$2" >>"$out/faults.jsonl"
    log "fault $1 ($2)"
}
inject() {
    local kind=$1 node pid i
    case $kind in
    app-kill)
        i=$((RANDOM % instances + 1))
        record_fault app-kill "instance $i"
        kill -9 "${app_pids[$i]}" 2>/dev/null || true
        wait "${app_pids[$i]}" 2>/dev/null || true
        sleep 1
        start_app "$i"
        ;;
    pg-restart)
        node=$(primary_node) || { log "no primary to restart; skipped"; return 0; }
        record_fault pg-restart "$node"
        # In the background: patronictl waits for the restart, and the schedule must not.
        (ha_patronictl restart "$HA_SCOPE" "$node" --force >>"$out/faults.log" 2>&1 || true) &
        ;;
    primary-kill)
        node=$(primary_node) || { log "no primary to kill; skipped"; return 0; }
        pid=$(head -n1 "$HA_DIR/$node/data/postmaster.pid")
        record_fault primary-kill "$node postmaster $pid"
        kill -9 "$pid"
        ;;
    node-kill)
        node=$(primary_node) || { log "no primary to kill; skipped"; return 0; }
        record_fault node-kill "$node"
        kill -9 "$(head -n1 "$HA_DIR/$node/patroni.pid")" \
            "$(head -n1 "$HA_DIR/$node/data/postmaster.pid")" 2>/dev/null || true
        # The machine comes back later and its Patroni rejoins as a standby.
        (sleep 20 && ha_spawn "$HA_DIR/$node/patroni.log" "$HA_DIR/$node/patroni.pid" \
            patroni "$HA_DIR/$node/patroni.yml") &
        ;;
    *) log "unknown fault $kind"; exit 64 ;;
    esac
}

log "workload for $duration s over $instances instances"
"$LOAD_BIN" "${urls[@]}" --keyed --history "$out/history.jsonl" --duration "$duration" \
    --clients 16 --tickets "$tickets" --max-per-fingerprint 10 \
    --ticket-types 2 --max-lines 2 --quotas overlap --price 1500 --price 4000 --pay \
    --think-ms 0-300 --abandon-share 0.1 --cancel-share 0.1 --decline-share 0.05 \
    --refund-share 0.1 --checkin-share 0.2 --waiting-list-share 0.3 --offer-wait-seconds 6 \
    --admin-token "$ADMIN_TOKEN" --request-timeout 15 --retry-seconds 60 \
    --idle-streams 30 --reconnect-streams --hold-streams-seconds 10 --json \
    >"$out/report.json" 2>"$out/load.log" &
load_pid=$!
started=$SECONDS
for entry in "${schedule[@]}"; do
    at=${entry%%:*}
    while [ $((SECONDS - started)) -lt "$at" ]; do sleep 0.2; done
    # A fault after the workload has ended would test nothing.
    kill -0 "$load_pid" 2>/dev/null || break
    inject "${entry#*:}"
done
load_status=0
wait "$load_pid" || load_status=$?
# 0: sound; 2: the tool's own verdict found something (the checker below judges); 3: its
# read-backs could not all be made (the checker below judges); 1: it could not run at all.
if [ "$load_status" = 1 ] || [ ! -s "$out/history.jsonl" ]; then
    log "the workload could not run:"; cat "$out/load.log" >&2; exit 1
fi
for i in $(seq 1 "$instances"); do wait_healthy "$i"; done

status=0
# The watchers' streams (reopened when their instance was killed) must all end on the
# event's final counts: the listener reconnected after every database fault.
python3 - "$out/report.json" <<'PY' || status=4
import json, sys
streams = json.load(open(sys.argv[1]))["streams"]
print(f"streams: {streams['opened']} open, reopened {streams['reconnects']} times, "
      f"{streams['last_message_matches']} ended on the final counts, "
      f"{streams['last_message_mismatches']} did not, {streams['ended_early']} closed at the end")
sys.exit(1 if streams["last_message_mismatches"] or streams["ended_early"] else 0)
PY
log "checking the history against the database"
"$LOAD_BIN" check --history "$out/history.jsonl" --database-url "$DATABASE_URL" \
    --settle-seconds 60 >"$out/check.txt" 2>&1 || status=$?
cat "$out/check.txt"
if [ "$goals" = 1 ]; then
    python3 "$HERE/recovery.py" "$out/history.jsonl" "$out/faults.jsonl" --goals \
        >"$out/recovery.txt" || status=${status/#0/3}
    cat "$out/recovery.txt"
else
    python3 "$HERE/recovery.py" "$out/history.jsonl" "$out/faults.jsonl" >"$out/recovery.txt" || true
    cat "$out/recovery.txt"
fi
calls=$(python3 -c 'import json,sys; print(len({json.loads(l)["call"] for l in open(sys.argv[1]) if l.strip()}))' "$out/history.jsonl")
attempts=$(wc -l <"$out/history.jsonl")
echo "chaos: seed $seed; $calls calls ($attempts attempts) over $duration s on $instances instances; faults: ${schedule[*]}; load tool exit $load_status; checker and goals exit $status; files in $out"
exit "$status"
