#!/usr/bin/env bash
# Stops the local cluster started by deploy/ha/up.sh and removes its directory
# ($BOXOFFICE_HA_DIR, default /tmp/boxoffice-ha). Exits 0 when nothing runs. Touches only
# processes recorded in, or started with a path inside, that directory.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"

if [ ! -e "$HA_DIR" ]; then
    ha_log "nothing in $HA_DIR; nothing to stop"
    exit 0
fi
if [ ! -e "$HA_DIR/$HA_MARKER" ]; then
    ha_log "$HA_DIR has no $HA_MARKER: not a cluster made by up.sh; leaving it alone"
    exit 1
fi

term_and_wait() { # seconds, pid...
    local secs=$1
    shift
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null
    local deadline=$(($(date +%s) + secs)) pid alive
    while :; do
        alive=()
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
        [ ${#alive[@]} -eq 0 ] && return 0
        if [ "$(date +%s)" -ge "$deadline" ]; then
            ha_log "still running after ${secs}s, killing: ${alive[*]}"
            kill -KILL "${alive[@]}" 2>/dev/null
            sleep 0.5
            return 0
        fi
        sleep 0.2
    done
}
pids_of() { # pidfile...
    local f
    for f in "$@"; do ha_pid_alive "$f" && head -n1 "$f"; done
}
postmasters() {
    local n
    for n in "${HA_NODES[@]}"; do ha_pid_alive "$HA_DIR/$n/data/postmaster.pid" && head -n1 "$HA_DIR/$n/data/postmaster.pid"; done
}

# HAProxy first (no new sessions), then Patroni (it stops its PostgreSQL on SIGTERM: fast
# shutdown), then any PostgreSQL left behind, then etcd.
term_and_wait 5 $(pids_of "$HA_DIR/haproxy.pid")
patronis=$(pids_of "$HA_DIR"/node*/patroni.pid)
[ -n "$patronis" ] && ha_log "stopping patroni ($patronis)"
term_and_wait 40 $patronis
# SIGQUIT is PostgreSQL's immediate shutdown.
pms=$(postmasters)
if [ -n "$pms" ]; then
    ha_log "stopping postgres left running ($pms)"
    kill -QUIT $pms 2>/dev/null
    for _ in $(seq 50); do [ -z "$(postmasters)" ] && break; sleep 0.2; done
    pms=$(postmasters)
    [ -n "$pms" ] && kill -KILL $pms 2>/dev/null
fi
term_and_wait 10 $(pids_of "$HA_DIR/etcd.pid")

# Anything else started with a path in our directory (a process whose pid file was lost).
dir_re=$(printf '%s/' "$HA_DIR" | sed 's/[][\.*^$+?(){}|]/\\&/g')
stray=$(pgrep -f -- "$dir_re" | grep -vx -e "$$" -e "$PPID" || true)
if [ -n "$stray" ]; then
    ha_log "killing stray processes: $(echo $stray)"
    kill -KILL $stray 2>/dev/null
    sleep 0.5
fi
# PostgreSQL backends outlive a killed postmaster only briefly; wait for our ports to close.
for _ in $(seq 50); do
    busy=0
    for port in "${HA_PG_PORTS[@]}" "${HA_REST_PORTS[@]}" "$HA_PRIMARY_PORT" "$HA_REPLICA_PORT" \
        "$HA_STATS_PORT" "$HA_ETCD_CLIENT_PORT" "$HA_ETCD_PEER_PORT"; do
        ss -Hltn "sport = :$port" | grep -q . && busy=1
    done
    [ "$busy" = 0 ] && break
    sleep 0.2
done
[ "$busy" = 0 ] || ha_log "warning: a cluster port is still listening: ss -ltnp"

rm -rf "$HA_DIR"
ha_log "stopped; removed $HA_DIR"
