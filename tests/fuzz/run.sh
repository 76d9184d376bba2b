#!/usr/bin/env bash
# Fuzzed input: schemathesis generates requests from the OpenAPI document of a started
# `boxoffice serve` (fresh embedded PostgreSQL in a temporary directory, rate limits off)
# and checks every answer: no 5xx; status code, content type, headers and body as
# GET /openapi.json documents them; and a schema-valid request answered only with a status
# its operation may answer for valid input (positive_data_acceptance). Ticket read, pay and
# cancel get real holds and their buyer, made before the run. The settings, and the statuses
# each operation may answer, are in tests/fuzz/schemathesis.toml. The server is always stopped, and must exit 0 on SIGTERM
# without having logged an error.
#
# The server's setup is shared with tests/bats/run.sh (tests/lib/server.sh).
#
# Needs python3 (with venv and pip) and curl; schemathesis is installed once into a virtual
# environment under target/. Bounded: at most FUZZ_MAX_EXAMPLES cases per operation (default
# 500: about 7,000 requests, 6 minutes against a debug build on 2 busy cores; 100 takes
# about 70 s), with a fixed seed (FUZZ_SEED) so a CI failure reproduces.
# BOXOFFICE_BIN=path/to/boxoffice uses that binary instead of building a debug one.
# Extra arguments are passed to `st run`, e.g. `tests/fuzz/run.sh --include-path /events`.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
venv=${FUZZ_VENV:-target/fuzz-venv}
max_examples=${FUZZ_MAX_EXAMPLES:-500}
seed=${FUZZ_SEED:-20261124}

# boxoffice_find_bin, boxoffice_suite_start and boxoffice_suite_stop, shared with the
# black-box suite.
# shellcheck source=tests/lib/server.sh
source tests/lib/server.sh

boxoffice_require python3 curl

if [ "$("$venv/bin/st" --version 2>/dev/null || true)" != "st, version $SCHEMATHESIS_VERSION" ]; then
  echo "run.sh: installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
st=$(realpath "$venv/bin/st")

boxoffice_find_bin
config=$(realpath tests/fuzz/schemathesis.toml)

started=$SECONDS
boxoffice_suite_start fuzz --rate-limit-per-address 0 --rate-limit-per-fingerprint 0
echo "run.sh: boxoffice (pid $SERVER_PID) serving at $SERVER_URL"

# The `id` of the JSON object a POST answered 201 with; fails the run otherwise.
post_for_id() {
  local path=$1 body=$2
  shift 2
  curl -fsS --max-time 30 -H 'Content-Type: application/json' "$@" -d "$body" "$SERVER_URL$path" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}

# One event with ample stock for the purchase operation, and three holds of one buyer on it
# for reading, paying and cancelling, so that those operations reach a real allocation
# (see schemathesis.toml).
FUZZ_EVENT_ID=$(post_for_id /events \
  '{"name": "Fuzzing", "date": "2030-01-01T20:00:00Z", "totalTickets": 1000000}')
FUZZ_BUYER=fuzz-buyer
hold() { post_for_id "/events/$FUZZ_EVENT_ID/tickets" '{"quantity": 1}' -H "X-Device-Fingerprint: $FUZZ_BUYER"; }
FUZZ_READ_HOLD=$(hold)
FUZZ_PAY_HOLD=$(hold)
FUZZ_CANCEL_HOLD=$(hold)
# The event's default ticket type, and a quota to change, so the catalogue's item operations
# reach real rows.
FUZZ_TYPE_ID=$(curl -fsS --max-time 30 "$SERVER_URL/events/$FUZZ_EVENT_ID" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["ticketTypes"][0]["id"])')
quota() { post_for_id "/events/$FUZZ_EVENT_ID/quotas" "{\"name\": \"$1\", \"size\": 1000, \"ticketTypeIds\": []}"; }
FUZZ_QUOTA_ID=$(quota "Fuzz quota")
# A paid hold and one of its admissions, for the QR code; a door token of the run's event
# (made beside the running server, as an operator would), for the check-in routes.
FUZZ_PAID_HOLD=$(hold)
FUZZ_ADMISSION_ID=$(curl -fsS --max-time 30 -H 'Content-Type: application/json' \
  -H "X-Device-Fingerprint: $FUZZ_BUYER" -d '{"paymentToken": "tok_visa"}' \
  "$SERVER_URL/tickets/$FUZZ_PAID_HOLD/payment" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["admissions"][0]["id"])')
FUZZ_DOOR_TOKEN=$("$BOXOFFICE_BIN" tokens create --scope door --event "$FUZZ_EVENT_ID" \
  --data-dir "$BOXOFFICE_DATA_DIR" 2>/dev/null)
# A sold-out event of one ticket (held by another buyer), so that joins of its waiting list
# reach the line; an entry of the run's buyer to read, and one of a second buyer to leave.
FUZZ_SOLD_OUT_EVENT_ID=$(post_for_id /events \
  '{"name": "Fuzzing sold out", "date": "2030-01-01T20:00:00Z", "totalTickets": 1}')
post_for_id "/events/$FUZZ_SOLD_OUT_EVENT_ID/tickets" '{"quantity": 1}' \
  -H "X-Device-Fingerprint: fuzz-holder" >/dev/null
FUZZ_ENTRY_ID=$(post_for_id "/events/$FUZZ_SOLD_OUT_EVENT_ID/waiting-list" '{"quantity": 1}' \
  -H "X-Device-Fingerprint: $FUZZ_BUYER")
FUZZ_LEAVER=fuzz-leaver
FUZZ_LEAVE_ENTRY_ID=$(post_for_id "/events/$FUZZ_SOLD_OUT_EVENT_ID/waiting-list" '{"quantity": 1}' \
  -H "X-Device-Fingerprint: $FUZZ_LEAVER")
export FUZZ_EVENT_ID FUZZ_BUYER FUZZ_READ_HOLD FUZZ_PAY_HOLD FUZZ_CANCEL_HOLD FUZZ_TYPE_ID \
  FUZZ_QUOTA_ID FUZZ_PAID_HOLD FUZZ_ADMISSION_ID FUZZ_DOOR_TOKEN FUZZ_SOLD_OUT_EVENT_ID \
  FUZZ_ENTRY_ID FUZZ_LEAVER FUZZ_LEAVE_ENTRY_ID FUZZ_WORK_DIR=$BOXOFFICE_WORK

st_status=0
(cd "$BOXOFFICE_WORK" && "$st" --config-file "$config" run "$SERVER_URL/openapi.json" \
  --max-examples "$max_examples" --seed "$seed" --workers 1 --output-sanitize false \
  --no-color "$@") || st_status=$?

stopped=0
boxoffice_suite_stop || stopped=$?
errors=$(grep -E '\bERROR\b' "$SERVER_LOG" || true)
if [ -n "$errors" ]; then
  echo "run.sh: the server logged errors:" >&2
  echo "$errors" | tail -n 40 >&2
fi
echo "run.sh: fuzzing took $((SECONDS - started))s"
if [ "$st_status" -ne 0 ] || [ "$stopped" -ne 0 ] || [ -n "$errors" ]; then
  exit 1
fi
