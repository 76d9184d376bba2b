#!/usr/bin/env bash
# Black-box tests: start `boxoffice serve` on a free port with a fresh embedded PostgreSQL
# in a temporary directory, run the BATS suite in tests/bats against it, then stop the
# server with SIGTERM and remove the directory. Fails if any test fails or if the server
# does not exit 0. The server's setup is shared with tests/fuzz/run.sh (tests/lib/server.sh).
#
# Needs bats, jq and curl, and PostgreSQL's server binaries (like `cargo test`).
# BOXOFFICE_BIN=path/to/boxoffice uses that binary instead of building a debug one.
# Extra arguments are passed to bats, e.g. `tests/bats/run.sh --filter cancel`.
set -euo pipefail
cd "$(dirname "$0")/../.."

# shellcheck source=tests/bats/helpers.bash
source tests/bats/helpers.bash

boxoffice_require bats jq curl || {
  echo "run.sh: Debian: apt-get install bats jq curl" >&2
  exit 1
}
boxoffice_find_bin

started=$SECONDS
boxoffice_suite_start bats --hold-seconds 600 --sweep-interval-ms 1000
export BOXOFFICE_URL=$SERVER_URL
echo "run.sh: boxoffice (pid $SERVER_PID) serving at $BOXOFFICE_URL after $((SECONDS - started))s"

# TAP output, kept to check that no test was skipped: a skipped test proves nothing.
tap=$(mktemp /tmp/boxoffice-bats-tap.XXXXXX)
bats_status=0
bats --tap tests/bats "$@" | tee "$tap" || bats_status=$? # pipefail: bats' own status
if grep -q '# skip' "$tap"; then
  echo "run.sh: tests were skipped; every test must run:" >&2
  grep '# skip' "$tap" >&2
  [ "$bats_status" -ne 0 ] || bats_status=1
fi
rm -f "$tap"
if [ "$bats_status" -ne 0 ]; then
  kept_log=${BOXOFFICE_BATS_SERVER_LOG:-/tmp/boxoffice-bats-server.log}
  cp "$SERVER_LOG" "$kept_log" || true
  echo "run.sh: bats failed (status $bats_status); the server's full log is kept in $kept_log;" \
    "its last lines but requests:" >&2
  grep -v 'boxoffice::request' "$SERVER_LOG" | tail -n 40 >&2 || true
fi

boxoffice_suite_stop || exit 1
echo "run.sh: server stopped cleanly; suite took $((SECONDS - started))s"
exit "$bats_status"
