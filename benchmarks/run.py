"""The benchmark suite behind `make bench`: every figure beside its baseline,
measured in the same run on the same machine, as a ratio.

    .venv/bin/python -m benchmarks.run [--quick] [--store stream|memory] [--json FILE]

Sections (each against a fresh router subprocess on a fresh nats-server with
JetStream, which the router's default `--store stream` keeps the registry in;
`--store memory` measures the in-memory registry instead):
  registration  raw nats-py registrations at 16/64/256 in flight vs the echo
                round trip with the same payloads, plus the SDK at 64
  heartbeat     heartbeats at 64 in flight vs echo
  memory        router RSS per registered instance (100,000, 3 metadata keys)
  admin         GET /services/{name} (1,000 instances) and GET /services
                (10,000 services) vs an aiohttp handler returning the same bytes
  query flood   registration p50/p99 (raw nats-py, 16 in flight) with 20,000
                instances of one service and 10,000 one-instance services
                registered: quiet, then while 200 clients in another process
                flood `list` (status OFFLINE) and `get` (a metadata filter that
                matches nothing); the p99 ratio flooded / quiet (issue 10)
  expiry        router CPU seconds per second with 100,000 instances registered
                and heartbeats as fast as this machine can send them
No assertions: the suite prints, a human judges (see README for the targets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import nats
from aiohttp import web

from actors.embedded_nats import NatsServerProcess
from actors.logs import configure_logging
from benchmarks.loadgen import (
    ECHO_SUBJECT,
    QUIET_LEASES,
    EchoResponder,
    PhaseResult,
    RouterProcess,
    free_port,
    instance_names,
    lease_payloads,
    register_payloads,
    request_call,
    run_phase,
    timed_request,
)
from protocol import (
    GET_SUBJECT,
    HEARTBEAT_SUBJECT,
    LIST_SUBJECT,
    REGISTER_SUBJECT,
    GetServiceRequest,
    InstanceStatus,
    ListServicesRequest,
    RegisterRequest,
    encode_msgpack,
)
from sdk import ServiceClient

ROOT = Path(__file__).resolve().parent.parent
SESSION = "bench-suite-session-0001"
FLOOD_SERVICE = "flood-big"
"""The query flood's big service: `get` filters its instances by metadata."""
FLOOD_CONNECTIONS = 8
"""NATS connections the query flood's clients share."""


def _registrations(prefix: str, count: int, services: int = 100) -> list[bytes]:
    return register_payloads(instance_names(prefix, count, services), SESSION)


def _heartbeats(prefix: str, count: int, services: int = 100) -> list[bytes]:
    return lease_payloads(instance_names(prefix, count, services), SESSION)


def _ratio(mine: float, base: float) -> float | None:
    return round(mine / base, 3) if base else None


def _row(name: str, mine: PhaseResult, base: PhaseResult) -> dict[str, Any]:
    return {
        "name": name,
        "throughput": round(mine.throughput),
        "baseline_throughput": round(base.throughput),
        "throughput_ratio": _ratio(mine.throughput, base.throughput),
        "p50_ms": round(mine.percentile(50), 3),
        "baseline_p50_ms": round(base.percentile(50), 3),
        "p50_ratio": _ratio(mine.percentile(50), base.percentile(50)),
        "p99_ms": round(mine.percentile(99), 3),
        "baseline_p99_ms": round(base.percentile(99), 3),
        "errors": mine.errors,
    }


STORE = "stream"
"""The router's `--store` in every section (set by `--store`)."""


class _Stack:
    """A nats-server (with JetStream, in a temporary store), a router and an echo
    responder, started and stopped together."""

    def __init__(self, *router_args: str) -> None:
        self.server = NatsServerProcess(port=free_port())
        self.router_args = ("--store", STORE, *router_args)
        self.router: RouterProcess | None = None
        self.echo: EchoResponder | None = None

    async def __aenter__(self) -> Self:
        await self.server.start()
        self.router = RouterProcess(self.server.url, *self.router_args)
        await self.router.start()
        self.echo = EchoResponder(self.server.url)
        await self.echo.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.echo is not None:
            await self.echo.stop()
        if self.router is not None:
            await self.router.stop()
        await self.server.stop()


async def registration(quick: bool) -> list[dict[str, Any]]:
    rows = []
    count = 5_000 if quick else 20_000
    async with _Stack(*QUIET_LEASES) as stack:
        nc = await nats.connect(stack.server.url)
        try:
            for concurrency in (16, 64, 256):
                payloads = _registrations(f"reg{concurrency}", count)
                base = await run_phase(
                    "echo",
                    request_call(nc, ECHO_SUBJECT, payloads, 5, echo=True),
                    concurrency=concurrency,
                    count=count,
                )
                mine = await run_phase(
                    "register",
                    request_call(nc, REGISTER_SUBJECT, payloads, 5),
                    concurrency=concurrency,
                    count=count,
                )
                rows.append(_row(f"register raw, {concurrency} in flight", mine, base))
            client = ServiceClient(nc=nc, heartbeat=False, retries=0)
            payloads = _registrations("sdk", count)
            base = await run_phase(
                "echo", request_call(nc, ECHO_SUBJECT, payloads, 5, echo=True), concurrency=64, count=count
            )

            async def sdk_register(i: int) -> str:
                info = await client.register(f"sdk-{i % 100}", f"i-{i}", {"zone": "a", "version": "1.0.0", "index": str(i)})
                return "201" if info.created else "200"

            mine = await run_phase("sdk", sdk_register, concurrency=64, count=count)
            rows.append(_row("register via SDK, 64 in flight", mine, base))
        finally:
            await nc.close()
    return rows


async def heartbeat(quick: bool) -> list[dict[str, Any]]:
    seconds = 2.0 if quick else 5.0
    async with _Stack(*QUIET_LEASES) as stack:
        nc = await nats.connect(stack.server.url)
        try:
            registrations = _registrations("hb", 10_000)
            await run_phase(
                "setup", request_call(nc, REGISTER_SUBJECT, registrations, 5), concurrency=256, count=10_000
            )
            beats = _heartbeats("hb", 10_000)
            base = await run_phase(
                "echo",
                request_call(nc, ECHO_SUBJECT, beats, 5, echo=True),
                concurrency=64,
                duration=seconds,
            )
            mine = await run_phase(
                "heartbeat", request_call(nc, HEARTBEAT_SUBJECT, beats, 5), concurrency=64, duration=seconds
            )
        finally:
            await nc.close()
    return [_row("heartbeat, 64 in flight", mine, base)]


async def memory(quick: bool) -> dict[str, Any]:
    count = 20_000 if quick else 100_000
    async with _Stack(*QUIET_LEASES, "--max-instances-per-service", "100000") as stack:
        assert stack.router is not None
        nc = await nats.connect(stack.server.url)
        try:
            payloads = _registrations("mem", count)
            before = stack.router.rss_bytes()
            result = await run_phase(
                "register", request_call(nc, REGISTER_SUBJECT, payloads, 10), concurrency=256, count=count
            )
            after = stack.router.rss_bytes()
        finally:
            await nc.close()
    return {
        "instances": count,
        "metadata_keys": 3,
        "rss_before_mb": round(before / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "bytes_per_instance": round((after - before) / count),
        "errors": result.errors,
    }


async def _http_load(url: str, concurrency: int, seconds: float, headers: dict[str, str] | None = None) -> PhaseResult:
    async with aiohttp.ClientSession(headers=headers) as session:

        async def get(_: int) -> str:
            async with session.get(url) as response:
                await response.read()
                return str(response.status)

        await get(0)  # warm the connection pool
        return await run_phase(url, get, concurrency=concurrency, duration=seconds)


async def _static_server(body: bytes) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    path = Path(f"/tmp/ipc-router-bench-body-{os.getpid()}-{port}")
    await asyncio.to_thread(path.write_bytes, body)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.run", "--serve-static", str(port), str(path),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    await asyncio.wait_for(process.stdout.readline(), 20)
    await asyncio.to_thread(path.unlink)
    return process, port


async def admin(quick: bool) -> list[dict[str, Any]]:
    seconds = 2.0 if quick else 4.0
    services = 2_000 if quick else 10_000
    rows = []
    async with _Stack(*QUIET_LEASES) as stack:
        assert stack.router is not None
        nc = await nats.connect(stack.server.url)
        try:
            one = _registrations("admin-one", 1_000, services=1)
            many = [
                encode_msgpack(RegisterRequest(service_name=f"svc-{n:05d}", instance_id="i", session_id=SESSION))
                for n in range(services)
            ]
            for payloads in (one, many):
                await run_phase(
                    "setup", request_call(nc, REGISTER_SUBJECT, payloads, 10), concurrency=256, count=len(payloads)
                )
        finally:
            await nc.close()
        base_url = stack.router.admin_url
        targets = [
            ("GET /services/{name}, 1,000 instances", "/api/v1/admin/services/admin-one-0?limit=1000"),
            (f"GET /services, {services:,} services", "/api/v1/admin/services?limit=1000"),
        ]
        for name, path in targets:
            async with aiohttp.ClientSession() as session, session.get(base_url + path) as response:
                body = await response.read()
            process, port = await _static_server(body)
            try:
                base = await _http_load(f"http://127.0.0.1:{port}/static", 16, seconds)
                mine = await _http_load(base_url + path, 16, seconds)
            finally:
                process.send_signal(signal.SIGTERM)
                await process.wait()
            row = _row(f"{name} ({len(body):,} B)", mine, base)
            rows.append(row)
    return rows


class _QueryFlood:
    """Read-only queries from `clients` concurrent requesters, each sending its next
    query as soon as the last is answered, in a process of its own (so that this
    process measures registrations without sharing its event loop with the flood).
    Entered once every client has had an answer; `report` is set on exit."""

    def __init__(self, nats_url: str, clients: int) -> None:
        self.nats_url = nats_url
        self.clients = clients
        self.process: asyncio.subprocess.Process | None = None
        self.report: dict[str, Any] = {}

    async def __aenter__(self) -> Self:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.run", "--flood-queries", self.nats_url, str(self.clients),
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )  # fmt: skip
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        except TimeoutError:
            line = b""
        if line.strip() != b"READY":
            self.process.kill()
            await self.process.wait()
            raise RuntimeError(f"the query flood did not start: {line!r}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            output, _ = await asyncio.wait_for(self.process.communicate(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise RuntimeError("the query flood did not stop within 30 s") from None
        self.report = json.loads(output.splitlines()[-1])


def _flood_queries(nats_url: str, clients: int) -> None:
    """The query flood's process (`--flood-queries URL CLIENTS`): half the clients ask
    `list` for OFFLINE services (there are none: each query looks at as many services
    as the router lets one query look at), half `get` the big service with a metadata
    filter that matches no instance. Prints READY once every client has had an answer,
    floods until SIGTERM, then prints the outcomes counted since READY as one JSON line."""
    queries = [
        (LIST_SUBJECT, encode_msgpack(ListServicesRequest(status=InstanceStatus.OFFLINE, limit=1000))),
        (
            GET_SUBJECT,
            encode_msgpack(GetServiceRequest(service_name=FLOOD_SERVICE, status=None, metadata={"x": "none"})),
        ),
    ]

    async def run() -> None:
        connections = [await nats.connect(nats_url) for _ in range(FLOOD_CONNECTIONS)]
        outcomes: Counter[str] = Counter()
        answered = 0
        all_answered = asyncio.Event()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

        async def client(n: int) -> None:
            nonlocal answered
            nc = connections[n % len(connections)]
            subject, payload = queries[n % len(queries)]
            while not stop.is_set():  # as well as cancel: wait_for (3.11) can lose one
                outcomes[await timed_request(nc, subject, payload, 10)] += 1
                answered += 1
                if answered >= clients:
                    all_answered.set()

        tasks = [asyncio.create_task(client(n)) for n in range(clients)]
        await asyncio.wait_for(all_answered.wait(), 60)
        outcomes.clear()
        started = time.perf_counter()
        print("READY", flush=True)
        await stop.wait()
        seconds = time.perf_counter() - started
        counted = dict(outcomes)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for nc in connections:
            await nc.close()
        print(json.dumps({"seconds": round(seconds, 3), "outcomes": counted}), flush=True)

    asyncio.run(run())


async def query_flood(quick: bool) -> dict[str, Any]:
    """Registration latency beside the same registrations under a query flood."""
    big = 5_000 if quick else 20_000
    services = 2_000 if quick else 10_000
    count = 500 if quick else 2_000
    clients, in_flight = 200, 16
    async with _Stack(*QUIET_LEASES) as stack:
        nc = await nats.connect(stack.server.url)
        try:
            setup = [
                encode_msgpack(
                    RegisterRequest(
                        service_name=FLOOD_SERVICE, instance_id=f"i-{n:05d}", metadata={"zone": "a"}, session_id=SESSION
                    )
                )
                for n in range(big)
            ] + [
                encode_msgpack(RegisterRequest(service_name=f"one-{n:05d}", instance_id="only", session_id=SESSION))
                for n in range(services)
            ]
            await run_phase("setup", request_call(nc, REGISTER_SUBJECT, setup, 10), concurrency=256, count=len(setup))
            quiet = await run_phase(
                "quiet",
                request_call(nc, REGISTER_SUBJECT, _registrations("quiet", count), 5),
                concurrency=in_flight,
                count=count,
            )
            async with _QueryFlood(stack.server.url, clients) as flood:
                flooded = await run_phase(
                    "flooded",
                    request_call(nc, REGISTER_SUBJECT, _registrations("flooded", count), 5),
                    concurrency=in_flight,
                    count=count,
                )
        finally:
            await nc.close()
    outcomes: dict[str, int] = flood.report["outcomes"]
    seconds: float = flood.report["seconds"]
    return {
        "big_service_instances": big,
        "one_instance_services": services,
        "registrations": count,
        "in_flight": in_flight,
        "flood_clients": clients,
        "quiet": quiet.summary(),
        "flooded": flooded.summary(),
        "p50_ratio": _ratio(flooded.percentile(50), quiet.percentile(50)),
        "p99_ratio": _ratio(flooded.percentile(99), quiet.percentile(99)),
        "queries_per_second": round(sum(outcomes.values()) / seconds) if seconds else 0,
        "query_outcomes": outcomes,
    }


async def expiry(quick: bool) -> dict[str, Any]:
    count = 20_000 if quick else 100_000
    seconds = 5.0 if quick else 10.0
    async with _Stack("--max-instances-per-service", "100000") as stack:  # default leases
        assert stack.router is not None
        nc = await nats.connect(stack.server.url)
        try:
            payloads = _registrations("exp", count)
            await run_phase("setup", request_call(nc, REGISTER_SUBJECT, payloads, 10), concurrency=256, count=count)
            beats = _heartbeats("exp", count)
            cpu_before, started = stack.router.cpu_seconds(), time.perf_counter()
            result = await run_phase(
                "heartbeat", request_call(nc, HEARTBEAT_SUBJECT, beats, 10), concurrency=256, duration=seconds
            )
            cpu = stack.router.cpu_seconds() - cpu_before
            wall = time.perf_counter() - started
            async with aiohttp.ClientSession() as session:
                url = f"{stack.router.admin_url}/api/v1/admin/services?limit=1000"
                async with session.get(url) as response:
                    listing = await response.json()
        finally:
            await nc.close()
    counts: dict[str, int] = {}
    for service in listing["services"]:
        for status, n in service["status_counts"].items():
            counts[status] = counts.get(status, 0) + n
    return {
        "instances": count,
        "heartbeats_per_second": round(result.throughput),
        "each_instance_renewed_every_s": round(count / result.throughput, 2) if result.throughput else None,
        "router_cpu_seconds_per_second": round(cpu / wall, 3),
        "status_counts_after": counts,
        "errors": result.errors,
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"ipc-router benchmarks, {report['date']}, {report['machine']}, --store {report['store']}",
        "",
        f"{'measure':<48}{'ours':>12}{'baseline':>12}{'ratio':>8}{'p50 ms':>9}{'base p50':>10}{'p50 x':>7}{'p99 ms':>9}",
    ]
    for row in report["throughput"]:
        lines.append(
            f"{row['name']:<48}{row['throughput']:>10}/s{row['baseline_throughput']:>10}/s"
            f"{row['throughput_ratio']:>8}{row['p50_ms']:>9.3f}{row['baseline_p50_ms']:>10.3f}"
            f"{row['p50_ratio']:>7}{row['p99_ms']:>9.3f}"
            + (f"  errors {row['errors']}" if row["errors"] else "")
        )
    mem = report["memory"]
    lines += [
        "",
        (
            f"memory: {mem['instances']:,} instances with {mem['metadata_keys']} metadata keys: "
            f"RSS {mem['rss_before_mb']} -> {mem['rss_after_mb']} MiB = {mem['bytes_per_instance']} bytes per instance"
        ),
    ]
    flood = report["query_flood"]
    lines += [
        (
            f"query flood: {flood['big_service_instances']:,} instances of one service and "
            f"{flood['one_instance_services']:,} one-instance services; {flood['registrations']:,} "
            f"raw registrations, {flood['in_flight']} in flight"
        ),
    ]
    for label, phase in (
        ("quiet", flood["quiet"]),
        (f"while {flood['flood_clients']} clients query", flood["flooded"]),
    ):
        lines.append(
            f"  {label:<32}p50 {phase['p50_ms']:>8.3f} ms  p99 {phase['p99_ms']:>8.3f} ms"
            f"{phase['throughput']:>10,.0f}/s" + (f"  errors {phase['errors']}" if phase["errors"] else "")
        )
    lines.append(
        f"  p99 flooded / quiet: {flood['p99_ratio']} (p50: {flood['p50_ratio']}); queries answered "
        f"{flood['queries_per_second']:,}/s, outcomes {flood['query_outcomes']}"
    )
    exp = report["expiry"]
    lines.append(
        f"expiry: {exp['instances']:,} instances, heartbeats at {exp['heartbeats_per_second']:,}/s "
        f"(each renewed every {exp['each_instance_renewed_every_s']} s): router CPU "
        f"{exp['router_cpu_seconds_per_second']} s per s; statuses after: {exp['status_counts_after']}"
    )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sections: dict[str, Callable[[bool], Any]] = {
        "registration": registration,
        "heartbeat": heartbeat,
        "admin": admin,
        "query_flood": query_flood,
        "memory": memory,
        "expiry": expiry,
    }
    results: dict[str, Any] = {}
    for name, section in sections.items():
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = await section(args.quick)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
        "store": STORE,
        "throughput": results["registration"] + results["heartbeat"] + results["admin"],
        "memory": results["memory"],
        "query_flood": results["query_flood"],
        "expiry": results["expiry"],
    }


def _serve_static(port: int, path: str) -> None:
    body = Path(path).read_bytes()

    async def static(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/static", static)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("READY", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(run())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.add_argument(
        "--store", choices=("stream", "memory"), default="stream", help="the router's --store (default stream)"
    )
    parser.add_argument("--serve-static", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--flood-queries", nargs=2, metavar=("URL", "CLIENTS"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve_static:
        _serve_static(int(arguments.serve_static[0]), arguments.serve_static[1])
        sys.exit(0)
    if arguments.flood_queries:
        _flood_queries(arguments.flood_queries[0], int(arguments.flood_queries[1]))
        sys.exit(0)
    configure_logging("console", "warning")
    STORE = arguments.store
    report = asyncio.run(main(arguments))
    print(render(report))
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(report, indent=2))
