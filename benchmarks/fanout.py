"""Discovery fan-out benchmark: many watchers of one service, many registrations.

What it measures
----------------
One router (`ipc-router serve`, a real subprocess) on its own loopback
nats-server. In this process, `--watchers` (default 200) `ServiceCache`s follow
the service `fanout` (`client.discover("fanout", check_interval=60)`), spread
over `--watcher-connections` (default 10) NATS connections. A separate client
(`heartbeat=False`) then registers `--registrations` (default 1,000) instances
of `fanout`, strictly one after another. For each one it records:

* **register()**: the request/reply round trip alone, and
* **all caches**: from just before `register()` until the last of the watchers'
  caches includes the new instance (seen through each cache's `on_change`
  callback), i.e. "registration sent -> every watcher knows".

The watchers live in this process, on the same event loop as the registering
client, so the reply to `register()` often waits behind the caches applying the
event it caused: that round trip includes part of the fan-out work. For a clean
comparison, `--baseline-registrations` (default 100) round trips are timed
first, on another service and before any cache exists.

The next registration starts only once every cache has the previous one (or
after `--timeout` seconds, counted as an error), so each measurement is clean.

A plain NATS subscriber on `ipc.registry.events.fanout` counts the router's
event messages: the router publishes one message per change whatever the
number of watchers (NATS does the fan-out), so the count must equal the number
of registrations.

The router runs with a long lease (`--heartbeat-interval 60 --lease-ttl
<--lease-ttl>`, default 3600 s): the registering client sends no heartbeats, and
with the router's default 3 s lease the first instances would turn UNHEALTHY
during the run, which adds events and removes them from the caches.

The report gives percentiles in milliseconds, the event count, and whether
every cache ended with every instance. The exit code is 0 when all checks
pass, 1 when one fails (a cache missed an instance, a registration timed out,
the event count differs), 2 when the set-up failed.

How to run it (from the repository root)
----------------------------------------
    .venv/bin/python -m benchmarks.fanout
    .venv/bin/python benchmarks/fanout.py --watchers 200 --registrations 1000
    .venv/bin/python -m benchmarks.fanout --watcher-connections 20 --json

Everything runs on 127.0.0.1 and is stopped on exit (caches, clients, the
router by SIGTERM, the nats-server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import math
import os
import platform
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import nats
import structlog

from actors.embedded_nats import NatsServerProcess
from benchmarks.loadgen import router_command
from protocol import ProtocolError, decode_event, events_subject
from sdk import ServiceClient
from sdk.cache import ServiceCache

SERVICE = "fanout"
BASELINE_SERVICE = "fanout-baseline"
HOST = "127.0.0.1"
READY_TIMEOUT = 20.0
ROUTER_STOP_TIMEOUT = 10.0
EVENT_SETTLE = 0.5  # seconds to wait after the last expected event, to catch extras


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(values: list[float], ps: tuple[float, ...] = (50, 90, 99)) -> dict[str, Any]:
    """Percentiles and max of `values` (seconds), in milliseconds."""
    out: dict[str, Any] = {"count": len(values)}
    for p in ps:
        v = percentile(values, p)
        out[f"p{p:g}"] = None if v is None else round(v * 1000, 3)
    out["max"] = round(max(values) * 1000, 3) if values else None
    return out


# -- the router subprocess ------------------------------------------------------------


def _die_with_parent() -> None:  # runs in the child before exec
    """Linux: SIGTERM the router if this process dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Router:
    """`ipc-router serve` against an external NATS, JSON logs on stderr."""

    def __init__(self, nats_url: str, http_port: int, lease_ttl: float) -> None:
        self.http_port = http_port
        self.args = [
            *router_command(),
            "serve",
            "--nats-url",
            nats_url,
            "--http-host",
            HOST,
            "--http-port",
            str(http_port),
            "--log-format",
            "json",
            "--log-level",
            "warning",
            "--heartbeat-interval",
            str(min(60.0, lease_ttl / 2)),
            "--lease-ttl",
            str(lease_ttl),
        ]
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.levels: Counter[str] = Counter()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self._reader = asyncio.create_task(self._read(), name="router-stderr")

    async def _read(self) -> None:
        # Keep draining stderr, or the router blocks once the pipe is full.
        assert self.process is not None and self.process.stderr is not None
        while line := await self.process.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            if len(self.lines) < 200:
                self.lines.append(text)
            try:
                record = json.loads(text)
                self.levels[str(record.get("level", "?"))] += 1
            except (json.JSONDecodeError, AttributeError):
                self.levels["raw"] += 1

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll `GET /healthz` until 200 (bounded)."""
        url = f"http://{HOST}:{self.http_port}/healthz"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = "no answer"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while loop.time() < deadline:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise RuntimeError(
                        f"router exited with code {self.process.returncode}: {self.lines[-5:]}"
                    )
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                        last = f"HTTP {response.status}"
                except (aiohttp.ClientError, TimeoutError) as error:
                    last = repr(error)
                await asyncio.sleep(0.1)
        raise RuntimeError(f"router not healthy within {timeout} s ({last}): {self.lines[-5:]}")

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a bound; returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), ROUTER_STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(self._reader, return_exceptions=True), 5)
        return process.returncode


# -- tracking inclusion ---------------------------------------------------------------


@dataclass
class Pending:
    """The instance being waited for: how many caches have it so far."""

    instance_id: str
    target: int
    count: int = 0
    first_at: float | None = None
    all_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Tracker:
    """Counts, through `on_change`, the caches that include the pending instance."""

    def __init__(self) -> None:
        self.pending: Pending | None = None
        self.callbacks = 0

    def watcher(self) -> Callable[[ServiceCache], None]:
        counted: list[Pending | None] = [None]  # the last Pending this cache counted for

        def on_change(cache: ServiceCache) -> None:
            self.callbacks += 1
            pending = self.pending
            if pending is None or counted[0] is pending:
                return
            if pending.instance_id in cache:
                counted[0] = pending
                now = time.perf_counter()
                pending.count += 1
                if pending.first_at is None:
                    pending.first_at = now
                if pending.count >= pending.target:
                    pending.all_at = now
                    pending.done.set()

        return on_change


# -- the benchmark --------------------------------------------------------------------


async def benchmark(opts: argparse.Namespace, stop: asyncio.Event | None = None) -> dict[str, Any]:
    """Run it once; `stop` set ends the registrations early (CancelledError)."""
    stop = stop or asyncio.Event()
    nats_server = NatsServerProcess(host=HOST, port=free_port())  # JetStream: the router's store
    router: Router | None = None
    watcher_clients: list[ServiceClient] = []
    caches: list[ServiceCache] = []
    counter_nc: Any = None
    registrar: ServiceClient | None = None
    tracker = Tracker()
    events: Counter[str] = Counter()
    event_msgs = 0
    all_counted = asyncio.Event()  # set once the counter has seen one event per registration
    router_exit: int | None = None

    def on_event(msg: Any) -> None:
        nonlocal event_msgs
        event_msgs += 1
        if event_msgs >= opts.registrations:
            all_counted.set()
        try:
            events[str(decode_event(msg.data).type)] += 1
        except ProtocolError:
            events["unreadable"] += 1

    try:
        await nats_server.start()
        url = nats_server.url
        router = Router(url, free_port(), opts.lease_ttl)
        await router.start()
        await router.wait_ready()

        # The event counter: a bare subscriber on the service's event subject.
        counter_nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)

        async def count(msg: Any) -> None:
            on_event(msg)

        await counter_nc.subscribe(events_subject(SERVICE), cb=count)
        await counter_nc.flush()

        registrar = ServiceClient(url, heartbeat=False)
        await registrar.connect()

        # Baseline: register() alone, before any watcher exists (another service), so
        # that the round trip is not slowed by this process applying events.
        baseline: list[float] = []
        for n in range(opts.baseline_registrations):
            t0 = time.perf_counter()
            await registrar.register(BASELINE_SERVICE, f"baseline-{n}", {"n": n})
            baseline.append(time.perf_counter() - t0)

        # Watchers: W connections, caches spread round-robin over them.
        for _ in range(opts.watcher_connections):
            client = ServiceClient(url, heartbeat=False)
            await client.connect()
            watcher_clients.append(client)
        for i in range(opts.watchers):
            client = watcher_clients[i % len(watcher_clients)]
            caches.append(
                await client.discover(SERVICE, check_interval=60, on_change=tracker.watcher())
            )

        sent_to_all: list[float] = []
        sent_to_first: list[float] = []
        round_trips: list[float] = []
        timeouts: list[str] = []
        registered: list[str] = []
        not_created = 0
        width = len(str(opts.registrations))
        started = time.perf_counter()
        for n in range(opts.registrations):
            if stop.is_set():  # a cancellation can be lost in wait_for (3.11): check too
                raise asyncio.CancelledError
            instance_id = f"fanout-{n:0{width}d}"
            pending = Pending(instance_id, target=len(caches))
            tracker.pending = pending  # before sending: an event can beat the reply
            t0 = time.perf_counter()
            registration = await registrar.register(SERVICE, instance_id, {"n": n})
            t1 = time.perf_counter()
            round_trips.append(t1 - t0)
            registered.append(instance_id)
            if not registration.created:
                not_created += 1
            remaining = max(0.0, opts.timeout - (time.perf_counter() - t0))
            try:
                await asyncio.wait_for(pending.done.wait(), remaining)
            except TimeoutError:
                timeouts.append(f"{instance_id} ({pending.count}/{pending.target} caches)")
            else:
                assert pending.all_at is not None
                sent_to_all.append(pending.all_at - t0)
            if pending.first_at is not None:
                sent_to_first.append(pending.first_at - t0)
        elapsed = time.perf_counter() - started
        tracker.pending = None

        # Let the counter catch up (bounded), then a moment more to catch extras.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_counted.wait(), 5.0)
        await asyncio.sleep(EVENT_SETTLE)

        expected = set(registered)
        missing_caches = 0
        missing_total = 0
        extra_total = 0
        for cache in caches:
            have = {instance.instance_id for instance in cache.instances}
            lost = expected - have
            missing_total += len(lost)
            extra_total += len(have - expected)
            if lost:
                missing_caches += 1
        resyncs = sum(cache.resyncs for cache in caches)

        tenth = max(1, len(sent_to_all) // 10)
        result: dict[str, Any] = {
            "registrations": opts.registrations,
            "watchers": len(caches),
            "watcher_connections": len(watcher_clients),
            "event_messages": event_msgs,
            "event_types": dict(events),
            "registration_phase_s": round(elapsed, 3),
            "registrations_per_s": round(opts.registrations / elapsed, 1) if elapsed else None,
            "sent_to_all_caches_ms": summary_ms(sent_to_all),
            "sent_to_first_cache_ms": summary_ms(sent_to_first, (50, 99)),
            "register_round_trip_ms": summary_ms(round_trips, (50, 99)),
            "register_round_trip_no_watchers_ms": summary_ms(baseline, (50, 99)),
            "sent_to_all_caches_p50_first_10pct_ms": summary_ms(sent_to_all[:tenth], (50,))["p50"],
            "sent_to_all_caches_p50_last_10pct_ms": summary_ms(sent_to_all[-tenth:], (50,))["p50"],
            "timeouts": len(timeouts),
            "timed_out": timeouts[:20],
            "not_created": not_created,
            "caches_missing_instances": missing_caches,
            "missing_instances_total": missing_total,
            "unexpected_instances_total": extra_total,
            "cache_resyncs": resyncs,
            "on_change_calls": tracker.callbacks,
        }
    finally:
        for cache in caches:
            with contextlib.suppress(Exception):
                await cache.close()
        for client in watcher_clients:
            with contextlib.suppress(Exception):
                await client.close()
        if counter_nc is not None:
            with contextlib.suppress(Exception):
                await counter_nc.close()
        if registrar is not None:
            with contextlib.suppress(Exception):
                # Deregisters its instances (best effort, bounded by its 2 s timeout).
                await asyncio.wait_for(registrar.close(), 30)
        if router is not None:
            router_exit = await router.stop()
        await nats_server.stop()

    result["router_exit_code"] = router_exit
    result["router_log_levels"] = dict(router.levels) if router is not None else {}
    result["router_log_sample"] = router.lines[:5] if router is not None else []
    failures = []
    if result["timeouts"]:
        failures.append(f"{result['timeouts']} registrations not seen by every cache in time")
    if result["caches_missing_instances"]:
        failures.append(
            f"{result['caches_missing_instances']} caches missed "
            f"{result['missing_instances_total']} instances in total"
        )
    if result["unexpected_instances_total"]:
        failures.append(f"caches hold {result['unexpected_instances_total']} unexpected instances")
    if result["event_messages"] != result["registrations"]:
        failures.append(
            f"event messages {result['event_messages']} != registrations {result['registrations']}"
        )
    if result["not_created"]:
        failures.append(f"{result['not_created']} registrations were not new (200, not 201)")
    result["failures"] = failures
    result["ok"] = not failures
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return result


def print_report(r: dict[str, Any]) -> None:
    def row(label: str, s: dict[str, Any], keys: tuple[str, ...]) -> None:
        values = "  ".join(f"{k} {s[k]:8.2f}" if s[k] is not None else f"{k} -" for k in keys)
        print(f"  {label:<40} {values}")

    m = r["machine"]
    print(f"discovery fan-out  ({m['date']}, {m['cpus']} CPUs, Python {m['python']})")
    print(f"  registrations                {r['registrations']}")
    print(
        f"  watchers (caches)            {r['watchers']} over {r['watcher_connections']} connections"
    )
    print(
        f"  event messages counted       {r['event_messages']}  "
        f"(registrations {r['registrations']}; types {r['event_types']})"
    )
    print(
        f"  registration phase           {r['registration_phase_s']:.2f} s  "
        f"({r['registrations_per_s']} registrations/s, sequential)"
    )
    print("  latency, ms:")
    row("sent -> all caches include it", r["sent_to_all_caches_ms"], ("p50", "p90", "p99", "max"))
    row("sent -> first cache includes it", r["sent_to_first_cache_ms"], ("p50", "p99", "max"))
    row("register() round trip, during fan-out", r["register_round_trip_ms"], ("p50", "p99", "max"))
    if r["register_round_trip_no_watchers_ms"]["count"]:
        row(
            "register() round trip, no watchers yet",
            r["register_round_trip_no_watchers_ms"],
            ("p50", "p99", "max"),
        )
    print(
        f"  sent -> all caches, p50 of first / last 10 %: "
        f"{r['sent_to_all_caches_p50_first_10pct_ms']} / {r['sent_to_all_caches_p50_last_10pct_ms']} ms"
    )
    print(
        f"  timeouts {r['timeouts']}, caches missing instances {r['caches_missing_instances']}, "
        f"cache resyncs {r['cache_resyncs']}, router exit code {r['router_exit_code']}, "
        f"router log lines by level {r['router_log_levels']}"
    )
    print("  result: " + ("OK" if r["ok"] else "FAILED: " + "; ".join(r["failures"])))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fanout",
        description="Measure discovery fan-out: N ServiceCache watchers, M sequential registrations.",
    )
    parser.add_argument("--watchers", type=int, default=200, help="caches of the service (default 200)")
    parser.add_argument(
        "--registrations", type=int, default=1000, help="instances to register (default 1000)"
    )
    parser.add_argument(
        "--watcher-connections",
        type=int,
        default=10,
        help="NATS connections the caches are spread over (default 10)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds per registration for every cache to see it (default 10)",
    )
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=3600.0,
        help="router lease TTL in seconds; long, as nothing sends heartbeats (default 3600)",
    )
    parser.add_argument(
        "--baseline-registrations",
        type=int,
        default=100,
        help="register() round trips timed first, before any watcher exists, on another "
        "service (default 100; 0: none)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    opts = parser.parse_args(argv)
    for name in ("watchers", "registrations", "watcher_connections"):
        if getattr(opts, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if opts.baseline_registrations < 0:
        parser.error("--baseline-registrations must be 0 or more")
    opts.watcher_connections = min(opts.watcher_connections, opts.watchers)
    if not 0 < opts.timeout <= 600:
        parser.error("--timeout must be in (0, 600]")
    if not 2 <= opts.lease_ttl < 86_400:
        parser.error("--lease-ttl must be in [2, 86400)")
    return opts


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; everything has been stopped."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(sig.name)
        self.sig = sig


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    """`benchmark`, cancelled (its cleanup still runs) by the first SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[signal.Signals] = []
    stopping = asyncio.Event()

    def stop(sig: signal.Signals) -> None:
        if not received:  # once: a second signal must not cut the cleanup short
            received.append(sig)
            stopping.set()
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    try:
        return await benchmark(opts, stopping)
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    # NatsServerProcess logs through structlog (stdout by default): keep stdout for
    # the report, and only warnings and errors, on stderr.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    try:
        result = asyncio.run(run(opts))
    except Interrupted as stopped:
        print(f"fanout benchmark interrupted by {stopped.sig.name}; stopped", file=sys.stderr)
        return 128 + stopped.sig.value
    except KeyboardInterrupt:
        print("fanout benchmark interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - report set-up failures in one line
        print(f"fanout benchmark failed: {error!r}", file=sys.stderr)
        return 2
    if opts.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
