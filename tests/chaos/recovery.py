#!/usr/bin/env python3
"""Recovery after each fault of a chaos run, from the load tool's history and the run's
fault log (tests/chaos/run.sh writes both).

    recovery.py HISTORY FAULTS [--goals] [--request-timeout SECONDS]

For each fault: the time from the fault to the first successful hold (a 201 to
`POST /events/{id}/tickets` sent after the fault; once the event has sold out, the first
successful write of any kind); the attempts around it that got no certain
answer (no answer, or a 5xx) and how many were 503 and how many 500; and, for every call
retried through it, how long after that recovery its final answer came. With --goals it
exits 1 unless, for every database fault, a hold succeeded within 15 s (30 s for a node kill,
whose failover first waits for the leader lease), every call retried through it ended with
a certain answer within 30 s of recovery, no attempt got a 500, and no attempt ran past the
server's request timeout plus 2 s.
"""
import json
import re
import sys

HOLD = re.compile(r"^/events/[^/]+/tickets$")
DATABASE_FAULTS = {"pg-restart", "primary-kill", "node-kill"}
GOAL_SECONDS = {"node-kill": 30.0}
DEFAULT_GOAL_SECONDS = 15.0
ANSWER_WITHIN_SECONDS = 30.0


def ambiguous(attempt):
    status = attempt.get("status")
    if status is None or status >= 500:
        return True
    answer = attempt.get("answer")
    return isinstance(answer, dict) and answer.get("code") == "IDEMPOTENCY_IN_PROGRESS"


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    goals = "--goals" in argv
    timeout = 10.0
    if "--request-timeout" in argv:
        timeout = float(argv[argv.index("--request-timeout") + 1])
        args.remove(argv[argv.index("--request-timeout") + 1])
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 64
    attempts = [json.loads(line) for line in open(args[0]) if line.strip()]
    try:
        faults = [json.loads(line) for line in open(args[1]) if line.strip()]
    except FileNotFoundError:
        faults = []
    faults.sort(key=lambda f: f["atUs"])
    by_call = {}
    for a in attempts:
        by_call.setdefault(a["call"], []).append(a)
    for calls in by_call.values():
        calls.sort(key=lambda a: a["attempt"])

    failures = []
    errors_500 = [a for a in attempts if a.get("status") == 500]
    hung = [a for a in attempts if (a["endUs"] - a["startUs"]) / 1e6 > timeout + 2.0]
    print(f"attempts {len(attempts)}, calls {len(by_call)}, faults {len(faults)}; "
          f"500 answers {len(errors_500)}; attempts longer than {timeout + 2:.0f} s {len(hung)}")
    if errors_500:
        failures.append(f"{len(errors_500)} attempts got 500 (e.g. {errors_500[0]['path']}: "
                        f"{errors_500[0].get('answer')})")
    if hung:
        failures.append(f"{len(hung)} attempts ran past the request timeout")

    for n, fault in enumerate(faults):
        at = fault["atUs"]
        until = faults[n + 1]["atUs"] if n + 1 < len(faults) else float("inf")
        holds = [a["endUs"] for a in attempts
                 if a["method"] == "POST" and HOLD.match(a["path"]) and a.get("status") == 201
                 and a["startUs"] >= at]
        recovered = min(holds) if holds else None
        what = "hold"
        if recovered is None:
            # Sold out: no hold can succeed, so recovery is the first write that did.
            writes = [a["endUs"] for a in attempts
                      if a["method"] != "GET" and 200 <= (a.get("status") or 0) < 300
                      and a["startUs"] >= at]
            recovered = min(writes) if writes else None
            what = "write (the event had sold out)"
        window_end = recovered if recovered is not None else until
        unsure = [a for a in attempts if at - 1_000_000 <= a["startUs"] <= window_end and ambiguous(a)]
        s503 = sum(1 for a in unsure if a.get("status") == 503)
        none = sum(1 for a in unsure if a.get("status") is None)
        retried = []
        for calls in by_call.values():
            if calls[0]["method"] == "GET" or len(calls) < 2:
                continue
            first_unsure = next((a for a in calls if ambiguous(a)), None)
            if first_unsure is None or not (at - 1_000_000 <= first_unsure["startUs"] <= window_end):
                continue
            retried.append(calls)
        unresolved = [c for c in retried if ambiguous(c[-1])]
        late = [c for c in retried if recovered is not None
                and (c[-1]["endUs"] - recovered) / 1e6 > ANSWER_WITHIN_SECONDS]
        latest = max(((c[-1]["endUs"] - (recovered or at)) / 1e6 for c in retried), default=0.0)
        seconds = (recovered - at) / 1e6 if recovered is not None else None
        shown = f"{seconds:.1f} s" if seconds is not None else "never"
        print(f"{fault['fault']} ({fault['detail']}): first successful {what} after {shown}; "
              f"{len(unsure)} uncertain attempts ({s503} × 503, {none} without answer); "
              f"{len(retried)} calls retried through it, {len(unresolved)} without a certain "
              f"answer in the end, last answer {latest:.1f} s after recovery")
        if fault["fault"] not in DATABASE_FAULTS:
            continue
        goal = GOAL_SECONDS.get(fault["fault"], DEFAULT_GOAL_SECONDS)
        if seconds is None or seconds > goal:
            failures.append(f"{fault['fault']}: no successful {what} within {goal:.0f} s ({shown})")
        if unresolved:
            failures.append(f"{fault['fault']}: {len(unresolved)} retried calls never got a certain answer")
        if late:
            failures.append(f"{fault['fault']}: {len(late)} retried calls answered more than "
                            f"{ANSWER_WITHIN_SECONDS:.0f} s after recovery")
    for failure in failures:
        print(f"GOAL MISSED: {failure}")
    return 1 if goals and failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
