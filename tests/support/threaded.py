"""A server with an event loop of its own, in a thread, for test clients that are
synchronous (schemathesis, hypothesis) and so cannot share the test's loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager

Serve = Callable[[], AbstractAsyncContextManager[int]]
"""Starts the server and yields its HTTP port while it runs; leaving stops it."""


class ServerThread:
    """Runs `serve` in a thread until `stop()`."""

    def __init__(self, serve: Serve, name: str, start_timeout: float = 60.0) -> None:
        self._serve_cm = serve
        self._start_timeout = start_timeout
        self._ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self.port = self._ready.result(timeout=self._start_timeout)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), f"the {self._thread.name} thread did not stop"

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # pragma: no cover - only when startup fails
            if not self._ready.done():
                self._ready.set_exception(error)
            raise

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self._serve_cm() as port:
            self._ready.set_result(port)
            await self._stop.wait()


@contextmanager
def server_thread(serve: Serve, name: str, start_timeout: float = 60.0) -> Iterator[ServerThread]:
    """A started `ServerThread`, stopped on leaving."""
    server = ServerThread(serve, name, start_timeout)
    server.start()
    try:
        yield server
    finally:
        server.stop()


