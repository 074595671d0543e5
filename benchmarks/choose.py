"""`ServiceCache.choose()` micro benchmark: nanoseconds and bytes per call, beside the
naive way to make the same choice, in the same run.

What it measures
----------------
A `ServiceCache` holding 10, then 1,000 ONLINE instances (handed a snapshot directly:
no router, no NATS), metadata `{"zone": "a" | "b", "weight": n % 4}` (a quarter weigh
0). For each strategy, without and with `prefer={"zone": "a"}` (half the instances):

* **ns/call**: `cache.choose(...)`, the best of `--repeat` runs of at least 0.2 s each
  (`timeit`), after a first call has built the tables (they are built once per view
  change, not per call); called through a `functools.partial`;
* **baseline ns/call**: the same choice made the naive way on a plain list:
  `instances[next(turn) % n]`, `rng.choice(instances)`, `rng.choices(instances,
  weights)[0]`, each after filtering the list per call when there is a preference;
* **growth B**: traced memory (`tracemalloc`) after `--calls` calls minus before,
  results dropped: what the calls leave behind (0: nothing accumulates);
* **peak B**: the most traced memory above that starting point during those calls:
  what one call holds at once (a float from the generator, a preference's key).

How to run it (from the repository root)
----------------------------------------
    .venv/bin/python -m benchmarks.choose
    .venv/bin/python -m benchmarks.choose --calls 100000 --json

No assertions: it prints, a human judges.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import platform
import random
import sys
import timeit
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol import Instance, InstanceStatus, ServiceDetail
from sdk.cache import ServiceCache
from sdk.choice import Preference, Strategy, weight_of
from sdk.client import ServiceClient

SIZES = (10, 1000)
STRATEGIES: tuple[Strategy, ...] = ("round_robin", "random", "weighted")
PREFER: Preference = {"zone": "a"}


def instances_of(size: int) -> list[Instance]:
    registered = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        Instance(
            service_name="bench",
            instance_id=f"i-{n:05}",
            status=InstanceStatus.ONLINE,
            metadata={"zone": "ab"[n % 2], "weight": n % 4},
            registered_at=registered,
        )
        for n in range(size)
    ]


def cache_of(instances: list[Instance], rng: random.Random) -> ServiceCache:
    async def build() -> ServiceCache:
        # No router here: the cache is handed a snapshot as the router would send it.
        cache = ServiceCache(cast(ServiceClient, None), "bench", rng=rng)
        snapshot = ServiceDetail(service_name="bench", instances=instances, epoch="bench")
        cache._take(snapshot)  # noqa: SLF001
        return cache

    return asyncio.run(build())


def naive(
    strategy: Strategy, instances: list[Instance], prefer: Preference | None, rng: random.Random
) -> Callable[[], Instance]:
    """The same choice made on a plain list, filtering it on every call if asked."""
    turn = itertools.count()

    def candidates() -> list[Instance]:
        if prefer is None:
            return instances
        return [i for i in instances if all(i.metadata.get(k) == v for k, v in prefer.items())]

    def round_robin() -> Instance:
        chosen = candidates()
        return chosen[next(turn) % len(chosen)]

    def uniform() -> Instance:
        return rng.choice(candidates())

    def weighted() -> Instance:
        chosen = candidates()
        return rng.choices(chosen, [weight_of(i) for i in chosen])[0]

    return {"round_robin": round_robin, "random": uniform, "weighted": weighted}[strategy]


def best_ns(call: Callable[[], object], repeat: int) -> float:
    """Nanoseconds per call: the best of `repeat` runs of at least 0.2 s each."""
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e9


def allocations(call: Callable[[], object], calls: int) -> tuple[int, int]:
    """(growth, peak) in bytes of traced memory over `calls` calls."""
    tracemalloc.start()
    try:
        for _ in range(100):  # (the first traced calls fill tracemalloc's own tables)
            call()
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(calls):
            call()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before, peak - before


def measure(calls: int, repeat: int) -> list[dict[str, Any]]:
    rows = []
    for size in SIZES:
        instances = instances_of(size)
        cache = cache_of(instances, random.Random(1))
        for strategy, prefer in itertools.product(STRATEGIES, (None, PREFER)):
            choose = functools.partial(cache.choose, strategy=strategy, prefer=prefer)
            choose()  # builds this view's tables
            growth, peak = allocations(choose, calls)
            baseline = naive(strategy, instances, prefer, random.Random(1))
            rows.append(
                {
                    "instances": size,
                    "strategy": strategy,
                    "prefer": dict(prefer) if prefer else None,
                    "ns_per_call": round(best_ns(choose, repeat), 1),
                    "baseline_ns_per_call": round(best_ns(baseline, repeat), 1),
                    "growth_bytes": growth,
                    "peak_bytes": peak,
                }
            )
    return rows


def render(report: dict[str, Any]) -> str:
    lines = [
        (
            f"cache.choose(): best of {report['repeat']} timed runs; memory over "
            f"{report['calls']:,} calls"
        ),
        f"{report['machine']}; {report['date']}",
        "",
        (
            f"{'instances':>9}  {'strategy':<11} {'prefer':<7} {'ns/call':>8} "
            f"{'baseline':>9} {'ratio':>7} {'growth B':>9} {'peak B':>7}"
        ),
    ]
    for row in report["rows"]:
        ratio = row["baseline_ns_per_call"] / row["ns_per_call"]
        lines.append(
            f"{row['instances']:>9}  {row['strategy']:<11} {'zone=a' if row['prefer'] else '-':<7} "
            f"{row['ns_per_call']:>8.0f} {row['baseline_ns_per_call']:>9.0f} {ratio:>6.1f}x "
            f"{row['growth_bytes']:>9} {row['peak_bytes']:>7}"
        )
    lines.append("(ratio: baseline / choose(), higher is better for choose())")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--calls", type=int, default=100_000, help="calls traced for memory (default 100,000)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs, the best counts (default 3)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    opts = parser.parse_args(argv)
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "calls": opts.calls,
        "repeat": opts.repeat,
        "rows": measure(opts.calls, opts.repeat),
    }
    print(json.dumps(report, indent=2) if opts.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
