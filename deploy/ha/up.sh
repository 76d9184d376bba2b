#!/usr/bin/env bash
# Starts a local PostgreSQL 15 high-availability cluster on loopback: one etcd, three
# PostgreSQL nodes under Patroni (one primary, two standbys, synchronous replication) and
# HAProxy routing $HA_PRIMARY_PORT (5440) to the writable primary and $HA_REPLICA_PORT (5439)
# to the standbys. Waits until a write through HAProxy succeeds, then prints DATABASE_URL.
# Local use only: fixed passwords, everything under $BOXOFFICE_HA_DIR (/tmp/boxoffice-ha).
# Stop it with deploy/ha/down.sh. See docs/operations.md, "A PostgreSQL cluster with Patroni".
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"

START=$(date +%s)

# ---------------------------------------------------------------- packages
missing=()
command -v patroni >/dev/null || missing+=(patroni)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v haproxy >/dev/null || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { ha_log "missing ${missing[*]}; run as root or install them"; exit 1; }
    ha_log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2 ||
        { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2; }
fi
[ -x "$HA_PG_BIN/postgres" ] || { ha_log "no PostgreSQL server binaries in $HA_PG_BIN"; exit 1; }
if [ "$(id -u)" = 0 ] && ! id "$HA_RUN_AS" >/dev/null 2>&1; then
    ha_log "user $HA_RUN_AS does not exist"; exit 1
fi

# ---------------------------------------------------------------- already up?
running=0
ha_pid_alive "$HA_DIR/etcd.pid" && running=$((running + 1))
ha_pid_alive "$HA_DIR/haproxy.pid" && running=$((running + 1))
for n in "${HA_NODES[@]}"; do ha_pid_alive "$HA_DIR/$n/patroni.pid" && running=$((running + 1)); done
if [ "$running" = 5 ] && ha_psql "$HA_PRIMARY_PORT" -d "$HA_DATABASE" -qAtc 'select 1' >/dev/null 2>&1; then
    ha_log "already up (down.sh stops it)"
    ha_patronictl list >&2 || true
    echo "DATABASE_URL=$(ha_database_url)"
    exit 0
fi
if [ "$running" -gt 0 ] || [ -e "$HA_DIR/$HA_MARKER" ]; then
    ha_log "a partial or unhealthy cluster is in $HA_DIR: stopping it first"
    bash "$HERE/down.sh"
fi

# ---------------------------------------------------------------- ports free?
for port in "$HA_ETCD_CLIENT_PORT" "$HA_ETCD_PEER_PORT" "${HA_PG_PORTS[@]}" "${HA_REST_PORTS[@]}" \
    "$HA_PRIMARY_PORT" "$HA_REPLICA_PORT" "$HA_STATS_PORT"; do
    if ss -Hltn "sport = :$port" | grep -q .; then
        ha_log "port $port is in use; set the HA_*_PORT variables (see deploy/ha/common.sh)"
        exit 1
    fi
done

# ---------------------------------------------------------------- configuration
if [ -e "$HA_DIR" ] && [ -n "$(ls -A "$HA_DIR")" ]; then
    ha_log "$HA_DIR exists and is not ours (no $HA_MARKER); refusing to use it"
    exit 1
fi
mkdir -p "$HA_DIR"
touch "$HA_DIR/$HA_MARKER"
mkdir -p "$HA_DIR/etcd"
for i in 0 1 2; do
    n=${HA_NODES[$i]}
    mkdir -p "$HA_DIR/$n"
    cat >"$HA_DIR/$n/patroni.yml" <<YAML
scope: $HA_SCOPE
namespace: /boxoffice-ha/
name: $n

restapi:
  listen: 127.0.0.1:${HA_REST_PORTS[$i]}
  connect_address: 127.0.0.1:${HA_REST_PORTS[$i]}

etcd3:
  hosts: 127.0.0.1:$HA_ETCD_CLIENT_PORT

bootstrap:
  # Written to etcd once, when the cluster is initialised; change later with
  # "patronictl edit-config".
  dcs:
    # Leader lease: the primary renews its key every loop_wait; if it stops (the node died)
    # the key expires after ttl and a synchronous standby takes over. Patroni requires
    # loop_wait + 2 * retry_timeout <= ttl.
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    # Restart a crashed primary in place (crash recovery) for up to this long before failing
    # over. In place keeps the topology; HAProxy's check keeps writes away meanwhile.
    primary_start_timeout: 300
    # A commit returns only once one standby has flushed it. Not strict: with no standby
    # left the primary goes on alone rather than blocking every write.
    synchronous_mode: true
    synchronous_mode_strict: false
    synchronous_node_count: 1
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        max_connections: 200
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 256MB
        wal_log_hints: "on"
        synchronous_commit: "on"
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - data-checksums

postgresql:
  listen: 127.0.0.1:${HA_PG_PORTS[$i]}
  connect_address: 127.0.0.1:${HA_PG_PORTS[$i]}
  data_dir: $HA_DIR/$n/data
  bin_dir: $HA_PG_BIN
  pgpass: $HA_DIR/$n/pgpass
  authentication:
    superuser:
      username: postgres
      password: $HA_SUPERUSER_PASSWORD
    replication:
      username: replicator
      password: $HA_REPLICATION_PASSWORD
  parameters:
    unix_socket_directories: $HA_DIR/$n
    logging_collector: "on"
    log_directory: log
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 scram-sha-256
    - host replication replicator 127.0.0.1/32 scram-sha-256

tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
YAML
done

# The check on the primary port. Patroni 3.0's /primary, /read-write and /leader all answer
# 200 as long as the node holds the leader key, whatever PostgreSQL is doing: a primary that
# crashed is restarted in place read-only first (in recovery) while still holding the key, and
# writes routed to it fail with 25006. The JSON body says more: "state": "running" only when
# Patroni's status query just succeeded (else "unknown", "starting", "crashed", ...), and then
# "role" is read from pg_is_in_recovery() ("master" only out of recovery; when the query fails
# it is Patroni's cached role, which stays "master" after a crash). So: 200 AND running AND
# master.
cat >"$HA_DIR/haproxy.cfg" <<CFG
global
    maxconn 1000
    log stdout format raw local0 info

defaults
    mode tcp
    log global
    option tcplog
    retries 2
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 2s

listen stats
    mode http
    bind 127.0.0.1:$HA_STATS_PORT
    stats enable
    stats uri /

listen primary
    bind 127.0.0.1:$HA_PRIMARY_PORT
    option httpchk
    http-check send meth GET uri /primary
    http-check expect status 200
    http-check expect string "\"state\": \"running\""
    http-check expect string "\"role\": \"master\""
    default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 2 on-marked-down shutdown-sessions
$(for i in 0 1 2; do echo "    server ${HA_NODES[$i]} 127.0.0.1:${HA_PG_PORTS[$i]} maxconn 300 check port ${HA_REST_PORTS[$i]}"; done)

listen replicas
    bind 127.0.0.1:$HA_REPLICA_PORT
    balance roundrobin
    option httpchk
    http-check send meth GET uri /replica
    http-check expect status 200
    default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 2 on-marked-down shutdown-sessions
$(for i in 0 1 2; do echo "    server ${HA_NODES[$i]} 127.0.0.1:${HA_PG_PORTS[$i]} maxconn 300 check port ${HA_REST_PORTS[$i]}"; done)
CFG
haproxy -c -q -f "$HA_DIR/haproxy.cfg"

if [ "$(id -u)" = 0 ]; then chown -R "$HA_RUN_AS:" "$HA_DIR"; fi
chmod 700 "$HA_DIR"

# ---------------------------------------------------------------- start
ha_log "starting etcd on 127.0.0.1:$HA_ETCD_CLIENT_PORT"
ha_spawn "$HA_DIR/etcd.log" "$HA_DIR/etcd.pid" etcd \
    --name boxoffice-ha --data-dir "$HA_DIR/etcd/data" \
    --listen-client-urls "http://127.0.0.1:$HA_ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$HA_ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$HA_ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$HA_ETCD_PEER_PORT" \
    --initial-cluster "boxoffice-ha=http://127.0.0.1:$HA_ETCD_PEER_PORT" \
    --initial-cluster-state new
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$HA_ETCD_CLIENT_PORT/health" 2>/dev/null | grep -q '"true"' && break
    sleep 0.2
done
curl -fsS "http://127.0.0.1:$HA_ETCD_CLIENT_PORT/health" | grep -q '"true"' ||
    { ha_log "etcd did not become healthy; see $HA_DIR/etcd.log"; exit 1; }

for n in "${HA_NODES[@]}"; do
    ha_log "starting patroni $n"
    ha_spawn "$HA_DIR/$n/patroni.log" "$HA_DIR/$n/patroni.pid" patroni "$HA_DIR/$n/patroni.yml"
done

ha_log "starting haproxy: primary 127.0.0.1:$HA_PRIMARY_PORT, replicas 127.0.0.1:$HA_REPLICA_PORT, stats http://127.0.0.1:$HA_STATS_PORT/"
ha_spawn "$HA_DIR/haproxy.log" "$HA_DIR/haproxy.pid" haproxy -db -f "$HA_DIR/haproxy.cfg"

# ---------------------------------------------------------------- wait
wait_for() { # seconds, description, command...
    local secs=$1 what=$2
    shift 2
    local deadline=$(($(date +%s) + secs))
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            ha_log "timed out waiting for $what; logs in $HA_DIR/*.log, $HA_DIR/node*/patroni.log"
            ha_patronictl list >&2 || true
            exit 1
        fi
        sleep 0.5
    done
    ha_log "$what: ok"
}

leader_port() {
    local i
    for i in 0 1 2; do
        if curl -fsS "http://127.0.0.1:${HA_REST_PORTS[$i]}/primary" 2>/dev/null | grep -q '"role": "master"'; then
            echo "${HA_PG_PORTS[$i]}"
            return 0
        fi
    done
    return 1
}
both_standbys_streaming() {
    local port
    port=$(leader_port) || return 1
    [ "$(ha_psql "$port" -qAtc "select count(*) filter (where state = 'streaming') || ' ' || count(*) filter (where sync_state = 'sync') from pg_stat_replication")" = "2 1" ]
}
write_through_haproxy() {
    ha_psql "$HA_PRIMARY_PORT" -d postgres -qc 'create table if not exists ha_probe(x int)' &&
        ha_psql "$HA_PRIMARY_PORT" -d postgres -qc 'insert into ha_probe values (1)'
}

wait_for 120 "a leader" leader_port
wait_for 180 "both standbys streaming, one synchronous" both_standbys_streaming
wait_for 30 "a write through haproxy on $HA_PRIMARY_PORT" write_through_haproxy

if [ -z "$(ha_psql "$HA_PRIMARY_PORT" -d postgres -qAtc "select 1 from pg_database where datname = '$HA_DATABASE'")" ]; then
    ha_psql "$HA_PRIMARY_PORT" -d postgres -qc "create database $HA_DATABASE"
fi

ha_patronictl list >&2
ha_log "up in $(($(date +%s) - START)) s; patronictl: patronictl -c $HA_DIR/node1/patroni.yml list"
echo "DATABASE_URL=$(ha_database_url)"
