"""`ipc-router` run as a real subprocess, watched through its JSON log lines."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port


def router_command() -> list[str]:
    """The installed console script, or the module when running from a source tree."""
    script = Path(sys.executable).parent / "ipc-router"
    if script.exists():
        return [str(script)]
    found = shutil.which("ipc-router")
    return [found] if found else [sys.executable, "-m", "actors"]


class RouterProcess:
    """One `ipc-router serve` subprocess with JSON logs on stderr."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = ["serve", "--log-format", "json", *args]
        self.env = {**os.environ, **(env or {})}
        self.process: asyncio.subprocess.Process | None = None
        self.events: list[dict[str, Any]] = []
        self.raw_lines: list[str] = []
        self._new_line = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *router_command(),
            *self.args,
            env=self.env,
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

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


@pytest.fixture
async def started_router() -> AsyncIterator[tuple[RouterProcess, int, int]]:
    """A router with its embedded NATS; yields (process, nats_port, http_port)."""
    nats_port, http_port = free_port(), free_port()
    router = RouterProcess("--embedded-nats-port", str(nats_port), "--http-port", str(http_port))
    await router.start()
    try:
        await router.wait_for_event("router_started")
        yield router, nats_port, http_port
    finally:
        await router.kill()


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


async def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    """True once `pid` has exited; polls /proc because a foreign pid has no wait()."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if not process_exists(pid):
            return True
        await asyncio.sleep(0.05)
    return not process_exists(pid)


__all__ = ["RouterProcess", "process_exists", "router_command", "wait_gone", "signal"]
