"""A client that speaks the NATS protocol itself, to send what nats-py refuses to (a
reply subject or a header block that is not UTF-8, say): clients in other languages
send raw bytes."""

from __future__ import annotations

import asyncio

from actors.embedded_nats import NatsServerProcess
from tests.support.nats_requests import REQUEST_TIMEOUT


class RawNatsClient:
    """One connection to a nats-server, written to byte for byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, server: NatsServerProcess) -> RawNatsClient:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        info = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
        assert info.startswith(b"INFO "), info
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
        return cls(reader, writer)

    async def send(self, raw: bytes) -> None:
        """Send `raw`; return once the server has processed it (PING answered)."""
        self.writer.write(raw + b"PING\r\n")
        await self.writer.drain()
        line = await asyncio.wait_for(self.reader.readline(), REQUEST_TIMEOUT)
        assert line == b"PONG\r\n", f"the server refused {raw!r}: {line!r}"

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def hpub(subject: str, headers: bytes, payload: bytes = b"\x80") -> bytes:
    """A raw HPUB (publish with headers) with a reply subject."""
    size = f"{len(headers)} {len(headers) + len(payload)}".encode()
    line = b"HPUB " + subject.encode() + b" _INBOX.hostile " + size + b"\r\n"
    return line + headers + payload + b"\r\n"
