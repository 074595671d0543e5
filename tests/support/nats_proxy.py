"""A TCP proxy in front of a nats-server that knows each connection by the name its
client gives in `CONNECT`, and can cut the connections of one name: a half-open link
(the sockets stay open, nothing passes any more, no FIN, no RST), as a partition or a
dead switch makes it. What is sent meanwhile is held, not lost, as TCP would
retransmit it: a `heal` delivers it, in order (and closes what its peer closed). One
proxy per router: cutting `ipc-router-leadership` on a router's proxy cuts that
router's election connection and no other.

New connections of a cut name complete their handshake (INFO, CONNECT, PING/PONG), so
the client believes it is connected, and are cut right after: requests that then
get no answer, as from a JetStream that does not respond.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

from tests.support.network import free_port

__all__ = ["NatsProxy"]


@dataclass(eq=False)
class _Link:
    name: str | None = None
    handshake_done: bool = False
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    """To the client, to the server."""
    held: dict[bool, bytearray] = field(default_factory=lambda: {True: bytearray(), False: bytearray()})
    """Bytes sent while cut, by direction (True: toward the server)."""
    ended: set[bool] = field(default_factory=set)
    """Directions whose sender closed while cut."""

    def writer(self, upward: bool) -> asyncio.StreamWriter:
        return self.writers[1] if upward else self.writers[0]


class NatsProxy:
    """Forwards 127.0.0.1:`port` to `upstream` (host, port)."""

    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.cut_names: set[str] = set()
        self.links: list[_Link] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self.links:
            for writer in link.writers:
                writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self, name: str) -> None:
        """From now on nothing passes on the connections named `name` (new ones after
        their handshake)."""
        self.cut_names.add(name)

    def heal(self, name: str) -> None:
        """Connections named `name` pass again; what was held is delivered first."""
        self.cut_names.discard(name)
        for link in self.links:
            if link.name != name:
                continue
            for upward, held in link.held.items():
                writer = link.writer(upward)
                if held:
                    writer.write(bytes(held))
                    held.clear()
                if upward in link.ended:
                    writer.close()

    def names(self) -> list[str | None]:
        return [link.name for link in self.links]

    def _blocked(self, link: _Link) -> bool:
        return link.handshake_done and link.name in self.cut_names

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        link = _Link(writers=[client_writer, server_writer])
        self.links.append(link)
        for reader, writer, upward in ((client_reader, server_writer, True),
                                       (server_reader, client_writer, False)):  # fmt: skip
            task = asyncio.create_task(self._pump(link, reader, writer, upward=upward))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upward: bool
    ) -> None:
        seen = b""
        try:
            while data := await reader.read(65536):
                if upward and link.name is None:
                    seen += data
                    link.name = _connect_name(seen)
                if not upward and link.name is not None and not link.handshake_done and b"PONG" in data:
                    link.handshake_done = True  # (this PONG still goes through)
                    writer.write(data)
                    await writer.drain()
                    continue
                if self._blocked(link):
                    link.held[upward] += data  # half-open: nothing passes, nothing closes
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if self._blocked(link):
                link.ended.add(upward)
            else:
                with contextlib.suppress(Exception):
                    writer.close()


def _connect_name(seen: bytes) -> str | None:
    """The name in the client's CONNECT line ("" when it gives none), None until seen."""
    start = seen.find(b"CONNECT ")
    if start < 0:
        return None
    end = seen.find(b"\r\n", start)
    if end < 0:
        return None
    try:
        options = json.loads(seen[start + len(b"CONNECT ") : end])
    except ValueError:
        return ""
    return str(options.get("name") or "")
