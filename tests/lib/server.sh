# A `boxoffice serve` for the scripts that test it from outside: the BATS suite
# (tests/bats/run.sh and the tests in tests/bats/boxoffice.bats that start a server of their
# own) and the fuzzing run (tests/fuzz/run.sh). Sourced, never run; uses no `set -e` of its
# own, so that sourcing it changes nothing.
#
# For a suite script:
#   boxoffice_require TOOL...      fail unless each tool is on PATH
#   boxoffice_find_bin             BOXOFFICE_BIN, built (debug) unless already given
#   boxoffice_suite_start NAME [SERVE FLAG...]
#                                  a server on a fresh embedded PostgreSQL in a temporary
#                                  directory that is removed at exit; stopped at exit too
#   boxoffice_suite_stop           SIGTERM; fails, with the log's end, unless it exits 0
# For a single server:
#   boxoffice_start DATA_DIR [SERVE FLAG...] / boxoffice_stop DATA_DIR

# boxoffice_require TOOL...: fails, naming the first missing tool, unless all are on PATH.
boxoffice_require() {
  local tool
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "$(basename "$0"): $tool is required" >&2
      return 1
    fi
  done
}

# boxoffice_find_bin: sets and exports BOXOFFICE_BIN as an absolute path. Without
# BOXOFFICE_BIN, builds the debug binary and takes its path from cargo's own report (so a
# configured target directory is found too). With the whole workspace's features, as
# `cargo test --workspace` built it: after the tests, no rebuild.
boxoffice_find_bin() {
  if [ -z "${BOXOFFICE_BIN:-}" ]; then
    BOXOFFICE_BIN=$(cargo build --workspace --bin boxoffice --message-format=json-render-diagnostics |
      sed -n '/"reason":"compiler-artifact"/s/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
  fi
  if [ ! -x "$BOXOFFICE_BIN" ]; then
    echo "$(basename "$0"): no boxoffice binary at '$BOXOFFICE_BIN'" >&2
    return 1
  fi
  BOXOFFICE_BIN=$(realpath "$BOXOFFICE_BIN")
  export BOXOFFICE_BIN
}

# A TCP port on 127.0.0.1 with nothing listening on it, below Linux's ephemeral range so
# that no outgoing connection takes it in the meantime.
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "free_port: no free port found" >&2
  return 1
}

# boxoffice_start DATA_DIR [SERVE FLAG...]
# Starts `$BOXOFFICE_BIN serve` on a free port with its embedded PostgreSQL under DATA_DIR
# (which must be reachable by the `postgres` user when running as root: keep it under
# /tmp; DATABASE_URL is ignored), waits for /health, and sets SERVER_PID, SERVER_URL and SERVER_LOG
# (DATA_DIR.log). Retries on another port if the chosen one was taken meanwhile.
boxoffice_start() {
  local data_dir=$1
  shift
  if [ -z "${BOXOFFICE_BIN:-}" ] || [ ! -x "$BOXOFFICE_BIN" ]; then
    echo "boxoffice_start: BOXOFFICE_BIN is not an executable: '${BOXOFFICE_BIN:-}'" >&2
    return 1
  fi
  SERVER_LOG="$data_dir.log"
  SERVER_PID=
  SERVER_URL=
  local attempt port pid deadline
  for attempt in 1 2 3 4 5; do
    port=$(free_port) || return 1
    # fd 3 is closed so that bats does not wait for the server when a test starts one;
    # NO_COLOR keeps the log free of terminal escapes; without DATABASE_URL the server
    # starts its own fresh PostgreSQL. Other BOXOFFICE_* settings pass through.
    env -u DATABASE_URL NO_COLOR=1 "$BOXOFFICE_BIN" serve --listen "127.0.0.1:$port" --data-dir "$data_dir" "$@" \
      >"$SERVER_LOG" 2>&1 3>&- </dev/null &
    pid=$!
    deadline=$((SECONDS + ${BOXOFFICE_START_TIMEOUT:-60}))
    while :; do
      if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null || true
        if grep -qi 'address already in use' "$SERVER_LOG"; then
          echo "boxoffice_start: port $port was taken (attempt $attempt); retrying" >&2
          continue 2
        fi
        echo "boxoffice_start: the server exited before it was healthy; its log:" >&2
        cat "$SERVER_LOG" >&2
        return 1
      fi
      if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/health" 2>/dev/null \
        && kill -0 "$pid" 2>/dev/null; then
        SERVER_PID=$pid
        SERVER_URL="http://127.0.0.1:$port"
        return 0
      fi
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "boxoffice_start: not healthy within ${BOXOFFICE_START_TIMEOUT:-60}s; its log:" >&2
        cat "$SERVER_LOG" >&2
        SERVER_PID=$pid
        boxoffice_stop "$data_dir" >/dev/null 2>&1
        SERVER_PID=
        return 1
      fi
      sleep 0.1
    done
  done
  echo "boxoffice_start: gave up after $attempt attempts" >&2
  return 1
}

# boxoffice_stop DATA_DIR
# Sends SIGTERM to SERVER_PID and waits (BOXOFFICE_STOP_TIMEOUT, default 30s). Returns the
# server's exit status; if it does not stop in time, kills it and its embedded PostgreSQL
# (found through DATA_DIR/postgres/postmaster.pid) and returns 1.
boxoffice_stop() {
  local data_dir=$1 pid=${SERVER_PID:-} deadline status
  [ -n "$pid" ] || return 0
  SERVER_PID=
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + ${BOXOFFICE_STOP_TIMEOUT:-30}))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "boxoffice_stop: server $pid did not stop within ${BOXOFFICE_STOP_TIMEOUT:-30}s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      local postmaster
      postmaster=$(head -n 1 "$data_dir/postgres/postmaster.pid" 2>/dev/null || true)
      if [ -n "$postmaster" ]; then
        kill -QUIT "$postmaster" 2>/dev/null || true
        for _ in $(seq 1 50); do
          kill -0 "$postmaster" 2>/dev/null || break
          sleep 0.1
        done
      fi
      return 1
    fi
    sleep 0.1
  done
  status=0
  wait "$pid" 2>/dev/null || status=$?
  return "$status"
}

# boxoffice_suite_start NAME [SERVE FLAG...]
# Makes BOXOFFICE_WORK (a temporary directory under /tmp, traversable because as root the
# embedded PostgreSQL runs as `postgres`), starts the server with its data in
# BOXOFFICE_WORK/data (see boxoffice_start: SERVER_PID, SERVER_URL, SERVER_LOG), and sets
# traps so that at exit the server is stopped and the directory removed.
boxoffice_suite_start() {
  local name=$1
  shift
  BOXOFFICE_WORK=$(mktemp -d "/tmp/boxoffice-$name.XXXXXX") || return 1
  chmod 755 "$BOXOFFICE_WORK"
  BOXOFFICE_DATA_DIR="$BOXOFFICE_WORK/data"
  SERVER_PID=
  trap _boxoffice_suite_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  boxoffice_start "$BOXOFFICE_DATA_DIR" "$@"
}

# boxoffice_suite_stop: stops the suite's server with SIGTERM. Returns its exit status; if
# that is not 0, prints the end of its log first.
boxoffice_suite_stop() {
  local stopped=0
  boxoffice_stop "$BOXOFFICE_DATA_DIR" || stopped=$?
  if [ "$stopped" -ne 0 ]; then
    echo "$(basename "$0"): the server did not exit cleanly on SIGTERM (status $stopped); the end of its log:" >&2
    tail -n 200 "$SERVER_LOG" >&2 || true
  fi
  return "$stopped"
}

# At exit: a server still running (the script stopped early) is stopped, and an unclean
# stop fails the script; the temporary directory is removed.
_boxoffice_suite_cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "${SERVER_PID:-}" ]; then
    boxoffice_suite_stop || [ "$status" -ne 0 ] || status=1
  fi
  rm -rf "$BOXOFFICE_WORK"
  exit "$status"
}
