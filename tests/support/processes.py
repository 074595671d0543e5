"""`ipc-router serve` and service instances as real subprocesses, for tests that
watch the router's JSON log, kill or pause processes, and start the router again."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[2]


FAULTY_ROUTER = [sys.executable, "-m", "tests.e2e.faulty_router"]
"""`serve` with switches that crash one actor (SIGUSR1: the registry, SIGUSR2: the
elector): tests/e2e/faulty_router.py."""


def router_command() -> list[str]:
    """The installed console script, or the module when running from a source tree."""
    script = Path(sys.executable).parent / "ipc-router"
    if script.exists():
        return [str(script)]
    found = shutil.which("ipc-router")
    return [found] if found else [sys.executable, "-m", "actors"]


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): it has exited, its parent just has not reaped it.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def wait_gone(pid: int, timeout: float = 5.0) -> None:
    """Return once `pid` has exited (polling /proc: a foreign pid has no wait());
    fail the test after `timeout` seconds."""
    await eventually(
        lambda: not process_exists(pid),
        timeout=timeout,
        interval=0.05,
        what=f"process {pid} to exit",
    )


class ChildProcess:
    """A subprocess of the test, killed with SIGKILL when the test is done with it."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def kill(self) -> None:
        """SIGKILL the process (if it still runs) and reap it."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


class RouterProcess(ChildProcess):
    """One `ipc-router serve` subprocess with JSON logs on stderr."""

    def __init__(
        self, *options: str, env: dict[str, str] | None = None, command: list[str] | None = None
    ) -> None:
        super().__init__()
        self.options = options
        """The options after `serve`: a restarted router gets the same ones."""
        self.command = command
        """What runs `serve` (default: the `ipc-router` script)."""
        self.extra_env = env or {}
        self.events: list[dict[str, Any]] = []
        self.raw_lines: list[str] = []
        self._new_line = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *(self.command or router_command()),
            "serve",
            "--log-format",
            "json",
            *self.options,
            cwd=REPO,
            env={**os.environ, **self.extra_env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while line := await self.process.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self.raw_lines.append(text)
            try:
                self.events.append(json.loads(text))
            except json.JSONDecodeError:
                pass
            async with self._new_line:
                self._new_line.notify_all()
        async with self._new_line:
            self._new_line.notify_all()

    async def wait_for_event(
        self, name: str, timeout: float = 15.0, after: int = 0, **fields: Any
    ) -> dict[str, Any]:
        """The first log event called `name` with these `fields` (from index `after`
        on), waiting for it."""

        def matches(event: dict[str, Any]) -> bool:
            return event.get("event") == name and all(event.get(k) == v for k, v in fields.items())

        def find() -> dict[str, Any] | None:
            return next((e for e in self.events[after:] if matches(e)), None)

        async def wait() -> dict[str, Any]:
            async with self._new_line:
                while (event := find()) is None:
                    if self._reader is not None and self._reader.done():
                        raise AssertionError(f"router exited before {name!r}: {self.raw_lines}")
                    await self._new_line.wait()
                return event

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {name!r} {fields} within {timeout} s") from None

    async def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        await super().kill()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


class ServiceProcess(ChildProcess):
    """`tests/e2e/service_process.py` in a subprocess: instances of one service that
    the SDK keeps registered until the process ends."""

    def __init__(
        self, nats_url: str, service: str, *instances: str, deregister_on_exit: bool = False
    ) -> None:
        super().__init__()
        self.args = [nats_url, service, *instances]
        if deregister_on_exit:
            self.args.append("--deregister-on-exit")

    async def start(self) -> None:
        """Start the process; return once every instance is registered."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.e2e.service_process",
            *self.args,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 20)
        assert line.strip() == b"READY", line


class RouterLauncher:
    """Starts routers for one test, and kills whatever is left of them after it."""

    def __init__(self) -> None:
        self.launched: list[RouterProcess] = []

    async def start(
        self,
        *options: str,
        env: dict[str, str] | None = None,
        ready: bool = True,
        command: list[str] | None = None,
    ) -> RouterProcess:
        """`ipc-router serve *options` (or `command serve *options`); with `ready`, once
        it has logged router_started."""
        router = RouterProcess(*options, env=env, command=command)
        self.launched.append(router)
        await router.start()
        if ready:
            await router.wait_for_event("router_started")
        return router

    async def restart(self, router: RouterProcess) -> RouterProcess:
        """SIGKILL `router` (unless it ended already), then start a new one with the
        same options (same ports)."""
        await router.kill()
        return await self.start(*router.options, env=router.extra_env, command=router.command)

    async def kill_all(self) -> None:
        for router in self.launched:
            await router.kill()


class ServiceLauncher:
    """Starts service processes for one test, and kills whatever is left of them after it."""

    def __init__(self) -> None:
        self.launched: list[ServiceProcess] = []

    async def start(
        self, nats_url: str, service: str, *instances: str, deregister_on_exit: bool = False
    ) -> ServiceProcess:
        """A service process whose instances are all registered."""
        process = ServiceProcess(
            nats_url, service, *instances, deregister_on_exit=deregister_on_exit
        )
        self.launched.append(process)
        await process.start()
        return process

    async def kill_all(self) -> None:
        for process in self.launched:
            await process.kill()
