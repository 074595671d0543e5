"""Failover and the cost of the replicated registry (issue 11.7).

    .venv/bin/python -m benchmarks.failover [--quick] [--json FILE]

Failover: a local three-node NATS cluster with JetStream (tests/support/cluster.py),
three `ipc-router serve --replicas 3` subprocesses on it, and a steady load: the SDK
registering new instances one after another, and 200 instances kept alive by the
SDK's heartbeats. The leader is SIGKILLed 10 times (3 with --quick), each time a
replacement router is started so that three run again. Per kill:
  - takeover to the first write: from the SIGKILL to the first registration answered
    by the new leader (probes sent every 20 ms from the SIGKILL on, each a new
    instance, so only a live leader can answer them);
  - takeover to `leadership_taken`: to the timestamp of the new leader's log line.
At the end, with the load stopped: every acknowledged registration (the SDK's and the
probes') must be present on every router, and no heartbeating instance may have been
marked UNHEALTHY (counted from the change events) or be anything but ONLINE.

Throughput: raw nats-py registrations and heartbeats at 64 in flight against one
router with (a) `--store memory`, (b) `--store stream` on one nats-server (R1), (c)
`--store stream --replicas 3` on a three-node cluster (R3), each beside the raw NATS
echo round trip measured on the same NATS in the same run, and R1/memory, R3/memory.

Targets (README): takeover <= 1 s (max); heartbeats >= 0.9x memory; registration R1
>= 0.6x memory at 64 in flight. No assertions: the report says met or not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

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
    percentile,
    register_payloads,
    request_call,
    run_phase,
    timed_request,
)
from protocol import (
    EVENTS_WILDCARD,
    HEARTBEAT_SUBJECT,
    REGISTER_SUBJECT,
    EventType,
    RegisterRequest,
    decode_event,
    encode_msgpack,
)
from sdk import RegistryError, ServiceClient
from sdk.connection import servers
from tests.support.cluster import NatsCluster

SESSION = "bench-failover-session-" + os.urandom(6).hex()
IN_FLIGHT = 64
FAILOVER_AFTER = 0.5
STEADY = "steady"
"""The service whose instances the SDK keeps alive with heartbeats."""
WRITTEN = "written"
"""The service the steady writer registers new instances of."""
PROBE = "probe"
"""The service the takeover probes register new instances of."""
PROBE_EVERY = 0.02
KEEP = ["--offline-after", "3600", "--offline-retention", "3600"]
"""Failover routers keep every acknowledged registration for the whole run (the
writer's instances are not renewed: they turn UNHEALTHY, never OFFLINE or forgotten)."""
REQUEST_TIMEOUT = 5.0
"""Seconds a throughput request waits for its reply."""
SETTLE = 2.0
"""Seconds between timed phases of a throughput stack."""
TARGETS = {"takeover_max_s": 1.0, "heartbeat_vs_memory": 0.9, "register_r1_vs_memory": 0.6}


def _log_time(event: dict[str, Any]) -> float:
    """A JSON log line's timestamp (structlog's ISO 8601, UTC) as a Unix time."""
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


class LoggedRouter(RouterProcess):
    """loadgen's RouterProcess at log level info, its JSON log on a pipe: the
    `leadership_taken` lines are kept (every other line is read and dropped). Ready
    once /healthz answers 200, as a standby too."""

    log_output = asyncio.subprocess.PIPE

    def __init__(self, nats_url: str, *extra: str) -> None:
        super().__init__(nats_url, *extra, log_level="info")
        self.taken: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None
        self.killed_at: float | None = None

    async def start(self, timeout: float = 30.0) -> None:  # three routers start at once
        await super().start(timeout)

    def _spawned(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _ready(self, http: aiohttp.ClientSession) -> bool:
        return await self.health() is not None

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while line := await self.process.stderr.readline():
            if b"leadership_taken" in line:
                with contextlib.suppress(ValueError):
                    self.taken.append(json.loads(line))

    async def health(self) -> dict[str, Any] | None:
        """/healthz when it answers 200, else None."""
        timeout = aiohttp.ClientTimeout(total=2)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(f"{self.admin_url}/healthz") as response,
            ):
                if response.status != 200:
                    return None
                body: dict[str, Any] = await response.json()
                return body
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def kill(self) -> None:
        """SIGKILL, and reap it."""
        assert self.process is not None
        self.killed_at = time.time()
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def stop(self) -> None:
        await super().stop()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


# -- the steady load -------------------------------------------------------------------


class SteadyLoad:
    """200 instances heartbeated by the SDK, and SDK registrations one after another;
    records what was acknowledged, what failed, and UNHEALTHY events of the 200."""

    def __init__(self, url: str, keep_alive: int = 200, pause: float = 0.005) -> None:
        self.url = url
        self.keep_alive = keep_alive
        self.pause = pause
        self.keeper = ServiceClient(url)
        self.writer = ServiceClient(url, heartbeat=False)
        self.acknowledged: list[str] = []
        self.failures: list[str] = []
        self.slowest = 0.0
        self.unhealthy: list[str] = []
        self._events: NatsClient | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._events = await nats.connect(servers(self.url))
        await self._events.subscribe(EVENTS_WILDCARD, cb=self._on_event)
        await self._events.flush()
        await self.keeper.connect()
        await self.writer.connect()
        for n in range(self.keep_alive):
            await self.keeper.register(STEADY, f"s-{n:03d}")
        self._task = asyncio.create_task(self._write())

    async def _on_event(self, msg: Msg) -> None:
        event = decode_event(msg.data)
        if event.type is EventType.UNHEALTHY and event.instance.service_name == STEADY:
            self.unhealthy.append(event.instance.instance_id)

    async def _write(self) -> None:
        n = 0
        while not self._stop.is_set():
            instance = f"w-{n:06d}"
            started = time.perf_counter()
            try:
                await self.writer.register(WRITTEN, instance)
                self.acknowledged.append(instance)
                self.slowest = max(self.slowest, time.perf_counter() - started)
            except RegistryError as error:
                self.failures.append(f"{instance}: {error!r}")
            n += 1
            await asyncio.sleep(self.pause)

    async def stop_writing(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def close(self) -> None:
        await self.stop_writing()
        await self.writer.close()
        await self.keeper.close()
        if self._events is not None:
            await self._events.close()


async def _first_write(
    nc: NatsClient, prefix: str, timeout: float = 10.0
) -> tuple[float | None, list[str]]:
    """Registrations of new instances sent every PROBE_EVERY seconds until one is
    answered 201: (the Unix time of the first 201, every id acknowledged)."""
    answered: list[tuple[float, str]] = []
    first = asyncio.Event()

    async def probe(instance: str) -> None:
        payload = encode_msgpack(
            RegisterRequest(service_name=PROBE, instance_id=instance, session_id=SESSION)
        )
        if await timed_request(nc, REGISTER_SUBJECT, payload, 2.0) == "201":
            answered.append((time.time(), instance))
            first.set()

    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    n = 0
    while not first.is_set() and loop.time() < deadline:
        tasks.append(asyncio.create_task(probe(f"{prefix}-{n:04d}")))
        n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(first.wait(), PROBE_EVERY)
    await asyncio.gather(*tasks)
    return (min(at for at, _ in answered) if answered else None), [
        instance for _, instance in answered
    ]


async def _leader(routers: list[LoggedRouter], timeout: float = 15.0) -> LoggedRouter:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for router in routers:
            health = await router.health()
            if health is not None and health.get("role") == "leader":
                return router
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no leader within {timeout} s")


async def _instances(router: LoggedRouter, service: str) -> dict[str, str]:
    """instance id -> status of every instance of `service` the router shows."""
    found: dict[str, str] = {}
    cursor: str | None = None
    async with aiohttp.ClientSession() as http:
        while True:
            params = {"status": "any", "limit": "1000", **({"cursor": cursor} if cursor else {})}
            url = f"{router.admin_url}/api/v1/admin/services/{service}"
            async with http.get(url, params=params) as response:
                if response.status == 404:
                    return found
                body = await response.json()
            found.update({i["instance_id"]: i["status"] for i in body["instances"]})
            cursor = body.get("next_cursor")
            if not cursor:
                return found


async def _leadership_taken(
    routers: list[LoggedRouter], marks: dict[int, int], timeout: float = 10.0
) -> tuple[LoggedRouter, dict[str, Any]] | None:
    """The first `leadership_taken` line a router logs after its mark (lines it had
    logged before), waiting for one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for router in routers:
            new = router.taken[marks[id(router)] :]
            if new:
                return router, new[0]
        await asyncio.sleep(0.02)
    return None


@dataclass
class Kill:
    """One SIGKILLed leader and its successor."""

    number: int
    killed_pid: int
    first_write_s: float | None = None
    leadership_taken_s: float | None = None
    new_leader_pid: int | None = None
    term: int | None = None
    probes_acknowledged: int = 0
    replacement_ready_s: float = 0.0
    notes: list[str] = field(default_factory=list)


async def failover(quick: bool) -> dict[str, Any]:
    kills = 3 if quick else 10
    cluster = NatsCluster(3, name="ipc-bench")
    await cluster.start()
    routers: list[LoggedRouter] = []
    load: SteadyLoad | None = None
    probes: NatsClient | None = None
    results: list[Kill] = []
    probe_ids: list[str] = []
    options = ["--replicas", "3", "--failover-after", str(FAILOVER_AFTER), *KEEP]

    async def new_router() -> LoggedRouter:
        router = LoggedRouter(cluster.url, *options)
        await router.start()
        routers.append(router)
        return router

    try:
        for _ in range(3):
            await new_router()
        load = SteadyLoad(cluster.url)
        await load.start()
        probes = await nats.connect(servers(cluster.url))
        await asyncio.sleep(2.0)  # steady state: leases renewed, standbys caught up
        for number in range(1, kills + 1):
            leader = await _leader(routers)
            others = [router for router in routers if router is not leader]
            marks = {id(router): len(router.taken) for router in others}
            kill = Kill(number, leader.pid)
            print(
                f"  kill {number}/{kills}: SIGKILL leader pid {leader.pid}",
                file=sys.stderr,
                flush=True,
            )
            await leader.kill()
            killed_at = leader.killed_at
            assert killed_at is not None
            routers.remove(leader)
            first_at, acknowledged = await _first_write(probes, f"k{number:02d}")
            probe_ids += acknowledged
            kill.probes_acknowledged = len(acknowledged)
            if first_at is not None:
                kill.first_write_s = round(first_at - killed_at, 3)
            else:
                kill.notes.append("no write answered within 10 s")
            successor_line = await _leadership_taken(others, marks)
            if successor_line is None:
                kill.notes.append("no leadership_taken within 10 s")
            else:
                successor, event = successor_line
                kill.leadership_taken_s = round(_log_time(event) - killed_at, 3)
                kill.new_leader_pid = successor.pid
                kill.term = event.get("term")
            started = time.perf_counter()
            await new_router()  # three again
            kill.replacement_ready_s = round(time.perf_counter() - started, 3)
            results.append(kill)
            print(
                f"    first write after {kill.first_write_s} s, leadership_taken after "
                f"{kill.leadership_taken_s} s (pid {kill.new_leader_pid}, term {kill.term})",
                file=sys.stderr,
                flush=True,
            )
            await asyncio.sleep(1.5)  # the replacement caught up; leases renewed
        await load.stop_writing()
        await asyncio.sleep(1.0)  # the last heartbeats go round
        # Every router at the same revision before comparing.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        revisions: set[Any] = set()
        while loop.time() < deadline:
            healths = [await router.health() for router in routers]
            revisions = {h.get("revision") if h else None for h in healths}
            if len(revisions) == 1 and None not in revisions:
                break
            await asyncio.sleep(0.2)
        lost: dict[str, int] = {}
        not_online: dict[str, int] = {}
        for router in routers:
            written = await _instances(router, WRITTEN)
            probed = await _instances(router, PROBE)
            steady = await _instances(router, STEADY)
            missing = [i for i in load.acknowledged if i not in written] + [
                i for i in probe_ids if i not in probed
            ]
            lost[str(router.pid)] = len(missing)
            not_online[str(router.pid)] = sum(
                1 for status in steady.values() if status != "ONLINE"
            ) + (load.keep_alive - len(steady))
        first_writes = [k.first_write_s for k in results if k.first_write_s is not None]
        taken = [k.leadership_taken_s for k in results if k.leadership_taken_s is not None]
        return {
            "kills": kills,
            "routers": 3,
            "replicas": 3,
            "failover_after_s": FAILOVER_AFTER,
            "heartbeating_instances": load.keep_alive,
            "per_kill": [vars(k) for k in results],
            "takeover_first_write_s": _summary(first_writes, kills),
            "takeover_leadership_taken_s": _summary(taken, kills),
            "acknowledged_registrations": len(load.acknowledged) + len(probe_ids),
            "acknowledged_lost_per_router": lost,
            "acknowledged_lost": max(lost.values(), default=0),
            "registration_failures": len(load.failures),
            "registration_failure_samples": load.failures[:5],
            "slowest_acknowledged_registration_s": round(load.slowest, 3),
            "wrongly_unhealthy_events": len(load.unhealthy),
            "wrongly_unhealthy_instances": sorted(set(load.unhealthy)),
            "heartbeating_not_online_per_router": not_online,
            "revisions_agree": len(revisions) == 1,
        }
    finally:
        if load is not None:
            await load.close()
        if probes is not None:
            await probes.close()
        for router in routers:
            await router.stop()
        await cluster.stop()


def _summary(values: list[float], expected: int) -> dict[str, Any]:
    if not values:
        return {"measured": 0, "of": expected}
    return {
        "measured": len(values),
        "of": expected,
        "p50": round(statistics.median(values), 3),
        "p90": round(percentile(values, 90), 3),
        "max": round(max(values), 3),
        "min": round(min(values), 3),
    }


# -- throughput ------------------------------------------------------------------------


@dataclass
class Stack:
    """One router (with its echo baseline and a client) on its own NATS, measured in
    rounds together with the other stacks."""

    label: str
    name: str
    router_args: list[str]
    url: str = ""
    router: RouterProcess | None = None
    echo: EchoResponder | None = None
    nc: NatsClient | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)


async def _stack_nats(stack: Stack, exits: contextlib.AsyncExitStack) -> None:
    """(a), (b): one nats-server with JetStream. (c): a three-node cluster, of which
    the router, the echo responder and the client all use ONE node, so that the
    router's round trips cross no more routes than the echo's (the stream's
    replication is the cluster's business)."""
    if stack.label == "r3":
        cluster = NatsCluster(3, name="ipc-bench-r3")
        await cluster.start()
        exits.push_async_callback(cluster.stop)
        stack.url = cluster.servers[0].url
    else:
        server = NatsServerProcess(port=free_port(), jetstream=True)
        await server.start()
        exits.push_async_callback(server.stop)
        stack.url = server.url


async def _start_stack(stack: Stack, exits: contextlib.AsyncExitStack) -> None:
    await _stack_nats(stack, exits)
    stack.router = RouterProcess(stack.url, *QUIET_LEASES, *stack.router_args)
    await stack.router.start(timeout=60)
    exits.push_async_callback(stack.router.stop)
    stack.echo = EchoResponder(stack.url)
    await stack.echo.start()
    exits.push_async_callback(stack.echo.stop)
    stack.nc = await nats.connect(stack.url)
    exits.push_async_callback(stack.nc.close)


def _row(mine: PhaseResult, base: PhaseResult) -> dict[str, Any]:
    return {
        "throughput": round(mine.throughput),
        "echo_throughput": round(base.throughput),
        "vs_echo": round(mine.throughput / base.throughput, 3) if base.throughput else None,
        "p50_ms": round(mine.percentile(50), 3),
        "echo_p50_ms": round(base.percentile(50), 3),
        "p99_ms": round(mine.percentile(99), 3),
        "errors": mine.errors,
    }


async def _measure_round(stack: Stack, number: int, quick: bool) -> dict[str, Any]:
    """Registrations of `count` new instances, then heartbeats of (up to 10,000 of)
    them, each beside the echo round trip with the same payloads."""
    nc = stack.nc
    assert nc is not None
    count = 5_000 if quick else 20_000
    seconds = 2.0 if quick else 5.0
    names = instance_names(f"tp{number}", count, 100)
    registrations = register_payloads(names, SESSION)
    beats = lease_payloads(names[:10_000], SESSION)
    echo = request_call(nc, ECHO_SUBJECT, registrations, REQUEST_TIMEOUT, echo=True)
    base = await run_phase("echo", echo, concurrency=IN_FLIGHT, count=count)
    write = request_call(nc, REGISTER_SUBJECT, registrations, REQUEST_TIMEOUT)
    register = _row(await run_phase("register", write, concurrency=IN_FLIGHT, count=count), base)
    # Let the router and NATS finish with the registrations (a leader reads its own
    # writes back from the stream) before the next phase is timed.
    await asyncio.sleep(SETTLE)
    echo = request_call(nc, ECHO_SUBJECT, beats, REQUEST_TIMEOUT, echo=True)
    base = await run_phase("echo", echo, concurrency=IN_FLIGHT, duration=seconds)
    renew = request_call(nc, HEARTBEAT_SUBJECT, beats, REQUEST_TIMEOUT)
    mine = await run_phase("heartbeat", renew, concurrency=IN_FLIGHT, duration=seconds)
    await asyncio.sleep(SETTLE)
    return {"register": register, "heartbeat": _row(mine, base)}


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


async def throughput(quick: bool) -> dict[str, Any]:
    """The three stacks up at once, measured in interleaved rounds (memory, R1, R3,
    memory, ...): a machine that gets busier or quieter meanwhile affects all three
    alike. Each figure is the median over the rounds; each ratio to memory is taken
    within a round, then the median over the rounds."""
    rounds = 1 if quick else 3
    stacks = [
        Stack("memory", "(a) memory, one router", ["--store", "memory"]),
        Stack("r1", "(b) stream R1, one router", ["--store", "stream"]),
        Stack(
            "r3",
            "(c) stream R3, one router, 3-node cluster",
            ["--store", "stream", "--replicas", "3"],
        ),
    ]
    async with contextlib.AsyncExitStack() as exits:
        for stack in stacks:
            await _start_stack(stack, exits)
        for number in range(rounds):
            for stack in stacks:
                print(f"  round {number + 1}/{rounds}: {stack.name}", file=sys.stderr, flush=True)
                stack.rounds.append(await _measure_round(stack, number, quick))
    memory = stacks[0]
    ratios: dict[str, Any] = {}
    for phase in ("register", "heartbeat"):
        for stack in stacks[1:]:
            raw = [
                mine[phase]["throughput"] / ref[phase]["throughput"]
                for mine, ref in zip(stack.rounds, memory.rounds, strict=True)
            ]
            normalised = [
                mine[phase]["vs_echo"] / ref[phase]["vs_echo"]
                for mine, ref in zip(stack.rounds, memory.rounds, strict=True)
            ]
            ratios[f"{phase}_{stack.label}_vs_memory"] = _median(raw)
            ratios[f"{phase}_{stack.label}_vs_memory_range"] = [
                round(min(raw), 3),
                round(max(raw), 3),
            ]
            # The same, each first divided by its own echo baseline of that round.
            ratios[f"{phase}_{stack.label}_vs_memory_echo_normalised"] = _median(normalised)
    summary = []
    for stack in stacks:
        row: dict[str, Any] = {"name": stack.name, "router_args": stack.router_args}
        for phase in ("register", "heartbeat"):
            rows = [measured[phase] for measured in stack.rounds]
            row[phase] = {
                key: _median([r[key] for r in rows])
                for key in (
                    "throughput",
                    "echo_throughput",
                    "vs_echo",
                    "p50_ms",
                    "echo_p50_ms",
                    "p99_ms",
                )
            }
            errors: dict[str, int] = {}
            for r in rows:
                for outcome, n in r["errors"].items():
                    errors[outcome] = errors.get(outcome, 0) + n
            row[phase]["errors"] = errors
        row["rounds"] = stack.rounds
        summary.append(row)
    return {"in_flight": IN_FLIGHT, "rounds": rounds, "stacks": summary, "ratios": ratios}


# -- report ----------------------------------------------------------------------------


def _verdicts(report: dict[str, Any]) -> dict[str, bool]:
    fo, tp = report["failover"], report["throughput"]["ratios"]
    hb, reg = TARGETS["heartbeat_vs_memory"], TARGETS["register_r1_vs_memory"]
    takeovers = [fo["takeover_first_write_s"], fo["takeover_leadership_taken_s"]]
    measured_all = all(t["measured"] == t["of"] for t in takeovers)
    worst = max(t.get("max", float("inf")) for t in takeovers)
    not_online = any(fo["heartbeating_not_online_per_router"].values())
    normalised = "_vs_memory_echo_normalised"
    return {
        "takeover <= 1 s (max)": measured_all and worst <= TARGETS["takeover_max_s"],
        "acknowledged registrations lost = 0": fo["acknowledged_lost"] == 0,
        "instances wrongly UNHEALTHY = 0": fo["wrongly_unhealthy_events"] == 0 and not not_online,
        "heartbeats R1 >= 0.9x memory": tp["heartbeat_r1_vs_memory"] >= hb,
        "heartbeats R3 >= 0.9x memory": tp["heartbeat_r3_vs_memory"] >= hb,
        "registration R1 >= 0.6x memory": tp["register_r1_vs_memory"] >= reg,
        "heartbeats R1 >= 0.9x memory (echo-normalised)": tp[f"heartbeat_r1{normalised}"] >= hb,
        "heartbeats R3 >= 0.9x memory (echo-normalised)": tp[f"heartbeat_r3{normalised}"] >= hb,
        "registration R1 >= 0.6x memory (echo-normalised)": tp[f"register_r1{normalised}"] >= reg,
    }


def _render_failover(fo: dict[str, Any]) -> list[str]:
    lines = [
        (
            f"failover: {fo['routers']} routers, --replicas {fo['replicas']}, --failover-after "
            f"{fo['failover_after_s']} s, {fo['heartbeating_instances']} instances heartbeating, "
            f"SDK registrations in a loop; leader SIGKILLed {fo['kills']} times"
        ),
        (
            f"  {'kill':>4} {'first write s':>14} {'leadership_taken s':>19} {'probes ok':>10}"
            f" {'replacement ready s':>20}"
        ),
    ]
    for kill in fo["per_kill"]:
        notes = f"  {'; '.join(kill['notes'])}" if kill["notes"] else ""
        lines.append(
            f"  {kill['number']:>4} {kill['first_write_s']!s:>14} {kill['leadership_taken_s']!s:>19}"
            f" {kill['probes_acknowledged']:>10} {kill['replacement_ready_s']:>20}{notes}"
        )
    for label, key in (
        ("SIGKILL -> first write answered", "takeover_first_write_s"),
        ("SIGKILL -> leadership_taken", "takeover_leadership_taken_s"),
    ):
        summary = fo[key]
        lines.append(
            f"  {label:<34} p50 {summary.get('p50')} s, max {summary.get('max')} s "
            f"({summary['measured']} of {summary['of']} measured)"
        )
    lines += [
        (
            f"  acknowledged registrations: {fo['acknowledged_registrations']:,}; lost: "
            f"{fo['acknowledged_lost']} (per router {fo['acknowledged_lost_per_router']})"
        ),
        (
            f"  registrations that failed after the SDK's retries: {fo['registration_failures']}; "
            f"slowest acknowledged: {fo['slowest_acknowledged_registration_s']} s"
        ),
        (
            f"  heartbeating instances marked UNHEALTHY: {fo['wrongly_unhealthy_events']} events; "
            f"not ONLINE at the end: {fo['heartbeating_not_online_per_router']}"
        ),
    ]
    return lines


def _render_throughput(tp: dict[str, Any]) -> list[str]:
    lines = [
        (
            f"throughput, raw nats-py, {tp['in_flight']} in flight, each beside the echo round "
            f"trip on the same NATS (medians of {tp['rounds']} interleaved round(s)):"
        ),
        (
            f"  {'':<44}{'register/s':>11}{'echo/s':>9}{'x echo':>8}{'p50 ms':>8}"
            f"{'heartbeat/s':>13}{'echo/s':>9}{'x echo':>8}{'p50 ms':>8}"
        ),
    ]
    for stack in tp["stacks"]:
        reg, hb = stack["register"], stack["heartbeat"]
        errors = {**reg["errors"], **hb["errors"]}
        lines.append(
            f"  {stack['name']:<44}{reg['throughput']:>11,.0f}{reg['echo_throughput']:>9,.0f}"
            f"{reg['vs_echo']:>8}{reg['p50_ms']:>8}{hb['throughput']:>13,.0f}"
            f"{hb['echo_throughput']:>9,.0f}{hb['vs_echo']:>8}{hb['p50_ms']:>8}"
            + (f"  errors {errors}" if errors else "")
        )
    ratios = tp["ratios"]
    lines.append(
        "  ratio to memory, within each round, median [min, max]; (each first divided by its "
        "own echo):"
    )
    lines += [
        f"    {phase:<9} {label.upper()}/memory {ratios[f'{phase}_{label}_vs_memory']} "
        f"{ratios[f'{phase}_{label}_vs_memory_range']} "
        f"({ratios[f'{phase}_{label}_vs_memory_echo_normalised']})"
        for phase in ("register", "heartbeat")
        for label in ("r1", "r3")
    ]
    return lines


def render(report: dict[str, Any]) -> str:
    lines = [
        (
            f"ipc-router failover benchmark, {report['date']}, {report['machine']}, "
            f"load average at the end {report['load_average_at_end']}"
        ),
        "",
        *_render_failover(report["failover"]),
        "",
        *_render_throughput(report["throughput"]),
        "",
        "targets:",
    ]
    lines += [
        f"  {'met    ' if met else 'NOT MET'}  {name}" for name, met in report["verdicts"].items()
    ]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    print("throughput ...", file=sys.stderr, flush=True)
    measured_throughput = await throughput(args.quick)
    print("failover ...", file=sys.stderr, flush=True)
    measured_failover = await failover(args.quick)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "quick": args.quick,
        "failover": measured_failover,
        "throughput": measured_throughput,
        "targets": TARGETS,
    }
    report["verdicts"] = _verdicts(report)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="3 kills and smaller counts, for a smoke run"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    arguments = parser.parse_args()
    configure_logging("console", "warning")
    result = asyncio.run(main(arguments))
    print(render(result))
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(result, indent=2))
