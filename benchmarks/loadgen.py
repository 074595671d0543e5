"""The load generator behind `ipc-router bench` and `benchmarks/run.py`: load-test a
router and compare it with the raw NATS round trip.

The load generator runs in this process; the router (unless `--nats-url` names a
running one) and an echo responder each run in a process of their own, on the same
nats-server, so the echo figures are the physical limit of a nats-py client on
this machine in this run, and the ratio is what the router costs on top.

This is client-side tooling, not part of the router: it needs the `bench` extra
(`pip install 'ipc-router[bench]'`, for tqdm), and `ipc-router bench` imports it only
when asked to run. `python benchmarks/loadgen.py echo URL` (or, from the repository
root, `python -m benchmarks.loadgen echo URL`) is the echo responder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import msgspec
import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from tqdm import tqdm  # the bench extra: without it, importing this module fails

from actors.embedded_nats import NatsServerProcess, free_port
from protocol import (
    DEREGISTER_SUBJECT,
    GET_SUBJECT,
    HEARTBEAT_SUBJECT,
    LIST_SUBJECT,
    REGISTER_SUBJECT,
    ROUTER_PRESENCE_SUBJECT,
    GetServiceRequest,
    LeaseRequest,
    ListServicesRequest,
    RegisterRequest,
    encode_msgpack,
)

__all__ = [
    "ECHO_SUBJECT",
    "QUIET_LEASES",
    "SIZED_ECHO_PREFIX",
    "BenchConfig",
    "Call",
    "EchoResponder",
    "PhaseResult",
    "RouterProcess",
    "format_ratio",
    "free_port",
    "instance_names",
    "lease_payloads",
    "percentile",
    "register_payloads",
    "render_report",
    "reply_status",
    "report_json",
    "request_call",
    "router_command",
    "router_presence",
    "run_bench",
    "run_phase",
    "timed_request",
]

ECHO_SUBJECT = "ipc.bench.echo"
SIZED_ECHO_PREFIX = "ipc.bench.sized"
"""`ipc.bench.sized.<n>` answers with n bytes: a baseline for replies bigger than
their request."""
_STATUS_KEY = b"\xa6status"
_THIS_FILE = str(Path(__file__).resolve())
"""This module as a script: the echo responder's process runs it."""


# -- measuring ----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`th percentile of `values` (nearest rank); 0.0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


@dataclass
class PhaseResult:
    """Throughput and latency of one phase."""

    name: str
    requests: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    outcomes: dict[str, int]

    @property
    def throughput(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in milliseconds (nearest rank)."""
        return percentile(self.latencies_ms, q)

    @property
    def errors(self) -> dict[str, int]:
        """Outcomes other than success, by status or error kind."""
        return {k: v for k, v in self.outcomes.items() if k not in ("200", "201")}

    def summary(self) -> dict[str, Any]:
        """The figures, rounded, for the report."""
        return {
            "name": self.name,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "throughput": round(self.throughput, 1),
            "p50_ms": round(self.percentile(50), 3),
            "p95_ms": round(self.percentile(95), 3),
            "p99_ms": round(self.percentile(99), 3),
            "max_ms": round(max(self.latencies_ms, default=0.0), 3),
            "errors": self.errors,
        }


Call = Callable[[int], Awaitable[str]]
"""One request for item `i`; returns the outcome ("201", "409", "timeout", ...)."""


async def run_phase(
    name: str,
    call: Call,
    *,
    concurrency: int,
    count: int | None = None,
    duration: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> PhaseResult:
    """Run `call(i)` for i = 0, 1, ... with `concurrency` requests in flight, until
    `count` requests are done or `duration` seconds have passed."""
    if count is None and duration is None:
        raise ValueError("a phase needs a count or a duration")
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    next_index = 0
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    deadline = loop.time() + duration if duration is not None else None

    async def worker() -> None:
        nonlocal next_index
        while True:
            if count is not None and next_index >= count:
                return
            if deadline is not None and loop.time() >= deadline:
                return
            index = next_index
            next_index += 1
            t0 = time.perf_counter()
            try:
                outcome = await call(index)
            except Exception as error:  # noqa: BLE001 - counted, never hidden
                outcome = type(error).__name__
            latencies.append((time.perf_counter() - t0) * 1000)
            outcomes[outcome] += 1
            if progress is not None:
                progress(1)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return PhaseResult(name, len(latencies), time.perf_counter() - started, latencies, dict(outcomes))


def reply_status(data: bytes) -> str:
    """The `status` of a msgpack reply map, read without decoding the whole reply:
    the router always encodes `status` first, as a positive fixint or uint16."""
    at = data.find(_STATUS_KEY)
    if at < 0:
        return "unreadable"
    code = data[at + len(_STATUS_KEY)]
    if code < 0x80:
        return str(code)
    if code == 0xCD:
        return str(int.from_bytes(data[at + 8 : at + 10], "big"))
    if code == 0xCC:
        return str(data[at + 8])
    return "unreadable"


async def timed_request(
    nc: NatsClient, subject: str, payload: bytes, timeout: float, *, echo: bool = False
) -> str:
    """One request/reply; the outcome is the reply status (200 for any echo) or the
    failure kind."""
    try:
        msg = await nc.request(subject, payload, timeout=timeout)
    except nats.errors.NoRespondersError:
        return "no_responders"
    except nats.errors.TimeoutError:
        return "timeout"
    return "200" if echo else reply_status(msg.data)


def request_call(
    nc: NatsClient, subject: str, payloads: Sequence[bytes], timeout: float, *, echo: bool = False
) -> Call:
    """A `call(i)` for run_phase: one `timed_request` with `payloads[i]` (cycling
    through them)."""

    def call(i: int) -> Awaitable[str]:
        return timed_request(nc, subject, payloads[i % len(payloads)], timeout, echo=echo)

    return call


# -- processes ----------------------------------------------------------------------


def router_command() -> list[str]:
    """The `ipc-router` script next to this Python, or the module."""
    script = Path(sys.executable).parent / "ipc-router"
    return [str(script)] if script.exists() else [sys.executable, "-m", "actors"]


QUIET_LEASES = ["--heartbeat-interval", "600", "--lease-ttl", "3600"]
"""Router options under which no instance expires while a phase runs."""


class RouterProcess:
    """`ipc-router serve` in a subprocess, ready once its /healthz answers 200 and it
    takes writes (it leads, or keeps the registry in memory).

    A subclass may change what ready means (`_ready`), send the router's log
    somewhere (`log_output`) and start reading it (`_spawned`)."""

    log_output: int = asyncio.subprocess.DEVNULL
    """The router's stderr, where its log goes: DEVNULL, or PIPE for a subclass that
    reads it."""

    def __init__(self, nats_url: str, *extra: str, log_level: str = "warning") -> None:
        self.http_port = free_port()
        self.log_level = log_level
        self.args = [
            "serve", "--nats-url", nats_url, "--http-port", str(self.http_port),
            "--log-level", log_level, "--log-format", "json", *extra,
        ]  # fmt: skip
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def start(self, timeout: float = 20.0) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *router_command(), *self.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self.log_output,
        )  # fmt: skip
        self._spawned()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as http:
            while loop.time() < deadline:
                if self.process.returncode is not None:
                    raise RuntimeError(f"router exited with code {self.process.returncode}")
                if await self._ready(http):
                    return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"router not ready within {timeout} s")

    def _spawned(self) -> None:
        """Called once the process is started, before it is polled for readiness."""

    async def _ready(self, http: aiohttp.ClientSession) -> bool:
        """One readiness poll: /healthz answers 200 and the router takes writes."""
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{self.admin_url}/healthz") as response:
                health = await response.json(content_type=None)
                # Ready for writes: in stream mode once it leads (a standby that has
                # read the stream is healthy too, but takes no writes).
                return response.status == 200 and health.get("role") != "standby"
        return False

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU time the router process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        """Resident set size of the router process."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")


class EchoResponder:
    """A nats-py echo responder in its own process: the raw round-trip baseline.

    It runs this file as a script, so it starts whatever the working directory and
    whether or not `benchmarks` is an installed package."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, _THIS_FILE, "echo", self.nats_url,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 20)
        if line.strip() != b"READY":
            raise RuntimeError(f"echo responder failed to start: {line!r}")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


async def _echo_main(url: str) -> None:
    async def quiet(error: Exception) -> None:
        pass

    nc = await nats.connect(url, error_cb=quiet)

    async def echo(msg: Any) -> None:
        await msg.respond(msg.data)

    bodies: dict[int, bytes] = {}

    async def sized(msg: Any) -> None:
        size = int(msg.subject.rsplit(".", 1)[1])
        body = bodies.get(size)
        if body is None:
            body = bodies[size] = b"x" * min(size, 1024 * 1024)
        await msg.respond(body)

    await nc.subscribe(ECHO_SUBJECT, cb=echo)
    await nc.subscribe(f"{SIZED_ECHO_PREFIX}.*", cb=sized)
    await nc.flush()
    print("READY", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await nc.close()


# -- the bench command ----------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """What `ipc-router bench` was asked to do."""

    instances: int = 10_000
    services: int = 100
    concurrency: int = 64
    heartbeat_seconds: float = 5.0
    nats_url: str | None = None
    raw: bool = False
    timeout: float = 5.0
    progress: bool = True
    uvloop: bool = False
    """Start the router with --uvloop (when the bench starts it)."""
    store: str = "stream"
    """The router's --store (when the bench starts it)."""


ROUTER_LOG_LEVEL = "warning"
"""The log level of a router the bench starts: at info every registration is also a
log line, which costs the router CPU the bench would count against it."""
UNKNOWN_LOG_LEVEL = "unknown (info logging costs registration throughput)"
RATIO_DECIMALS = 2
"""Every ratio is printed with this many decimals (the JSON report keeps 3)."""
PHASE_MEANINGS = (
    "register = registrations of new instances, heartbeat = lease renewals of those "
    "instances, query = ipc.service.get of one service (ONLINE, limit 1000); each echo-* "
    "row sends the same payloads to a raw nats-py echo responder (query: a reply of the "
    "same size)"
)
"""What each row of the report measures, in one line."""


def instance_names(prefix: str, count: int, services: int) -> list[tuple[str, str]]:
    """(service, instance) of `count` instances spread over `services` services:
    `<prefix>-<i % services>`, `i-<i>`."""
    return [(f"{prefix}-{i % services}", f"i-{i}") for i in range(count)]


def _run_names(config: BenchConfig, run_id: str) -> list[tuple[str, str]]:
    """(service, instance) of every instance of one run: ids no other run uses, so that
    runs against the same router never collide with what an earlier one left."""
    return instance_names(f"bench-{run_id}", config.instances, config.services)


def register_payloads(names: Sequence[tuple[str, str]], session: str) -> list[bytes]:
    """A registration of each (service, instance), in `session`, with the bench's
    metadata (3 keys; `index` is the position in `names`)."""
    return [
        encode_msgpack(
            RegisterRequest(
                service_name=service,
                instance_id=instance,
                metadata={"zone": "a", "version": "1.0.0", "index": str(i)},
                session_id=session,
            )
        )
        for i, (service, instance) in enumerate(names)
    ]


def lease_payloads(names: Sequence[tuple[str, str]], session: str) -> list[bytes]:
    """A lease request (heartbeat or deregistration) of each (service, instance), in
    `session`."""
    return [
        encode_msgpack(LeaseRequest(service_name=s, instance_id=i, session_id=session))
        for s, i in names
    ]


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    @contextlib.contextmanager
    def phase(self, name: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
        if not self.enabled:
            yield None
            return
        with tqdm(total=total, desc=f"{name:<16}", unit="req", file=sys.stderr, leave=False) as bar:
            yield bar.update


async def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run the whole bench (baselines included) and deregister what it registered;
    returns the report as a dict (`report["ok"]` is false when anything failed)."""
    server: NatsServerProcess | None = None
    router: RouterProcess | None = None
    echo: EchoResponder | None = None
    nats_url = config.nats_url
    router_info: dict[str, Any] = {"started_by_bench": nats_url is None, "log_level": None}
    try:
        if nats_url is None:
            # JetStream on: the router's default store is a stream.
            server = NatsServerProcess(port=free_port(), jetstream=True)
            await server.start()
            nats_url = server.url
            extra = ["--store", config.store, *(["--uvloop"] if config.uvloop else [])]
            router = RouterProcess(nats_url, *extra, log_level=ROUTER_LOG_LEVEL)
            await router.start()
            router_info["log_level"] = ROUTER_LOG_LEVEL
        echo = EchoResponder(nats_url)
        await echo.start()
        return await _measure(config, nats_url, router_info)
    finally:
        if echo is not None:
            await echo.stop()
        if router is not None:
            await router.stop()
        if server is not None:
            await server.stop()


async def router_presence(nc: NatsClient, wait: float = 0.3) -> list[dict[str, Any]]:
    """How the routers on this NATS system keep their registry, as they answer each
    other on `ipc.router.presence` within `wait` seconds: maps with `mode` ("stream" or
    "memory"), `stream` and `router`. Empty when none answers (or the NATS user may
    not ask)."""
    answers: list[dict[str, Any]] = []

    async def collect(msg: Any) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            answer = msgspec.msgpack.decode(msg.data)
            if isinstance(answer, dict):
                answers.append(answer)

    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(ROUTER_PRESENCE_SUBJECT, encode_msgpack({"mode": "bench"}), reply=inbox)
        await nc.flush()
        await asyncio.sleep(wait)  # answers come from every router: no single reply to await
    finally:
        await subscription.unsubscribe()
    return answers


def _store_of(presence: list[dict[str, Any]]) -> str:
    """The store mode for the report header, from the routers' presence answers."""
    if not presence:
        return "unknown (no router answered on ipc.router.presence)"
    modes = sorted(
        {
            f"stream {answer.get('stream')}" if answer.get("mode") == "stream" else str(answer.get("mode"))
            for answer in presence
        }
    )
    routers = f"{len(presence)} router{'s' if len(presence) != 1 else ''}"
    return f"{', '.join(modes)} ({routers})"


async def _measure(config: BenchConfig, nats_url: str, router_info: dict[str, Any]) -> dict[str, Any]:
    from sdk import RegistryError, ServiceClient

    progress = _Progress(config.progress)
    run_id = os.urandom(4).hex()
    names = _run_names(config, run_id)
    session = f"bench-{run_id}-" + os.urandom(8).hex()
    registrations = register_payloads(names, session)
    nc = await nats.connect(nats_url, max_reconnect_attempts=0)
    phases: list[PhaseResult] = []
    cleanup: PhaseResult | None = None
    listing = "not sent"

    async def phase(name: str, call: Call, count: int | None = None, duration: float | None = None) -> PhaseResult:
        with progress.phase(name, count) as tick:
            result = await run_phase(
                name, call, concurrency=config.concurrency, count=count, duration=duration, progress=tick
            )
        phases.append(result)
        return result

    try:
        router_info["store"] = _store_of(await router_presence(nc))
        # Registration: the echo baseline sends the same bytes to the echo responder.
        await phase(
            "echo-register",
            request_call(nc, ECHO_SUBJECT, registrations, config.timeout, echo=True),
            count=config.instances,
        )
        if config.raw:
            await phase(
                "register",
                request_call(nc, REGISTER_SUBJECT, registrations, config.timeout),
                count=config.instances,
            )
        else:
            # No heartbeats of its own and no close(): the bench renews and deregisters
            # the SDK's instances itself, with the SDK's session.
            client = ServiceClient(nc=nc, heartbeat=False, timeout=config.timeout, retries=0)
            session = client._session_id  # noqa: SLF001
            metadata = [{"zone": "a", "version": "1.0.0", "index": str(i)} for i in range(config.instances)]

            async def sdk_register(i: int) -> str:
                try:
                    info = await client.register(*names[i], metadata[i])
                except RegistryError as error:
                    return str(error.status)
                return "201" if info.created else "200"

            await phase("register", sdk_register, count=config.instances)
        heartbeats = lease_payloads(names, session)
        await phase(
            "echo-heartbeat",
            request_call(nc, ECHO_SUBJECT, heartbeats, config.timeout, echo=True),
            duration=config.heartbeat_seconds,
        )
        await phase(
            "heartbeat",
            request_call(nc, HEARTBEAT_SUBJECT, heartbeats, config.timeout),
            duration=config.heartbeat_seconds,
        )
        services = sorted({service for service, _ in names})
        gets = [encode_msgpack(GetServiceRequest(service_name=s, limit=1000)) for s in services]
        # The query baseline answers with as many bytes as the router's reply.
        sample = await nc.request(GET_SUBJECT, gets[0], timeout=config.timeout)
        sized = f"{SIZED_ECHO_PREFIX}.{len(sample.data)}"
        await phase(
            "echo-query",
            request_call(nc, sized, gets, config.timeout, echo=True),
            count=len(services) * 10,
        )
        await phase(
            "query",
            request_call(nc, GET_SUBJECT, gets, config.timeout),
            count=len(services) * 10,
        )
        listing = await timed_request(nc, LIST_SUBJECT, encode_msgpack(ListServicesRequest()), config.timeout)
    finally:
        # Leave nothing behind, whatever happened: deregistration is idempotent, so
        # every id of the run is deregistered, registered or not.
        with contextlib.suppress(nats.errors.Error):
            leaving = lease_payloads(names, session)
            cleanup = await run_phase(
                "deregister",
                request_call(nc, DEREGISTER_SUBJECT, leaving, config.timeout),
                concurrency=config.concurrency,
                count=len(leaving),
            )
        await nc.close()
    return _report(config, run_id, router_info, phases, cleanup, listing)


def _report(
    config: BenchConfig,
    run_id: str,
    router_info: dict[str, Any],
    phases: list[PhaseResult],
    cleanup: PhaseResult | None,
    listing: str,
) -> dict[str, Any]:
    by_name = {p.name: p for p in phases}
    ratios: dict[str, Any] = {}
    for name in ("register", "heartbeat", "query"):
        mine, echo = by_name[name], by_name[f"echo-{name}"]
        errors = {**{f"echo {k}": v for k, v in echo.errors.items()}, **mine.errors}
        if errors:  # a ratio of a run with errors compares nothing: withheld
            ratios[name] = {"throughput": None, "p50": None, "errors": errors}
            continue
        ratios[name] = {
            "throughput": round(mine.throughput / echo.throughput, 3) if echo.throughput else None,
            "p50": round(mine.percentile(50) / echo.percentile(50), 3) if echo.percentile(50) else None,
            "errors": {},
        }
    cleanup_errors = cleanup.errors if cleanup is not None else {"not run": 1}
    ok = (
        all(not ratio["errors"] for ratio in ratios.values())
        and not cleanup_errors
        and listing == "200"
    )
    return {
        "ok": ok,
        "run_id": run_id,
        "config": asdict(config),
        "router": router_info,
        "measures": PHASE_MEANINGS,
        "phases": [p.summary() for p in phases],
        "ratios": ratios,
        "list_status": listing,
        "cleanup": {
            "deregistered": cleanup.requests if cleanup is not None else 0,
            "errors": cleanup_errors,
        },
    }


def format_ratio(value: float | None) -> str:
    """A ratio as the report prints it: `x0.73` (always `RATIO_DECIMALS` decimals)."""
    return "n/a" if value is None else f"x{value:.{RATIO_DECIMALS}f}"


def render_report(report: dict[str, Any], out: TextIO) -> None:
    """The report as a readable table. A row with errors gets no ratio."""
    config, router = report["config"], report["router"]
    out.write(
        f"ipc-router bench, run {report['run_id']}: {config['instances']} instances in "
        f"{config['services']} services, {config['concurrency']} in flight, heartbeats for "
        f"{config['heartbeat_seconds']} s, {'raw nats-py' if config['raw'] else 'SDK'} registrations\n"
    )
    started = "started by the bench (nats-server with JetStream)" if router["started_by_bench"] else "external"
    out.write(
        f"router: {started}; store: {router.get('store', 'unknown')}; "
        f"log level: {router['log_level'] or UNKNOWN_LOG_LEVEL}\n"
    )
    out.write(f"rows: {report['measures']}\n\n")
    header = f"{'phase':<16}{'requests':>10}{'req/s':>11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}  errors\n"
    out.write(header)
    for phase in report["phases"]:
        errors = ", ".join(f"{k}: {v}" for k, v in phase["errors"].items()) or "-"
        out.write(
            f"{phase['name']:<16}{phase['requests']:>10}{phase['throughput']:>11.0f}"
            f"{phase['p50_ms']:>9.3f}{phase['p95_ms']:>9.3f}{phase['p99_ms']:>9.3f}"
            f"{phase['max_ms']:>9.3f}  {errors}\n"
        )
    out.write("\nratio to the raw NATS echo round trip (same payloads, same run):\n")
    for name, ratio in report["ratios"].items():
        if ratio["errors"]:
            out.write(f"  {name:<10} ratio n/a (errors: {ratio['errors']})\n")
        else:
            out.write(
                f"  {name:<10} throughput {format_ratio(ratio['throughput'])}   "
                f"p50 {format_ratio(ratio['p50'])}\n"
            )
    cleanup = report["cleanup"]
    out.write(
        f"\ncleanup: {cleanup['deregistered']} ids of this run deregistered"
        + (f" (errors: {cleanup['errors']})" if cleanup["errors"] else "")
        + "\n"
    )
    if report["list_status"] != "200":
        out.write(f"list request: {report['list_status']}\n")
    if not report["ok"]:
        out.write("bench: FAILED, errors above; no ratio is given for a row with errors\n")


def report_json(report: dict[str, Any]) -> str:
    """The report as JSON."""
    return json.dumps(report, indent=2)


def main(argv: Sequence[str]) -> int:  # pragma: no cover - the echo responder process
    """`echo NATS_URL`: run the echo responder until SIGTERM."""
    if len(argv) == 2 and argv[0] == "echo":
        asyncio.run(_echo_main(argv[1]))
        return 0
    print("usage: python benchmarks/loadgen.py echo NATS_URL", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
