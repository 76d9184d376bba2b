# Shared settings for deploy/ha/up.sh and deploy/ha/down.sh. Sourced, not run.
#
# A local, loopback-only PostgreSQL 15 cluster: one etcd, three Patroni nodes, HAProxy.
# Every port is overridable by the environment. The passwords are fixed and public: this
# cluster is for trying failover on one machine, never for data that matters.

HA_DIR=${BOXOFFICE_HA_DIR:-/tmp/boxoffice-ha}
HA_ETCD_CLIENT_PORT=${HA_ETCD_CLIENT_PORT:-23790}
HA_ETCD_PEER_PORT=${HA_ETCD_PEER_PORT:-23800}
HA_PG_PORTS=(${HA_PG_PORT_1:-5441} ${HA_PG_PORT_2:-5442} ${HA_PG_PORT_3:-5443})
HA_REST_PORTS=(${HA_REST_PORT_1:-8011} ${HA_REST_PORT_2:-8012} ${HA_REST_PORT_3:-8013})
HA_PRIMARY_PORT=${HA_PRIMARY_PORT:-5440}
HA_REPLICA_PORT=${HA_REPLICA_PORT:-5439}
HA_STATS_PORT=${HA_STATS_PORT:-8010}
HA_PG_BIN=${HA_PG_BIN:-/usr/lib/postgresql/15/bin}
HA_SCOPE=boxoffice
HA_SUPERUSER_PASSWORD=boxoffice-ha-local
HA_REPLICATION_PASSWORD=boxoffice-ha-replication
HA_DATABASE=boxoffice
HA_MARKER=.boxoffice-ha
HA_NODES=(node1 node2 node3)

# PostgreSQL refuses to run as root: when root, everything runs as this user.
HA_RUN_AS=${HA_RUN_AS:-postgres}

ha_database_url() {
    echo "postgres://postgres:${HA_SUPERUSER_PASSWORD}@127.0.0.1:${HA_PRIMARY_PORT}/${HA_DATABASE}"
}

# Runs "$@" as $HA_RUN_AS when we are root, else as ourselves.
ha_as_user() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid="$HA_RUN_AS" --regid="$HA_RUN_AS" --init-groups \
            env HOME="$HA_DIR" USER="$HA_RUN_AS" "$@"
    else
        "$@"
    fi
}

# Starts "$@" in the background, detached, as $HA_RUN_AS, logging to $1 and recording its pid
# in $2 (the pid of the program itself, which the shell execs).
ha_spawn() {
    local log=$1 pidfile=$2
    shift 2
    ha_as_user setsid sh -c 'echo $$ > "$0"; exec "$@"' "$pidfile" "$@" \
        >"$log" 2>&1 </dev/null &
}

ha_pid_alive() { # pidfile
    [ -s "$1" ] && kill -0 "$(head -n1 "$1")" 2>/dev/null
}

ha_patronictl() {
    ha_as_user patronictl -c "$HA_DIR/node1/patroni.yml" "$@"
}

# psql against a port on loopback as the superuser.
ha_psql() { # port, psql arguments...
    local port=$1
    shift
    PGPASSWORD=$HA_SUPERUSER_PASSWORD PGCONNECT_TIMEOUT=3 \
        psql -X -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1 "$@"
}

ha_log() { echo "[ha $(date +%T)] $*" >&2; }
