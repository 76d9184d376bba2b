#!/usr/bin/env bash
# Black-box tests: start `boxoffice serve` on a free port with a fresh embedded PostgreSQL
# in a temporary directory, run the BATS suite in tests/bats against it, then stop the
# server with SIGTERM and remove the directory. Fails if any test fails or if the server
# does not exit 0.
#
# Needs bats, jq and curl, and PostgreSQL's server binaries (like `cargo test`).
# BOXOFFICE_BIN=path/to/boxoffice uses that binary instead of building a debug one.
# Extra arguments are passed to bats, e.g. `tests/bats/run.sh --filter cancel`.
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in bats jq curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "run.sh: $tool is required (Debian: apt-get install bats jq curl)" >&2
    exit 1
  fi
done

if [ -z "${BOXOFFICE_BIN:-}" ]; then
  BOXOFFICE_BIN=$(cargo build --bin boxoffice --message-format=json-render-diagnostics |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "boxoffice"
                  and .executable != null) | .executable' | tail -n 1)
fi
if [ ! -x "$BOXOFFICE_BIN" ]; then
  echo "run.sh: no boxoffice binary at '$BOXOFFICE_BIN'" >&2
  exit 1
fi
BOXOFFICE_BIN=$(realpath "$BOXOFFICE_BIN")
export BOXOFFICE_BIN

# shellcheck source=tests/bats/helpers.bash
source tests/bats/helpers.bash

# Under /tmp and traversable, because as root the embedded PostgreSQL runs as `postgres`.
work=$(mktemp -d /tmp/boxoffice-bats.XXXXXX)
chmod 755 "$work"
data_dir="$work/data"
SERVER_PID=

cleanup() {
  local status=$? stopped=0
  trap - EXIT INT TERM
  if [ -n "$SERVER_PID" ]; then
    boxoffice_stop "$data_dir" || stopped=$?
    if [ "$stopped" -ne 0 ]; then
      echo "run.sh: the server did not exit cleanly on SIGTERM (status $stopped); its log:" >&2
      cat "$data_dir.log" >&2 || true
      [ "$status" -ne 0 ] || status=1
    fi
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=$SECONDS
boxoffice_start "$data_dir" --hold-seconds 600 --sweep-interval-ms 1000
export BOXOFFICE_URL=$SERVER_URL
echo "run.sh: boxoffice (pid $SERVER_PID) serving at $BOXOFFICE_URL after $((SECONDS - started))s"

bats_status=0
bats tests/bats "$@" || bats_status=$?
if [ "$bats_status" -ne 0 ]; then
  kept_log=${BOXOFFICE_BATS_SERVER_LOG:-/tmp/boxoffice-bats-server.log}
  cp "$data_dir.log" "$kept_log" || true
  echo "run.sh: bats failed (status $bats_status); the server's full log is kept in $kept_log;" \
    "its last lines but requests:" >&2
  grep -v 'boxoffice::request' "$data_dir.log" | tail -n 40 >&2 || true
fi

stopped=0
boxoffice_stop "$data_dir" || stopped=$?
if [ "$stopped" -ne 0 ]; then
  echo "run.sh: the server did not exit cleanly on SIGTERM (status $stopped); its log:" >&2
  cat "$data_dir.log" >&2
  exit 1
fi
echo "run.sh: server stopped cleanly; suite took $((SECONDS - started))s"
exit "$bats_status"
