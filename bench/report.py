#!/usr/bin/env python3
"""Turns the results of bench/run.sh (target/bench/) into the Markdown table and target
verdicts of docs/performance.md."""
import json
import pathlib
import re

OUT = pathlib.Path(__file__).resolve().parent.parent / "target" / "bench"


def load(name):
    return json.loads((OUT / f"{name}.json").read_text())


def pgbench(clients):
    text = (OUT / f"pgbench-{clients}.txt").read_text()
    return float(re.search(r"^tps = ([0-9.]+)", text, re.M).group(1))


def sound(report):
    # The load tool's own verdict (see docs/performance.md): verified, nothing oversold,
    # every 201 read back, no 5xx, no request without an answer.
    return report["sound"]


rows = []
def row(scenario, report, rate_key="reservations_per_second"):
    l = report["latency_ms"]
    rows.append(
        f"| {scenario} | {report[rate_key]:,.0f} | {report['requests_per_second']:,.0f} | "
        f"{l['p50']:.1f} | {l['p90']:.1f} | {l['p99']:.1f} | {l['max']:.1f} | "
        f"{'none' if sound(report) else 'FAILED'} |"
    )


print("| scenario | reservations/s | requests/s | p50 ms | p90 ms | p99 ms | max ms | oversell / missing 201s |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for mode in ["per-request", "batched"]:
    for clients in [64, 256]:
        row(f"1. hot event, {mode}, {clients} clients", load(f"hot-{mode}-{clients}"))
types = load("hot-types-batched-256")
row("1b. hot event, 3 types in 2 overlapping quotas, 1-3 lines per order, batched, 256 clients "
    f"({types['tickets_per_second']:,.0f} tickets/s)", types)
seed = load("seed-2000-for-100")
row(f"2. 2000 buyers for 100 tickets (settled in {seed['elapsed_seconds'] * 1000:.0f} ms)", seed)
row("3. sold out, 256 clients (rejections/s = requests/s)", load("sold-out"))
row("4. `GET /events/{id}`, 256 clients", load("read-event"))
print("\n".join(rows))
for clients in [64, 256]:
    print(f"| 5. pgbench, one UPDATE of one hot row, {clients} clients | {pgbench(clients):,.0f} tps | | | | | | |")

peak_mb = int((OUT / "peak-rss-kb-batched-256").read_text()) / 1024
sse = json.loads((OUT / "sse-memory.json").read_text())
per_sub = (sse["rss_with_subscribers_kb"] - sse["rss_before_kb"]) * 1024 / sse["subscribers"]
print(f"\n6. Server peak RSS after the 256-client batched load: {peak_mb:.1f} MB.")
print(f"   Idle live-statistics subscribers: {sse['subscribers']} add "
      f"{(sse['rss_with_subscribers_kb'] - sse['rss_before_kb']) / 1024:.1f} MB of RSS, "
      f"about {per_sub / 1024:.1f} KiB each.\n")

batched = load("hot-batched-256")
per_request = load("hot-per-request-256")
pg = pgbench(256)
checks = [
    ("batched reservations/s at 256 clients >= 3x pgbench (256 clients)",
     batched["reservations_per_second"] / pg, 3.0, "x"),
    ("batched >= 5x per-request at 256 clients",
     batched["reservations_per_second"] / per_request["reservations_per_second"], 5.0, "x"),
    ("p99 at 256 clients (batched) <= 50 ms", batched["latency_ms"]["p99"], 50.0, "ms"),
    # Orders held per second, whatever their lines: the catalogue's against one type's.
    ("3 types, 1-3 lines: orders/s >= 80% of single-type reservations/s (256 clients, batched)",
     100 * types["reservations_per_second"] / batched["reservations_per_second"], 80.0, "%"),
    ("single-type batched reservations/s at 256 clients >= 15,000 (the rate before ticket types)",
     batched["reservations_per_second"], 15000.0, "/s"),
    ("server peak RSS <= 100 MB", peak_mb, 100.0, "MB"),
]
print("| target | measured | verdict |")
print("|---|---:|---|")
for name, value, bound, unit in checks:
    met = value >= bound if unit in ("x", "%", "/s") else value <= bound
    print(f"| {name} | {value:,.1f} {unit} | {'met' if met else 'missed'} |")
all_sound = all(sound(json.loads(p.read_text())) for p in OUT.glob("*.json") if p.name not in ("sse-memory.json",))
print(f"| zero oversell in every run | {'yes' if all_sound else 'NO'} | {'met' if all_sound else 'missed'} |")

# 7-8. The flash sale (issue 12): the same server, one run after the other.
def step(report, name):
    return next((s for s in report["steps"] if s["name"] == name), None)


def p99(report, name):
    s = step(report, name)
    return s["latency_ms"]["p99"] if s else float("nan")


holds, pay = load("sale-holds"), load("sale-pay")
streams, reads = load("sale-holds-streams"), load("sale-reads")
paid_rate = pay["payments_succeeded"] / pay["elapsed_seconds"]
print("\n| flash sale run (one hot event, 256 clients) | rate | p99 ms | sound |")
print("|---|---:|---:|---|")
print(f"| 7. holds only | {holds['reservations_per_second']:,.0f} holds/s | {p99(holds, 'purchase'):.1f} | {holds['sound']} |")
print(f"| 7. hold, then pay at once (`--pay`) | {paid_rate:,.0f} paid sales/s | hold {p99(pay, 'purchase'):.1f}, pay {p99(pay, 'pay'):.1f} | {pay['sound']} |")
print(f"| 7. holds only, beside idle streams | {streams['reservations_per_second']:,.0f} holds/s | {p99(streams, 'purchase'):.1f} | {streams['sound']} |")
print(f"| 7. `GET /events/{{id}}` (`--read-only`) | {reads['requests_per_second']:,.0f} reads/s | {p99(reads, 'read'):.1f} | {reads['sound']} |")

onsale = load("onsale-spike")
journey = onsale["journey"]
print(f"\n8. On-sale, open model ({journey['arrival_rate']:,.0f} buyers/s after a spike of "
      f"{journey['spike_rate'] or 0:,.0f}/s for {journey['spike_seconds']} s), think {journey['think_ms']} ms: "
      f"{journey['buyers']:,} buyers, {journey['held']:,} held, {journey['paid']:,} paid, "
      f"{journey['declined']:,} declined, {journey['cancelled']:,} cancelled, {journey['abandoned']:,} abandoned, "
      f"{journey['watchers']:,} watched; sound: {onsale['sound']}.\n")
print("| step | requests | per second | p50 ms | p90 ms | p99 ms | max ms | answers |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for s in onsale["steps"]:
    l = s["latency_ms"]
    answers = ", ".join(f"{a} ×{n}" for a, n in s["answers"].items())
    print(f"| {s['name']} | {s['requests']:,} | {s['per_second']:,.0f} | {l['p50']:.1f} | {l['p90']:.1f} | "
          f"{l['p99']:.1f} | {l['max']:.1f} | {answers} |")

sale_checks = [
    ("paid sales/s >= 50% of the holds/s of the same run", 100 * paid_rate / holds["reservations_per_second"], 50.0, "%"),
    ("hold p99 with payment <= 100 ms", p99(pay, "purchase"), 100.0, "ms"),
    ("pay p99 <= 100 ms", p99(pay, "pay"), 100.0, "ms"),
    ("holds/s beside idle streams >= 80% of holds/s without", 100 * streams["reservations_per_second"] / holds["reservations_per_second"], 80.0, "%"),
    ("reads/s >= 2x holds/s", reads["requests_per_second"] / holds["reservations_per_second"], 2.0, "x"),
]
print("\n| flash sale target | measured | verdict |")
print("|---|---:|---|")
for name, value, bound, unit in sale_checks:
    met = value >= bound if unit in ("x", "%", "/s") else value <= bound
    print(f"| {name} | {value:,.1f} {unit} | {'met' if met else 'missed'} |")
