"""The event feed actor: the registry's change events for the admin API's Server-Sent
Events stream (`GET /api/v1/admin/events`), on every router, leader or standby.

It has a NATS connection of its own and listens on `ipc.registry.events.*`, the very
events the SDK caches watch, but only while somebody watches the stream (and for
`linger` seconds after the last client left, so that a client that reconnects at once
finds what it missed): a router nobody watches pays nothing per event.

Each event is encoded once as an SSE frame (`id: <revision>`, `data: <the event as
JSON>`), kept in a ring buffer bounded by count and bytes, and queued for every client
that wants it. A client's queue is bounded too: a client that does not keep up is
dropped (its stream ends; it reconnects with `Last-Event-ID`), never buffered for ever.

A client that reconnects with `Last-Event-ID: N` gets the events after N from the
buffer when the buffer surely holds every one of them: revisions increase but are not
contiguous (term markers in the stream take sequence numbers without events), so that
means "the feed has listened without a break since an event at or before N". Otherwise,
and for a client without `Last-Event-ID`, the stream starts with `event: resync`: read
a snapshot (`GET /services`), then apply the events that follow. The same frame goes
to every client when the feed itself may have missed events (its NATS connection
dropped, NATS dropped events for it, or the registry's epoch changed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from actors.actor import Actor, ActorDeadError, ActorRef, Lane, MailboxFullError, Message
from actors.nats_connection import connect_at_start, refusal
from protocol import (
    EVENTS_PREFIX,
    EVENTS_WILDCARD,
    ProtocolError,
    decode_event,
    encode_json,
    events_subject,
)
from sdk.connection import DEAD_LINK_AFTER, GuardedClient, NatsAuth, redact

__all__ = [
    "DEFAULT_KEEPALIVE",
    "KEEPALIVE_FRAME",
    "EventFeed",
    "EventFeedClient",
    "EventFeedLimits",
    "EventFeedStats",
    "FeedSubscriber",
    "GetFeedStats",
    "Subscribe",
    "Subscription",
    "TooManyClientsError",
    "Unsubscribe",
]

log = structlog.get_logger(component="event_feed")

DEFAULT_KEEPALIVE = 15.0
"""Seconds of silence after which an event stream sends a keepalive comment."""


@dataclass(frozen=True, slots=True)
class EventFeedLimits:
    """How much the event feed holds, and for how many clients."""

    max_clients: int = 64
    """Event stream clients at once (per router); more are answered 503."""
    client_events: int = 1_024
    """Frames queued for one client before it counts as too slow and is dropped."""
    client_bytes: int = 4 * 2**20
    """Bytes queued for one client before it is dropped."""
    buffer_events: int = 10_000
    """Recent events kept for clients that reconnect with `Last-Event-ID`."""
    buffer_bytes: int = 16 * 2**20
    """Bytes of recent events kept (whichever bound comes first)."""
    linger: float = 60.0
    """Seconds the feed keeps listening after its last client left."""
    keepalive: float = DEFAULT_KEEPALIVE
    """Seconds of silence after which a stream sends a `: keepalive` comment."""
    mailbox_size: int = 65_536
    """Events waiting for the feed before it drops them (and says so: a resync)."""


class TooManyClientsError(RuntimeError):
    """The feed serves `max_clients` streams already."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the event feed serves its maximum of {limit} clients")
        self.limit = limit


class FeedSubscriber:
    """One stream client's queue of SSE frames, bounded by count and bytes.

    The feed pushes; the client's HTTP handler takes. A push that would go past a
    bound closes the subscriber instead (the client was too slow)."""

    __slots__ = ("_bytes", "_frames", "_max_bytes", "_max_frames", "_wakeup", "closed", "service")

    def __init__(self, service: str | None, max_frames: int, max_bytes: int) -> None:
        self.service = service
        """Only this service's events (None: every service's)."""
        self.closed: str | None = None
        """Why the stream must end (None while it goes on)."""
        self._frames: deque[bytes] = deque()
        self._bytes = 0
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._wakeup = asyncio.Event()

    @property
    def pending(self) -> int:
        """Frames queued and not taken yet."""
        return len(self._frames)

    def push(self, frame: bytes) -> bool:
        """Queue `frame`; False (and the subscriber closed) when the queue is full."""
        if self.closed is not None:
            return False
        if len(self._frames) >= self._max_frames or self._bytes + len(frame) > self._max_bytes:
            self.close("too slow: the client did not keep up with the events")
            return False
        self._frames.append(frame)
        self._bytes += len(frame)
        self._wakeup.set()
        return True

    def close(self, reason: str) -> None:
        """End the stream (what is still queued is dropped). Idempotent."""
        if self.closed is None:
            self.closed = reason
            self._frames.clear()
            self._bytes = 0
            self._wakeup.set()

    async def take(self, timeout: float) -> list[bytes] | None:
        """Every frame queued (at least one); `[]` after `timeout` seconds without any;
        None once the subscriber is closed."""
        if self.closed is None and not self._frames:
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
        if self.closed is not None:
            return None
        frames = list(self._frames)
        self._frames.clear()
        self._bytes = 0
        return frames


# -- messages ---------------------------------------------------------------------------


class Subscribe(Message, frozen=True):
    """Start a stream -> `Subscription` (raises `TooManyClientsError` when full)."""

    service: str | None = None
    last_event_id: str | None = None


class Unsubscribe(Message, frozen=True):
    """The stream ended (the client left, or was dropped)."""

    subscriber: FeedSubscriber


class GetFeedStats(Message, frozen=True):
    """-> `EventFeedStats`."""


class _Incoming(Message, frozen=True):
    subject: str
    data: bytes


class _Gap(Message, frozen=True):
    """The feed may have missed events: forget the buffer; tell the clients when
    `resync` (at once, or on reconnection: while disconnected there is no point)."""

    reason: str
    resync: bool


class _Linger(Message, frozen=True):
    generation: int


class _ResyncDue(Message, frozen=True):
    reason: str


_RESYNC_SPACING = 1.0
"""Seconds between two rounds of `event: resync` to every client (a burst of gaps
makes one round at once and one at the end)."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """A started stream: its queue, and how it starts."""

    subscriber: FeedSubscriber
    resync: bool
    """The stream starts with `event: resync` (read a snapshot first)."""
    reason: str | None
    """Why it resyncs."""
    replayed: int
    """Buffered events queued for it after its `Last-Event-ID`."""


@dataclass(frozen=True, slots=True)
class EventFeedStats:
    """What the event feed has done since it started."""

    connected: bool
    """Its NATS connection is up."""
    listening: bool
    """It is subscribed to the events now (only while somebody watches)."""
    clients: int
    clients_dropped_slow: int
    clients_refused: int
    events_received: int
    events_malformed: int
    """Messages on the events subjects that are no event, or on the wrong subject."""
    events_duplicate: int
    """Events at or below the last revision seen (delivered once only)."""
    gaps: int
    """Times the feed may have missed events (disconnection, drops, new epoch)."""
    resyncs: int
    """`event: resync` frames sent, at connection or later."""
    replayed: int
    """Events sent again to clients that reconnected with `Last-Event-ID`."""
    buffered_events: int
    buffered_bytes: int


def resync_frame(reason: str, epoch: str | None, revision: int | None) -> bytes:
    """The `event: resync` frame: read a snapshot, at least at `revision` when given
    (the newest event this feed has seen), then apply the events that follow."""
    data = encode_json({"reason": reason, "epoch": epoch, "revision": revision})
    return b"event: resync\ndata: " + data + b"\n\n"


class EventFeed(Actor):
    """Listens to the registry's change events on NATS while streams want them; takes
    `Subscribe`, `Unsubscribe` and `GetFeedStats`."""

    caller_errors = (TooManyClientsError,)
    max_batch = 256

    def __init__(
        self,
        nats_url: str,
        *,
        auth: NatsAuth | None = None,
        limits: EventFeedLimits | None = None,
        startup_timeout: float = 10.0,
        dead_link_after: float = DEAD_LINK_AFTER,
    ) -> None:
        """A feed of the events on the NATS system at `nats_url` (comma-separated
        servers), connecting with `auth`, bounded by `limits`."""
        self.limits = limits or EventFeedLimits()
        super().__init__("event-feed", mailbox_size=self.limits.mailbox_size)
        self._url = nats_url
        self._auth = auth or NatsAuth()
        self._startup_timeout = startup_timeout
        self._dead_link_after = dead_link_after
        self._nc: GuardedClient | None = None
        self._subscription: NatsSubscription | None = None
        self._self: ActorRef = self.ref
        self._stopping = False
        self._subscribers: set[FeedSubscriber] = set()
        self._buffer: deque[tuple[int, str, bytes]] = deque()
        """(revision, service name, SSE frame) of recent events, oldest first."""
        self._buffer_bytes = 0
        self._floor: int | None = None
        """Every event after this revision is in the buffer (None: no event seen since
        the feed started listening, or since its last gap)."""
        self._epoch: str | None = None
        self._last: int | None = None
        """The newest revision seen in this epoch."""
        self._ceiling = 0
        """The highest revision seen in earlier epochs: a `Last-Event-ID` at or below
        it may belong to one of them, so it is not continued."""
        self._linger_generation = 0
        self._linger_timer: asyncio.TimerHandle | None = None
        self._resync_timer: asyncio.TimerHandle | None = None
        self._resynced_at = float("-inf")
        self._counts = dict.fromkeys(
            (
                "clients_dropped_slow",
                "clients_refused",
                "events_received",
                "events_malformed",
                "events_duplicate",
                "gaps",
                "resyncs",
                "replayed",
            ),
            0,
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def on_start(self) -> None:
        self._nc = GuardedClient()
        await connect_at_start(
            self._nc,
            self._url,
            auth=self._auth,
            timeout=self._startup_timeout,
            error_cb=self._on_error,
            name="ipc-router-events",
            dead_link_after=self._dead_link_after,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
        )

    async def on_stop(self) -> None:
        self._stopping = True
        for timer in (self._linger_timer, self._resync_timer):
            if timer is not None:
                timer.cancel()
        for subscriber in self._subscribers:
            subscriber.close("the router's event feed stopped")
        self._subscribers.clear()
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def handle(self, message: Any) -> Any:
        match message:
            case _Incoming(subject=subject, data=data):
                self._receive(subject, data)
                return None
            case Subscribe():
                return await self._subscribe(message)
            case Unsubscribe(subscriber=subscriber):
                await self._unsubscribe(subscriber)
                return None
            case _Gap(reason=reason, resync=resync):
                self._gap(reason, resync=resync)
                return None
            case _ResyncDue(reason=reason):
                self._resync_timer = None
                self._resync_all(reason)
                return None
            case _Linger(generation=generation):
                if generation == self._linger_generation and not self._subscribers:
                    await self._stop_listening()
                return None
            case GetFeedStats():
                return self._stats()
            case _:
                raise TypeError(f"event feed cannot handle {type(message).__name__}")

    # -- events -------------------------------------------------------------------------

    def _receive(self, subject: str, data: bytes) -> None:
        if self._subscription is None:
            return  # (still in the mailbox when the feed stopped listening)
        counts = self._counts
        counts["events_received"] += 1
        try:
            event = decode_event(data)
        except ProtocolError:
            counts["events_malformed"] += 1
            return
        service = event.instance.service_name
        if subject != events_subject(service):
            counts["events_malformed"] += 1
            return
        revision = event.revision
        if event.epoch != self._epoch:
            previous, self._epoch = self._epoch, event.epoch
            if previous is not None:
                self._ceiling = max(self._ceiling, self._last or 0)
                self._gap(f"the registry's epoch changed ({previous} -> {event.epoch})")
            self._last = None
        elif self._last is not None and revision <= self._last:
            counts["events_duplicate"] += 1
            return
        frame = b"id: %d\ndata: %b\n\n" % (revision, encode_json(event))
        self._remember(revision, service, frame)
        self._last = revision
        dropped: list[FeedSubscriber] = []
        for subscriber in self._subscribers:
            wanted = subscriber.service is None or subscriber.service == service
            if wanted and not subscriber.push(frame):
                dropped.append(subscriber)
        for subscriber in dropped:
            self._drop_slow(subscriber)

    def _remember(self, revision: int, service: str, frame: bytes) -> None:
        limits = self.limits
        buffer = self._buffer
        buffer.append((revision, service, frame))
        self._buffer_bytes += len(frame)
        if self._floor is None:
            self._floor = revision
        while len(buffer) > limits.buffer_events or (
            self._buffer_bytes > limits.buffer_bytes and len(buffer) > 1
        ):
            evicted, _, old = buffer.popleft()
            self._buffer_bytes -= len(old)
            self._floor = evicted  # every event after it is still here

    def _gap(self, reason: str, *, resync: bool = True) -> None:
        """Forget the buffer (it no longer holds every event after its first), and tell
        the clients to re-read a snapshot when `resync`: at once, or, when they were
        told less than `_RESYNC_SPACING` ago (a burst of drops), once more at the end
        of that time, so that a snapshot read in between is not taken for complete."""
        self._buffer.clear()
        self._buffer_bytes = 0
        self._floor = None
        if self._subscription is None:
            return  # not listening: nobody to tell, nothing was buffered
        self._counts["gaps"] += 1
        if not resync:
            log.warning("event_feed_gap", reason=reason, clients=len(self._subscribers))
            return
        loop = asyncio.get_running_loop()
        wait = self._resynced_at + _RESYNC_SPACING - loop.time()
        if wait <= 0:
            self._resync_all(reason)
        elif self._resync_timer is None:
            me = self._self

            def due() -> None:
                with contextlib.suppress(ActorDeadError, MailboxFullError):
                    me.tell(_ResyncDue(reason), lane=Lane.URGENT)

            self._resync_timer = loop.call_later(wait, due)

    def _resync_all(self, reason: str) -> None:
        self._resynced_at = asyncio.get_running_loop().time()
        log.warning("event_feed_gap", reason=reason, clients=len(self._subscribers))
        frame = resync_frame(f"the router may have missed events: {reason}", self._epoch, None)
        dropped = [s for s in self._subscribers if not s.push(frame)]
        self._counts["resyncs"] += len(self._subscribers) - len(dropped)
        for subscriber in dropped:
            self._drop_slow(subscriber)

    def _drop_slow(self, subscriber: FeedSubscriber) -> None:
        self._subscribers.discard(subscriber)
        self._counts["clients_dropped_slow"] += 1
        log.warning("event_stream_client_dropped", reason=subscriber.closed)
        self._linger_if_idle()

    # -- clients ------------------------------------------------------------------------

    async def _subscribe(self, message: Subscribe) -> Subscription:
        limits = self.limits
        if len(self._subscribers) >= limits.max_clients:
            self._counts["clients_refused"] += 1
            raise TooManyClientsError(limits.max_clients)
        await self._listen()
        self._linger_generation += 1  # a pending linger no longer applies
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        subscriber = FeedSubscriber(message.service, limits.client_events, limits.client_bytes)
        replay, reason = self._replay(message.last_event_id, message.service)
        if reason is not None:
            subscriber.push(resync_frame(reason, self._epoch, self._last))
            self._counts["resyncs"] += 1
        else:
            for frame in replay:
                subscriber.push(frame)
            self._counts["replayed"] += len(replay)
        self._subscribers.add(subscriber)
        return Subscription(subscriber, reason is not None, reason, len(replay))

    def _replay(self, last_event_id: str | None, service: str | None) -> tuple[list[bytes], str | None]:
        """The buffered frames after `last_event_id` for `service`, or why the client
        must resync instead."""
        if last_event_id is None:
            return [], "no Last-Event-ID: read a snapshot, then apply the events that follow"
        text = last_event_id.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 18):
            return [], "Last-Event-ID is not a revision this router sent"
        after = int(text)
        floor, last = self._floor, self._last
        if floor is None or last is None or after < floor:
            return [], f"the events after revision {after} are no longer buffered on this router"
        if after > last or after <= self._ceiling:
            return [], f"revision {after} is not one this router's event feed can continue from"
        frames: list[bytes] = []
        for revision, name, frame in reversed(self._buffer):
            if revision <= after:
                break
            if service is None or name == service:
                frames.append(frame)
                if len(frames) > self.limits.client_events // 2:
                    return [], f"too many events after revision {after} to replay"
        frames.reverse()
        return frames, None

    async def _unsubscribe(self, subscriber: FeedSubscriber) -> None:
        subscriber.close("the client left")
        if subscriber in self._subscribers:
            self._subscribers.discard(subscriber)
            self._linger_if_idle()

    def _linger_if_idle(self) -> None:
        if self._subscribers or self._subscription is None:
            return
        self._linger_generation += 1
        generation = self._linger_generation
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        me = self._self

        def expire() -> None:
            with contextlib.suppress(ActorDeadError, MailboxFullError):
                me.tell(_Linger(generation), lane=Lane.URGENT)

        self._linger_timer = asyncio.get_running_loop().call_later(self.limits.linger, expire)

    # -- NATS ---------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Subscribe to the events (if not yet), and make sure the server has the
        subscription before the client reads its snapshot."""
        nc = self._nc
        assert nc is not None
        if self._subscription is None:
            self._subscription = await nc.subscribe(
                EVENTS_WILDCARD,
                cb=self._on_message,
                pending_msgs_limit=65_536,
                pending_bytes_limit=64 * 2**20,
            )
            self._floor = None
            log.info("event_feed_listening", subject=EVENTS_WILDCARD)
        if nc.is_connected:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await nc.flush(timeout=2)

    async def _stop_listening(self) -> None:
        subscription, self._subscription = self._subscription, None
        self._buffer.clear()
        self._buffer_bytes = 0
        self._floor = None
        if subscription is not None:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()
            log.info("event_feed_idle", linger=self.limits.linger)

    async def _on_message(self, msg: Msg) -> None:
        try:
            self._self.tell(_Incoming(msg.subject, msg.data))
        except MailboxFullError:
            self._tell_gap("events arrived faster than the feed could take them", resync=True)
        except ActorDeadError:
            pass

    def _tell_gap(self, reason: str, *, resync: bool) -> None:
        with contextlib.suppress(ActorDeadError, MailboxFullError):
            self._self.tell(_Gap(reason, resync), lane=Lane.URGENT)

    async def _on_error(self, error: Exception) -> None:
        if isinstance(error, nats.errors.SlowConsumerError):
            self._tell_gap("NATS dropped events for the feed (slow consumer)", resync=True)
            return
        if refusal(error, EVENTS_PREFIX) is not None:
            log.error(
                "event_feed_refused",
                error=str(error),
                hint="the router's NATS user may not subscribe to ipc.registry.events.>; "
                "the admin event stream and the console get no events until it may",
            )
            return
        log.warning("event_feed_nats_error", error=repr(error))

    async def _on_disconnected(self) -> None:
        if not self._stopping:
            self._tell_gap("its NATS connection dropped", resync=False)

    async def _on_reconnected(self) -> None:
        log.info("event_feed_reconnected", url=redact(self._url))
        self._tell_gap("its NATS connection dropped and came back", resync=True)

    async def _on_closed(self) -> None:
        if not self._stopping:
            self.crash(ConnectionError("the event feed's NATS connection closed"))

    def _stats(self) -> EventFeedStats:
        nc = self._nc
        return EventFeedStats(
            connected=nc is not None and nc.is_connected,
            listening=self._subscription is not None,
            clients=len(self._subscribers),
            buffered_events=len(self._buffer),
            buffered_bytes=self._buffer_bytes,
            **self._counts,
        )


class EventFeedClient:
    """Typed calls to the event feed through its ref (which follows its restarts)."""

    __slots__ = ("keepalive", "ref")

    def __init__(self, ref: ActorRef, *, keepalive: float = DEFAULT_KEEPALIVE) -> None:
        self.ref = ref
        self.keepalive = keepalive
        """Seconds of silence after which a stream sends a keepalive comment."""

    async def subscribe(
        self, service: str | None = None, last_event_id: str | None = None
    ) -> Subscription:
        """Start a stream of `service`'s events (every service's when None).

        Raises:
            TooManyClientsError: the feed serves its maximum of clients.
            ActorDeadError: the feed is not running.
        """
        subscription: Subscription = await self.ref.ask(
            Subscribe(service, last_event_id), 5.0, lane=Lane.URGENT
        )
        return subscription

    def unsubscribe(self, subscriber: FeedSubscriber) -> None:
        """The stream ended (never raises: a feed that is gone forgot it anyway)."""
        subscriber.close("the client left")
        with contextlib.suppress(ActorDeadError, MailboxFullError):
            self.ref.tell(Unsubscribe(subscriber), lane=Lane.URGENT)

    async def stats(self) -> EventFeedStats | None:
        """What the feed has done (None when it does not run)."""
        stats: EventFeedStats | None = await self.ref.ask_or_none(GetFeedStats())
        return stats


KEEPALIVE_FRAME = b": keepalive\n\n"
"""What a quiet stream sends every `keepalive` seconds (a comment: clients ignore it)."""
