# Shared by tests/bats/run.sh and tests/bats/boxoffice.bats: start and stop a
# `boxoffice serve` (tests/lib/server.sh), and talk to it with curl and jq.
#
# The helpers use no `set -e` of their own, so that sourcing them changes nothing.

# Server lifecycle (boxoffice_start, boxoffice_stop), shared with the fuzzing run.
# shellcheck source=tests/lib/server.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/server.sh"

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
# Its tickets cost 10.00 EUR, so that paying for them goes to the payment provider (a free
# order is confirmed without it).
create_event() {
  local total=$1 cap=${2:-null}
  local name="bats ${BATS_TEST_NUMBER:-0} $(date +%s%N) $RANDOM"
  req POST /events "{\"name\":\"$name\",\"date\":\"2030-06-01T19:30:00Z\",\"totalTickets\":$total,\"maxTicketsPerFingerprint\":$cap,\"price\":1000}"
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
