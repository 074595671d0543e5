"""`make cluster` (`python -m actors.local_cluster`): a local cluster in one command,
to try failover with. Three nats-servers with JetStream in one cluster and three
routers sharing one registry on it (`--store stream --replicas 3`), all on loopback.
It prints the NATS URLs, each router's admin URL and pid and which one leads, then
says whenever the leader changes or a process exits, until Ctrl-C (or SIGTERM) stops
every router, then every server, and removes the temporary directory that held
their data and the routers' logs.

A program of its own rather than an `ipc-router` command: it is a way to try the
router on one machine, not part of running it, and it starts `ipc-router serve`
three times as any operator would. docs/cluster.md walks through killing the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.admin_cli import AdminApiError, get_json
from actors.cli_parsing import CommandLineParser
from actors.cli_values import WholeNumber
from actors.embedded_nats import NatsServerError, die_with_parent, free_port
from actors.logs import configure_logging
from actors.nats_cluster import NatsCluster

__all__ = ["main"]

ROUTERS = 3
READY_WITHIN = 60.0
"""Seconds the routers have to answer /healthz with exactly one leader."""
WATCH_EVERY = 0.5
"""Seconds between two looks at every router's /healthz."""
STOP_GRACE = 10.0
"""Seconds a router has to stop after SIGTERM before it is killed."""


@dataclass
class RouterChild:
    """One `ipc-router serve` process of the cluster."""

    name: str
    http_port: int
    log: Path
    process: asyncio.subprocess.Process

    @property
    def admin_url(self) -> str:
        """Its admin API and console."""
        return f"http://127.0.0.1:{self.http_port}/"

    @property
    def running(self) -> bool:
        return self.process.returncode is None


class ClusterFailed(Exception):
    """The cluster did not come up; the message says why."""


def say(line: str) -> None:
    """One line on stdout, at once (whoever reads it may be waiting for it)."""
    print(line, flush=True)


async def start_router(
    name: str, nats_url: str, http_port: int, workdir: Path
) -> RouterChild:
    """`ipc-router serve` on the cluster, its output in `workdir/<name>.log`. In a
    session of its own, so that Ctrl-C in the terminal reaches only this program,
    which stops the routers before the servers; killed by the kernel should this
    program die without stopping it."""
    log = workdir / f"{name}.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "actors", "serve",
            "--nats-url", nats_url, "--store", "stream", "--replicas", str(ROUTERS),
            "--http-port", str(http_port),
            stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )  # fmt: skip
    return RouterChild(name, http_port, log, process)


async def health(router: RouterChild) -> dict[str, Any] | None:
    """The router's /healthz body while it answers 200; else None."""
    try:
        status, body = await asyncio.to_thread(get_json, f"{router.admin_url}healthz", None, 2.0)
    except AdminApiError:
        return None
    return body if status == 200 and isinstance(body, dict) else None


async def roles(routers: Sequence[RouterChild]) -> list[str]:
    """Each router's role: "leader", "standby", or "down" (no healthy answer)."""
    bodies = await asyncio.gather(*(health(router) for router in routers))
    return [str(body.get("role") or "down") if body else "down" for body in bodies]


async def wait_until_ready(routers: Sequence[RouterChild], timeout: float) -> list[str]:
    """Every router healthy and exactly one leading; returns their roles.

    Raises:
        ClusterFailed: a router exited, or not within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        for router in routers:
            if not router.running:
                raise ClusterFailed(
                    f"{router.name} exited with code {router.process.returncode}: "
                    f"{_last_lines(router.log)}"
                )
        found = await roles(routers)
        if "down" not in found and found.count("leader") == 1:
            return found
        if time.monotonic() > deadline:
            raise ClusterFailed(f"no single leader within {timeout:g} s: roles {found}")
        await asyncio.sleep(0.2)


def _last_lines(log: Path, count: int = 5) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(lines[-count:]) or "(nothing logged)"


def print_cluster(
    cluster: NatsCluster, routers: Sequence[RouterChild], found: Sequence[str], workdir: Path
) -> None:
    say(f"NATS cluster ({len(cluster.servers)} nodes, JetStream):")
    for server in cluster.servers:
        say(f"  {server.server_name}  {server.url}  pid {server.pid}")
    say(f"Routers (ipc-router serve --store stream --replicas {ROUTERS}):")
    for router, role in zip(routers, found, strict=True):
        say(f"  {router.name}  {router.admin_url}  pid {router.process.pid}  {role}")
    say(f"Services connect to: {cluster.url}")
    say(f"Logs and data: {workdir} (removed at the end)")
    say("Ctrl-C stops everything.")


async def watch(
    cluster: NatsCluster, routers: Sequence[RouterChild], found: list[str], stop: asyncio.Event
) -> None:
    """Say when a router's role changes or a process exits, until `stop` is set."""
    server_exits = {asyncio.create_task(server.wait()): server for server in cluster.servers}
    routers_gone: set[str] = set()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_EVERY)
            if stop.is_set():
                return
            for exited in [task for task in server_exits if task.done()]:
                server = server_exits.pop(exited)
                say(f"{_now()} {server.server_name} (pid {server.pid}) exited: code {exited.result()}")
            for router in routers:
                if not router.running and router.name not in routers_gone:
                    routers_gone.add(router.name)
                    say(f"{_now()} {router.name} (pid {router.process.pid}) exited: {_exit(router)}")
            now = await roles(routers)
            for router, before, after in zip(routers, found, now, strict=True):
                if before != after:
                    say(f"{_now()} {router.name} is {after} (was {before})")
            found[:] = now
    finally:
        for task in server_exits:
            task.cancel()
        await asyncio.gather(*server_exits, return_exceptions=True)


def _now() -> str:
    return time.strftime("%H:%M:%S")


def _exit(router: RouterChild) -> str:
    code = router.process.returncode
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"code {code}"


async def stop_router(router: RouterChild) -> None:
    """SIGTERM, then SIGKILL after `STOP_GRACE` seconds; reaped either way."""
    if router.running:
        with contextlib.suppress(ProcessLookupError):
            router.process.terminate()
        try:
            await asyncio.wait_for(router.process.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                router.process.kill()
    await router.process.wait()


def admin_ports(first: int) -> list[int]:
    """`first`, `first + 1`, ...; any free ports when `first` is 0.

    Raises:
        ClusterFailed: one of them is in use.
    """
    if first == 0:
        return [free_port() for _ in range(ROUTERS)]
    ports = list(range(first, first + ROUTERS))
    for port in ports:
        with socket.socket() as probe:
            # As the router binds: connections of an earlier run still in TIME_WAIT
            # do not make the port in use.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise ClusterFailed(
                    f"port {port} is in use: choose other admin ports with --http-port-base "
                    "(0: any free ports)"
                ) from None
    return ports


async def run_until_signalled(http_port_base: int) -> int:
    """`run_cluster` until SIGINT (Ctrl-C) or SIGTERM; the exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await run_cluster(http_port_base, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def run_cluster(http_port_base: int, stop: asyncio.Event) -> int:
    """Start the cluster, watch it until `stop` is set, stop it; the exit code (1 when
    it did not come up, said in one line on stderr)."""
    workdir = Path(tempfile.mkdtemp(prefix="ipc-router-cluster-"))
    cluster = NatsCluster(ROUTERS, name="nats", store_root=workdir)
    routers: list[RouterChild] = []

    async def bring_up() -> list[str]:
        ports = admin_ports(http_port_base)
        say(f"Starting {ROUTERS} nats-servers and {ROUTERS} routers on 127.0.0.1 ...")
        await cluster.start()
        for n, port in enumerate(ports):
            routers.append(await start_router(f"router-{n}", cluster.url, port, workdir))
        return await wait_until_ready(routers, READY_WITHIN)

    code = 0
    try:
        up = asyncio.create_task(bring_up())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({up, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not up.done():  # Ctrl-C while starting
            up.cancel()
            await asyncio.gather(up, return_exceptions=True)
        else:
            found = up.result()
            print_cluster(cluster, routers, found, workdir)
            await watch(cluster, routers, found, stop)
    except (ClusterFailed, NatsServerError) as error:
        print(f"local cluster: error: {error}", file=sys.stderr, flush=True)
        code = 1
    finally:
        say("Stopping the routers, then the nats-servers ...")
        await asyncio.gather(*(stop_router(router) for router in routers))
        await cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        say(f"Stopped; {workdir} removed.")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m actors.local_cluster [--http-port-base N]`; returns the exit code."""
    parser = CommandLineParser(
        prog="python -m actors.local_cluster",
        description="Three nats-servers (one JetStream cluster) and three routers on "
        "127.0.0.1, until Ctrl-C.",
    )
    parser.add_argument(
        "--http-port-base",
        type=WholeNumber(0, 65535 - ROUTERS, "a port number"),
        default=8081,
        help="the routers' admin ports are this one and the next two; 0: any free ports "
        "(default: %(default)s)",
    )
    args = parser.parse_args(argv)
    # This process's own log is the nats-servers' (warnings and worse); the routers
    # log to their files.
    configure_logging("console", "warning")
    return asyncio.run(run_until_signalled(args.http_port_base))


if __name__ == "__main__":
    sys.exit(main())
