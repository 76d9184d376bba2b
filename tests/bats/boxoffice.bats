#!/usr/bin/env bats
# Black-box tests of Boxoffice: curl and jq against a running `boxoffice serve`.
#
# tests/bats/run.sh starts the server and runs this file; to run it by hand against a
# server of your own (with the default hold of 600 s, so holds do not lapse mid-test):
#
#   BOXOFFICE_URL=http://127.0.0.1:8080 BOXOFFICE_BIN=target/debug/boxoffice bats tests/bats
#
# Two tests (expiry with a short hold, and per-request mode) start a server of their own
# from BOXOFFICE_BIN; without it, setup_file builds the debug binary and uses that (as
# run.sh does), and fails if there is none: no test is skipped.

setup_file() {
  load helpers
  # From the repository's root, where cargo finds the package.
  local found=0
  pushd "$BATS_TEST_DIRNAME/../.." >/dev/null || return 1
  boxoffice_find_bin || found=$?
  popd >/dev/null || return 1
  if [ "$found" -ne 0 ]; then
    echo "no boxoffice binary: set BOXOFFICE_BIN, or let cargo build one" >&2
    return 1
  fi
  if [ -z "${BOXOFFICE_URL:-}" ]; then
    echo "BOXOFFICE_URL is not set: run tests/bats/run.sh, or point it at a running server" >&2
    return 1
  fi
  if ! curl -fsS -o /dev/null --max-time 5 "$BOXOFFICE_URL/health"; then
    echo "no healthy Boxoffice at $BOXOFFICE_URL" >&2
    return 1
  fi
}

setup() {
  load helpers
}

teardown() {
  # Only the expiry and per-request tests start a server of their own.
  if [ -n "${SERVER_PID:-}" ]; then
    boxoffice_stop "$SHORT_HOLD_DIR/data" || true
  fi
  if [ -n "${SHORT_HOLD_DIR:-}" ]; then
    rm -rf "$SHORT_HOLD_DIR"
  fi
}

# purchase EVENT_ID QUANTITY FINGERPRINT
purchase() {
  req POST "/events/$1/tickets" "{\"quantity\":$2}" "$3"
}

@test "2000 concurrent buyers for 100 tickets: exactly 100 get one, 1900 are told it is sold out" {
  event=$(create_event 100)
  dir="$BATS_TEST_TMPDIR/buyers"
  mkdir -p "$dir"

  # 2000 buyers, each with their own device, 64 requests in flight at any moment. Each
  # response body goes to its own file; the status codes are collected in one list.
  seq 1 2000 | xargs -P 64 -I{} curl -sS --max-time 60 -o "$dir/{}.json" -w '%{http_code}\n' \
    -X POST -H 'Content-Type: application/json' -H 'X-Device-Fingerprint: buyer-{}' \
    --data-binary '{"quantity":1}' "$BOXOFFICE_URL/events/$event/tickets" \
    >"$dir/codes" || echo "some curl failed (xargs status $?)" >&2

  echo "status codes (count code):" >&2
  sort "$dir/codes" | uniq -c >&2

  assert_eq "responses" 2000 "$(wc -l <"$dir/codes")"
  assert_eq "201 Created" 100 "$(grep -cx 201 "$dir/codes" || true)"
  assert_eq "409 Conflict" 1900 "$(grep -cx 409 "$dir/codes" || true)"

  # The bodies agree with the codes: 100 distinct holds of one ticket, 1900 TICKETS_SOLD_OUT.
  holds=$(jq -n '[inputs | select(.code == null and .status == "reserved" and .quantity == 1) | .id]
                 | unique | length' "$dir"/*.json)
  assert_eq "distinct reserved holds" 100 "$holds"
  sold_out=$(jq -n '[inputs | select(.code == "TICKETS_SOLD_OUT")] | length' "$dir"/*.json)
  assert_eq "TICKETS_SOLD_OUT bodies" 1900 "$sold_out"

  # Nothing oversold: the event is empty and its counts add up to its total.
  assert_counts "$event" 0 100 0
  assert_json .totalTickets 100
}

@test "asking for more than is available gets INSUFFICIENT_TICKETS, then TICKETS_SOLD_OUT, and takes nothing" {
  event=$(create_event 5)

  purchase "$event" 10 greedy-device
  assert_status 409
  assert_json .code INSUFFICIENT_TICKETS
  assert_json .availableTickets 5
  assert_counts "$event" 5 0 0

  purchase "$event" 3 first-device
  assert_status 201
  assert_json .quantity 3
  assert_counts "$event" 2 3 0

  purchase "$event" 3 second-device
  assert_status 409
  assert_json .code INSUFFICIENT_TICKETS
  assert_json .availableTickets 2
  assert_counts "$event" 2 3 0

  purchase "$event" 2 second-device
  assert_status 201
  assert_counts "$event" 0 5 0

  purchase "$event" 1 third-device
  assert_status 409
  assert_json .code TICKETS_SOLD_OUT
  assert_counts "$event" 0 5 0
}

@test "purchase then pay: reserved, a declined card keeps the hold, a good card buys it" {
  event=$(create_event 10)

  purchase "$event" 2 alice-phone
  assert_status 201
  assert_json .status reserved
  assert_json .quantity 2
  assert_json .eventId "$event"
  assert_json '.expiresAt != null' true
  assert_json 'has("confirmationCode")' false
  # The fingerprint is never echoed back, raw or hashed.
  assert_json '[keys[] | select(test("ingerprint"))] | length' 0
  id=$(json .id)
  assert_counts "$event" 8 2 0

  req POST "/tickets/$id/payment" '{"paymentToken":"tok_chargeDeclined"}' alice-phone
  assert_status 402
  assert_json .code PAYMENT_DECLINED
  req GET "/tickets/$id" "" alice-phone
  assert_status 200
  assert_json .status reserved
  assert_counts "$event" 8 2 0

  req POST "/tickets/$id/payment" '{"paymentToken":"tok_visa"}' alice-phone
  assert_status 200
  assert_json .id "$id"
  assert_json .status purchased
  assert_json '.purchasedAt != null' true
  assert_json '.confirmationCode | type == "string" and length > 0' true
  code=$(json .confirmationCode)
  assert_counts "$event" 8 0 2

  req GET "/tickets/$id" "" alice-phone
  assert_status 200
  assert_json .status purchased
  assert_json .confirmationCode "$code"

  # Paying twice charges nothing more.
  req POST "/tickets/$id/payment" '{"paymentToken":"tok_visa"}' alice-phone
  assert_status 409
  assert_json .code INVALID_STATUS
  assert_counts "$event" 8 0 2
}

@test "cancel: the holder gives a hold back, its tickets return to the pool, once" {
  event=$(create_event 10)

  purchase "$event" 3 bob-laptop
  assert_status 201
  id=$(json .id)
  assert_counts "$event" 7 3 0

  req DELETE "/tickets/$id/payment" "" bob-laptop
  assert_status 200
  assert_json .id "$id"
  assert_json .status cancelled
  assert_counts "$event" 10 0 0

  req GET "/tickets/$id" "" bob-laptop
  assert_status 200
  assert_json .status cancelled

  # A second cancel returns nothing more; a cancelled hold cannot be paid.
  req DELETE "/tickets/$id/payment" "" bob-laptop
  assert_status 409
  assert_json .code INVALID_STATUS
  req POST "/tickets/$id/payment" '{"paymentToken":"tok_visa"}' bob-laptop
  assert_status 409
  assert_json .code INVALID_STATUS
  assert_counts "$event" 10 0 0

  # A purchase cannot be cancelled.
  purchase "$event" 1 bob-laptop
  assert_status 201
  bought=$(json .id)
  req POST "/tickets/$bought/payment" '{"paymentToken":"tok_visa"}' bob-laptop
  assert_status 200
  req DELETE "/tickets/$bought/payment" "" bob-laptop
  assert_status 409
  assert_json .code INVALID_STATUS
  assert_counts "$event" 9 0 1
}

@test "expiry with a short hold: the tickets return, the hold reads expired, a late payment gets 410" {
  hold=3
  SHORT_HOLD_DIR=$(mktemp -d /tmp/boxoffice-bats-expiry.XXXXXX)
  chmod 755 "$SHORT_HOLD_DIR"
  boxoffice_start "$SHORT_HOLD_DIR/data" --hold-seconds "$hold" --sweep-interval-ms 100
  BOXOFFICE_URL=$SERVER_URL

  event=$(create_event 5)
  purchase "$event" 2 carol-tablet
  assert_status 201
  assert_json .status reserved
  id=$(json .id)
  # expiresAt is the hold after createdAt (give or take the truncated fractions).
  seconds='(sub("\\.[0-9]+"; "") | fromdateiso8601)'
  assert_json "((.expiresAt | $seconds) - (.createdAt | $seconds)) as \$d | \$d >= $((hold - 1)) and \$d <= $((hold + 1))" true
  assert_counts "$event" 3 2 0

  # The sweeper (every 100 ms) expires the hold soon after it lapses.
  deadline=$((SECONDS + hold + 15))
  while :; do
    req GET "/tickets/$id" "" carol-tablet
    assert_status 200
    [ "$(json .status)" = reserved ] || break
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "the hold was still reserved $((hold + 15))s after it was made" >&2
      false
    fi
    sleep 0.2
  done
  assert_json .status expired
  assert_counts "$event" 5 0 0

  req POST "/tickets/$id/payment" '{"paymentToken":"tok_visa"}' carol-tablet
  assert_status 410
  assert_json .code RESERVATION_EXPIRED
  req GET "/tickets/$id" "" carol-tablet
  assert_json .status expired
  assert_counts "$event" 5 0 0

  # This server, too, must stop cleanly on SIGTERM.
  boxoffice_stop "$SHORT_HOLD_DIR/data"
}

@test "fingerprint mismatch: another device can neither pay for, cancel nor read a hold" {
  event=$(create_event 10)

  purchase "$event" 2 dave-phone
  assert_status 201
  id=$(json .id)

  req POST "/tickets/$id/payment" '{"paymentToken":"tok_visa"}' mallory-phone
  assert_status 403
  assert_json .code FINGERPRINT_MISMATCH
  req DELETE "/tickets/$id/payment" "" mallory-phone
  assert_status 403
  assert_json .code FINGERPRINT_MISMATCH
  req GET "/tickets/$id" "" mallory-phone
  assert_status 403
  assert_json .code FINGERPRINT_MISMATCH
  # No header at all: the fingerprint derived from the connection is not the holder's either.
  req POST "/tickets/$id/payment" '{"paymentToken":"tok_visa"}'
  assert_status 403
  assert_json .code FINGERPRINT_MISMATCH

  # Nothing changed, and the holder can still pay.
  req GET "/tickets/$id" "" dave-phone
  assert_status 200
  assert_json .status reserved
  assert_counts "$event" 8 2 0
  req POST "/tickets/$id/payment" '{"paymentToken":"tok_visa"}' dave-phone
  assert_status 200
  assert_json .status purchased
  assert_counts "$event" 8 0 2
}

# cancel_then_buy_rounds EVENT_ID ROUNDS: the buyer holds the event's only ticket, then, ROUNDS
# times, cancels it and at once buys it again on the same keep-alive connection (one curl
# run, `--next`): the purchase is sent only after the cancel's 200 was read, so it must not
# hear TICKETS_SOLD_OUT.
cancel_then_buy_rounds() {
  local event=$1 rounds=$2 dir="$BATS_TEST_TMPDIR/rounds" round codes
  mkdir -p "$dir"
  purchase "$event" 1 cancel-then-buy
  assert_status 201 || return 1
  local hold
  hold=$(json .id)
  for round in $(seq 1 "$rounds"); do
    codes=$(curl -sS --max-time 30 -w '%{http_code}\n' \
      -X DELETE -H 'X-Device-Fingerprint: cancel-then-buy' -o "$dir/cancel.json" \
      "$BOXOFFICE_URL/tickets/$hold/payment" \
      --next -sS --max-time 30 -w '%{http_code}\n' \
      -X POST -H 'Content-Type: application/json' -H 'X-Device-Fingerprint: cancel-then-buy' \
      --data-binary '{"quantity":1}' -o "$dir/buy.json" \
      "$BOXOFFICE_URL/events/$event/tickets")
    if [ "$codes" != $'200\n201' ]; then
      echo "round $round: cancel then buy answered $(echo $codes); buy body: $(cat "$dir/buy.json")" >&2
      return 1
    fi
    hold=$(jq -r .id "$dir/buy.json")
  done
  assert_counts "$event" 0 1 0
}

@test "cancel then buy at once on one connection: never sold out (batched)" {
  event=$(create_event 1)
  cancel_then_buy_rounds "$event" 50
}

@test "cancel then buy at once on one connection: never sold out (per request)" {
  SHORT_HOLD_DIR=$(mktemp -d /tmp/boxoffice-bats-per-request.XXXXXX)
  chmod 755 "$SHORT_HOLD_DIR"
  boxoffice_start "$SHORT_HOLD_DIR/data" --purchase-mode per-request
  BOXOFFICE_URL=$SERVER_URL
  event=$(create_event 1)
  cancel_then_buy_rounds "$event" 50
  boxoffice_stop "$SHORT_HOLD_DIR/data"
}

@test "dates that cannot be stored or rendered are refused with 422 and the listing keeps working" {
  for date in "9999-12-31T23:59:59-01:00" "0000-01-01T00:30:00+01:00"; do
    req POST /events "{\"name\":\"bats out of range $RANDOM\",\"date\":\"$date\",\"totalTickets\":1}"
    assert_status 422
    assert_json .code VALIDATION_ERROR
    assert_json '.details[0].field' date
  done
  req GET "/events?limit=100"
  assert_status 200
  req GET "/events?limit=100&page=2"
  assert_status 200
}
