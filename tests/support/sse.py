"""Reading a Server-Sent Events stream (the admin API's `GET /api/v1/admin/events`) frame
by frame, over a real HTTP connection, as a client outside the router would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

EVENTS = "/api/v1/admin/events"


@dataclass
class Frame:
    """One dispatched SSE block: its fields, and the comments seen before it."""

    event: str = "message"
    data: str | None = None
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        """The data, decoded as JSON."""
        assert self.data is not None, self
        return json.loads(self.data)


class SseStream:
    """An open event stream; `next()` returns the next frame that carries data."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []
        """Every comment line seen so far (without the leading colon)."""
        self.retry: int | None = None

    async def next(self, timeout: float = 10.0) -> Frame:
        """The next frame with data; fails the test after `timeout` seconds."""
        try:
            return await asyncio.wait_for(self._read_frame(), timeout)
        except TimeoutError:
            raise AssertionError(f"no event on the stream within {timeout} s") from None

    async def next_comment(self, timeout: float = 10.0) -> str:
        """The next comment line (`: keepalive`), skipping nothing else: a frame with
        data arriving first fails the test."""
        seen = len(self.comments)

        async def wait() -> str:
            while len(self.comments) == seen:
                line = await self._line()
                if line.startswith("data"):
                    raise AssertionError(f"data before a comment: {line!r}")
            return self.comments[seen]

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"no comment on the stream within {timeout} s") from None

    async def events(self, count: int, timeout: float = 10.0) -> list[Frame]:
        """The next `count` frames."""
        return [await self.next(timeout) for _ in range(count)]

    async def ended(self, timeout: float = 10.0) -> bool:
        """True once the server has closed the stream (frames left are read and dropped)."""

        async def drain() -> bool:
            while await self.response.content.readline():
                pass
            return True

        try:
            return await asyncio.wait_for(drain(), timeout)
        except TimeoutError:
            return False

    async def _line(self) -> str:
        raw = await self.response.content.readline()
        if not raw:
            raise ConnectionError("the server closed the event stream")
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
        return line

    async def _read_frame(self) -> Frame:
        frame = Frame()
        seen = len(self.comments)
        while True:
            line = await self._line()
            if line == "":
                if frame.data is not None:
                    frame.comments = self.comments[seen:]
                    return frame
                if frame.retry is not None:
                    self.retry = frame.retry
                frame = Frame()
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                frame.data = value if frame.data is None else f"{frame.data}\n{value}"
            elif name == "event":
                frame.event = value
            elif name == "id":
                frame.id = value
            elif name == "retry":
                frame.retry = int(value)


@asynccontextmanager
async def open_stream(
    base_url: str,
    *,
    service: str | None = None,
    last_event_id: str | None = None,
    token: str | None = None,
) -> AsyncIterator[SseStream]:
    """GET the event stream (200 expected) and yield it; closes the connection after."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    params = {"service": service} if service is not None else None
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=None)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{base_url}{EVENTS}", headers=headers, params=params) as response,
    ):
        assert response.status == 200, (response.status, await response.text())
        assert response.headers["Content-Type"].startswith("text/event-stream")
        yield SseStream(response)
