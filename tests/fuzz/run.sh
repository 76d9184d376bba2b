#!/usr/bin/env bash
# Fuzzed input: schemathesis generates requests from the OpenAPI document of a started
# `boxoffice serve` (fresh embedded PostgreSQL in a temporary directory, rate limits off)
# and checks every answer: no 5xx, and status code, content type, headers and body as
# GET /openapi.json documents them. Settings and the checks left out (with why) are in
# tests/fuzz/schemathesis.toml. The server is always stopped, and must exit 0 on SIGTERM
# without having logged an error.
#
# Needs python3 (with venv and pip) and curl; schemathesis is installed once into a virtual
# environment under target/. Bounded: at most FUZZ_MAX_EXAMPLES cases per operation (default
# 500, about a minute in all), with a fixed seed (FUZZ_SEED) so a CI failure reproduces.
# BOXOFFICE_BIN=path/to/boxoffice uses that binary instead of building a debug one.
# Extra arguments are passed to `st run`, e.g. `tests/fuzz/run.sh --include-path /events`.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
venv=${FUZZ_VENV:-target/fuzz-venv}
max_examples=${FUZZ_MAX_EXAMPLES:-500}
seed=${FUZZ_SEED:-20261124}

for tool in python3 curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "run.sh: $tool is required" >&2
    exit 1
  fi
done

if [ "$("$venv/bin/st" --version 2>/dev/null || true)" != "st, version $SCHEMATHESIS_VERSION" ]; then
  echo "run.sh: installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
st=$(realpath "$venv/bin/st")

if [ -z "${BOXOFFICE_BIN:-}" ]; then
  cargo build --quiet --bin boxoffice
  BOXOFFICE_BIN=${CARGO_TARGET_DIR:-target}/debug/boxoffice
fi
if [ ! -x "$BOXOFFICE_BIN" ]; then
  echo "run.sh: no boxoffice binary at '$BOXOFFICE_BIN'" >&2
  exit 1
fi
BOXOFFICE_BIN=$(realpath "$BOXOFFICE_BIN")
export BOXOFFICE_BIN

# boxoffice_start and boxoffice_stop, shared with the black-box suite.
# shellcheck source=tests/bats/helpers.bash
source tests/bats/helpers.bash

# Under /tmp and traversable, because as root the embedded PostgreSQL runs as `postgres`.
work=$(mktemp -d /tmp/boxoffice-fuzz.XXXXXX)
chmod 755 "$work"
data_dir="$work/data"
config=$(realpath tests/fuzz/schemathesis.toml)
SERVER_PID=

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$SERVER_PID" ]; then
    boxoffice_stop "$data_dir" || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=$SECONDS
boxoffice_start "$data_dir" --rate-limit-per-address 0 --rate-limit-per-fingerprint 0
echo "run.sh: boxoffice (pid $SERVER_PID) serving at $SERVER_URL"

# One event with ample stock for the purchase operation (see schemathesis.toml).
event=$(curl -fsS --max-time 30 -H 'Content-Type: application/json' \
  -d '{"name": "Fuzzing", "date": "2030-01-01T20:00:00Z", "totalTickets": 1000000}' \
  "$SERVER_URL/events")
FUZZ_EVENT_ID=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' <<<"$event")
export FUZZ_EVENT_ID FUZZ_WORK_DIR=$work

st_status=0
(cd "$work" && "$st" --config-file "$config" run "$SERVER_URL/openapi.json" \
  --max-examples "$max_examples" --seed "$seed" --workers 1 --output-sanitize false \
  --no-color "$@") || st_status=$?

stopped=0
boxoffice_stop "$data_dir" || stopped=$?
errors=$(grep -E '\bERROR\b' "$data_dir.log" || true)
if [ -n "$errors" ]; then
  echo "run.sh: the server logged errors:" >&2
  echo "$errors" | tail -n 40 >&2
fi
if [ "$stopped" -ne 0 ]; then
  echo "run.sh: the server did not exit cleanly on SIGTERM (status $stopped); its log:" >&2
  tail -n 40 "$data_dir.log" >&2
fi
echo "run.sh: fuzzing took $((SECONDS - started))s"
if [ "$st_status" -ne 0 ] || [ "$stopped" -ne 0 ] || [ -n "$errors" ]; then
  exit 1
fi
