# Shared by tests/bats/run.sh and tests/bats/boxoffice.bats: start and stop a
# `boxoffice serve`, and talk to it with curl and jq.
#
# The helpers use no `set -e` of their own, so that sourcing them changes nothing.

# ---------------------------------------------------------------------------
# Server lifecycle
# ---------------------------------------------------------------------------

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

# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

# req METHOD PATH [JSON_BODY] [FINGERPRINT]
# One request to $BOXOFFICE_URL. Sets HTTP_STATUS and BODY; never fails by itself (curl
# errors leave HTTP_STATUS=000), so call it directly, not through `run`.
# A connection that could not be made at all (curl exit 7: the request never left) is
# tried again, up to 3 times, with a note on the test output; nothing else is retried.
req() {
  local method=$1 path=$2 body=${3:-} fingerprint=${4:-}
  local out="${BATS_TEST_TMPDIR:-/tmp}/response.$$"
  local args=(-sS -X "$method" -o "$out" -w '%{http_code}' --max-time 30)
  if [ -n "$fingerprint" ]; then
    args+=(-H "X-Device-Fingerprint: $fingerprint")
  fi
  if [ -n "$body" ]; then
    args+=(-H 'Content-Type: application/json' --data-binary "$body")
  fi
  local attempt curl_status
  for attempt in 1 2 3 4; do
    curl_status=0
    HTTP_STATUS=$(curl "${args[@]}" "$BOXOFFICE_URL$path") || curl_status=$?
    [ "$curl_status" -eq 7 ] && [ "$attempt" -lt 4 ] || break
    note "could not connect for $method $path (attempt $attempt); trying again"
    sleep 0.2
  done
  [ "$curl_status" -eq 0 ] || HTTP_STATUS=000
  BODY=$(cat "$out" 2>/dev/null || true)
  rm -f "$out"
}

# A line on the test run's own output (bats' fd 3) when there is one, else on stderr.
note() {
  if { true >&3; } 2>/dev/null; then
    echo "# note: $*" >&3
  else
    echo "note: $*" >&2
  fi
}

# A jq filter applied to BODY, raw output.
json() {
  jq -r "$1" <<<"$BODY"
}

assert_status() {
  if [ "$HTTP_STATUS" != "$1" ]; then
    echo "expected HTTP $1, got $HTTP_STATUS; body: $BODY" >&2
    return 1
  fi
}

# assert_json FILTER EXPECTED: jq -r FILTER on BODY must print EXPECTED.
assert_json() {
  local got
  got=$(jq -r "$1" <<<"$BODY") || {
    echo "the body is not JSON: $BODY" >&2
    return 1
  }
  if [ "$got" != "$2" ]; then
    echo "$1: expected '$2', got '$got'; body: $BODY" >&2
    return 1
  fi
}

# assert_eq WHAT EXPECTED ACTUAL
assert_eq() {
  if [ "$2" != "$3" ]; then
    echo "$1: expected '$2', got '$3'" >&2
    return 1
  fi
}

# create_event TOTAL [MAX_PER_FINGERPRINT]: creates an event with a unique name and prints its id.
create_event() {
  local total=$1 cap=${2:-null}
  local name="bats ${BATS_TEST_NUMBER:-0} $(date +%s%N) $RANDOM"
  req POST /events "{\"name\":\"$name\",\"date\":\"2030-06-01T19:30:00Z\",\"totalTickets\":$total,\"maxTicketsPerFingerprint\":$cap}"
  assert_status 201 || return 1
  assert_json .availableTickets "$total" || return 1
  json .id
}

# assert_counts EVENT_ID AVAILABLE RESERVED PURCHASED: the event's live counts, and that
# they add up to its total.
assert_counts() {
  req GET "/events/$1"
  assert_status 200 || return 1
  assert_json .availableTickets "$2" || return 1
  assert_json .reservedTickets "$3" || return 1
  assert_json .purchasedTickets "$4" || return 1
  assert_json '.availableTickets + .reservedTickets + .purchasedTickets == .totalTickets' true
}
