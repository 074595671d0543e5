"""A witness of the registry's change events on NATS (`ipc.registry.events.>`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
from nats.aio.msg import Msg

from protocol import EVENTS_WILDCARD, EventType, RegistryEvent, decode_event


class EventLog:
    """Every change event seen, in the order they arrived."""

    def __init__(self) -> None:
        self.events: list[RegistryEvent] = []
        self._changed = asyncio.Event()

    async def on_event(self, msg: Msg) -> None:
        self.events.append(decode_event(msg.data))
        self._changed.set()

    def of(self, kind: EventType, service: str | None = None) -> list[RegistryEvent]:
        """The events of one type (of one service, when given)."""
        return [
            event
            for event in self.events
            if event.type is kind and service in (None, event.instance.service_name)
        ]

    async def wait_for(
        self, kind: EventType, service: str | None = None, *, timeout: float
    ) -> RegistryEvent:
        """The first event of that type (and service) seen, once there is one."""

        async def first() -> RegistryEvent:
            while not (found := self.of(kind, service)):
                self._changed.clear()
                await self._changed.wait()
            return found[0]

        return await asyncio.wait_for(first(), timeout)


@asynccontextmanager
async def watching_events(servers: str | list[str]) -> AsyncIterator[EventLog]:
    """An `EventLog` subscribed (and flushed, so nothing after this is missed) for the
    block's duration."""
    log = EventLog()
    nc = await nats.connect(servers)
    try:
        await nc.subscribe(EVENTS_WILDCARD, cb=log.on_event)
        await nc.flush()
        yield log
    finally:
        await nc.close()
