"""Raw HTTP against an admin port: one request on a fresh TCP connection, without a
client library's connection pool, retries or timeouts in between."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HttpAnswer:
    """What the server answered: the status code and the body, as sent."""

    status: int
    body: bytes

    def json(self) -> Any:
        """The body, decoded as JSON."""
        return json.loads(self.body)


async def healthz(port: int, *, host: str = "127.0.0.1", timeout: float = 5.0) -> HttpAnswer:
    """GET /healthz on a fresh connection (`Connection: close`), read until the server
    closes it. A connection that is refused, reset or closed without an answer raises
    `OSError` (`ConnectionError` when nothing came back); no answer within `timeout`
    seconds raises `TimeoutError`."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise ConnectionError(f"no HTTP answer from port {port}: {data[:80]!r}")
    return HttpAnswer(int(status_line[1]), body)
