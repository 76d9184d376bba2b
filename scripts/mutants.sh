#!/usr/bin/env bash
# Mutation testing, with cargo-mutants (`cargo install cargo-mutants --locked`), of the
# decision code this branch changes against a base git ref (default: main). Not part of
# every CI run: a full run takes about 45 minutes on two cores, a mutant about a minute.
#
#   scripts/mutants.sh [BASE_REF]
#
# Which files count as decision code is .cargo/mutants.toml's `examine_globs`; only the lines
# the diff touches in them are mutated. Pure domain modules are judged by the unit tests;
# the services by the unit tests and the integration tests that drive them (SERVICE_TESTS).
# Exit status: 0 when every mutant is caught or unviable, otherwise the first failing run's
# cargo-mutants code (2 missed, 3 timeout, 4 baseline failed). Results: target/mutants.out/.
# See docs/testing.md, "Mutation testing".
set -euo pipefail
cd "$(dirname "$0")/.."

base="${1:-main}"
# libtest name filters for the service modules: the idempotency suite (tests/api/idempotency/,
# with the tests written for its mutants in waits.rs). Its purchases go through the coalescer
# (batched is the default mode).
SERVICE_TESTS=(idempotency)

# A lasting target directory: the scratch copies are built there, so after the first run
# only this crate is rebuilt per mutant, never the dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/mutants}"

diff_file="$(mktemp)"
trap 'rm -f "$diff_file"' EXIT
# From where this branch left BASE_REF (not BASE_REF's tip, which may have moved on) to the
# working tree, so that uncommitted changes count too.
git diff "$(git merge-base "$base" HEAD)" -- src/ >"$diff_file"
mkdir -p target/mutants.out

status=0
# run NAME FILTER REGEX CARGO_TEST_ARGS...: one cargo-mutants run over the diff's mutants
# whose names match (FILTER -F) or do not match (FILTER -E) REGEX.
run() {
  local name="$1" filter="$2" regex="$3"
  shift 3
  local listed
  listed="$(cargo mutants --in-diff "$diff_file" "$filter" "$regex" --list)"
  if ! grep -q '^src/' <<<"$listed"; then
    echo "mutants ($name): the diff touches no decision code"
    return
  fi
  local code=0
  cargo mutants --in-diff "$diff_file" "$filter" "$regex" -j 1 --timeout 300 \
    -o "target/mutants.out/$name" -- "$@" || code=$?
  if [ "$code" -ne 0 ] && [ "$status" -eq 0 ]; then
    status=$code
  fi
}

run domain -F '^src/domain/' --lib
run services -E '^src/domain/' --lib --test api -- "${SERVICE_TESTS[@]}"
exit "$status"
