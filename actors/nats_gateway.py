"""The NATS gateway actor: translates NATS requests into registry messages.

The subscription callback decodes and validates the request and hands it to the
registry with a reply target; the registry's outcome comes back to this actor's
mailbox and is encoded and published here. No await on the registry in the
callback, so requests pipeline instead of queueing behind one another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from actors.actor import Actor, ActorDeadError, ActorRef, Envelope, Lane, MailboxFullError, Message
from actors.errors import StartupError
from actors.latency import HistogramSnapshot, LatencyHistogram
from actors.nats_connection import connect_at_start, refusal
from actors.registry_api import (
    Deregister,
    EventBatch,
    ExcuseGap,
    ForwardAdmin,
    GetService,
    GetStatus,
    Heartbeat,
    ListServices,
    NotLeading,
    Register,
    ServeReads,
    ServeWrites,
    SetMaintenance,
    SignedAdminWrite,
)
from protocol import (
    DEREGISTER_SUBJECT,
    GET_SUBJECT,
    HEARTBEAT_SUBJECT,
    LIST_SUBJECT,
    MAINTENANCE_SUBJECT,
    REGISTER_SUBJECT,
    ROUTER_ADMIN_SUBJECT,
    ROUTER_PRESENCE_SUBJECT,
    ROUTER_QUEUE_GROUP,
    ErrorCode,
    GetServiceReply,
    InstanceReply,
    ListServicesReply,
    ProtocolError,
    RegistryLimits,
    Reply,
    Status,
    decode_get_request,
    decode_instance_reply,
    decode_lease_request,
    decode_list_request,
    decode_maintenance_request,
    decode_register_request,
    encode_msgpack,
    error_reply,
    events_subject,
    peek_nonce,
)
from sdk.connection import DEAD_LINK_AFTER, GuardedClient, NatsAuth, redact

__all__ = [
    "GetStats",
    "NatsGateway",
    "NatsGatewayClient",
    "NatsGatewayStats",
    "Presence",
    "SendReply",
]

log = structlog.get_logger(component="nats_gateway")


class SendReply(Message, frozen=True):
    """Publish the outcome of one request on its reply subject."""

    reply_to: str
    outcome: Any
    """A reply Struct, the registry's result (turned into one by `wrap`), or an error."""
    wrap: Callable[[Any], Any] | None = None
    nonce: str | None = None
    """The request's nonce, echoed in the reply."""
    meter: _Meter | None = None
    """Where the reply is counted (its route's)."""
    started: float = 0.0
    """Loop time the request arrived."""
    nc: Any = None
    """The connection the request came on, and its reply goes back on (the gateway's
    main one when None)."""


class _Meter:
    """One route's replies by status, and their latency: plain ints, read at scrape
    time (`NatsGatewayStats`)."""

    __slots__ = ("latency", "statuses")

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.latency = LatencyHistogram()

    def record(self, status: int, seconds: float) -> None:
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1
        self.latency.observe(seconds)


class IsConnected(Message, frozen=True):
    """Ask: whether the NATS connection is up (what `/healthz` wants, without the
    stats)."""


class GetStats(Message, frozen=True):
    """-> `NatsGatewayStats`."""


@dataclass(frozen=True, slots=True)
class NatsGatewayStats:
    """What the gateway has seen since it started."""

    connected: bool
    events_published: int
    dropped_without_reply: int
    """Requests that arrived without a reply subject (nothing to answer)."""
    dropped_slow: int
    """Requests dropped because their subscription's buffer was full (a flood)."""
    dropped_malformed: int
    """Messages nats-py could not parse (see `GuardedClient`)."""
    dropped_reply_subject: int = 0
    """Requests whose reply subject was under no inbox prefix this router answers on."""
    unanswered_writes: int = 0
    """Writes left unanswered because this router did not lead, or was not sure its
    change was stored (the leader answers them; the client sends again otherwise)."""
    requests: dict[tuple[str, int], int] = field(default_factory=dict)
    """Replies sent, by (request subject, status)."""
    latency: dict[str, HistogramSnapshot] = field(default_factory=dict)
    """From a request's arrival to its reply's publication, by request subject."""


class Presence(msgspec.Struct, frozen=True, kw_only=True):
    """How a router serves, as it tells the others on `ipc.router.presence`."""

    mode: str
    """"memory" or "stream"."""
    stream: str | None = None
    router: str = ""

    def describe(self) -> str:
        where = "in memory" if self.mode == "memory" else f"on stream {self.stream}"
        return f"{self.router or 'a router'}, registry {where}"


@dataclass(frozen=True, slots=True)
class _Route:
    """How one request subject becomes a registry message, and its result a reply."""

    subject: str
    action: str
    decode: Callable[[bytes], Any]
    message: Callable[[Any, int], Any]
    """(request, the largest reply NATS will carry) -> registry message."""
    wrap: Callable[[Any], Any] | None = None
    """Turns the registry's result into the reply Struct (None: it already is one)."""
    lane: Lane = Lane.NORMAL
    """The registry's mailbox lane: heartbeats go first, queries last."""
    write: bool = True
    """Only the leader takes it (in stream mode)."""
    pending: tuple[int, int] = (16_384, 32 * 2**20)
    """Messages and bytes the subscription buffers before nats-py drops what comes
    next (counted as `dropped_slow`): each subject has its own, so a flood on one
    cannot crowd out another (heartbeats above all)."""
    beats: bool = False
    """Taken on the gateway's heartbeat connection: a flood on the other subjects (that
    gets the main connection dropped as a slow consumer) cannot cost a heartbeat."""


def _routes(limits: RegistryLimits) -> tuple[_Route, ...]:
    def decode_register(data: bytes) -> Any:
        return decode_register_request(data, limits.max_metadata_bytes)

    return (
        _Route(REGISTER_SUBJECT, "registration", decode_register, lambda r, _: Register(r)),
        _Route(
            HEARTBEAT_SUBJECT,
            "heartbeat",
            decode_lease_request,
            lambda r, _: Heartbeat(r),
            lane=Lane.URGENT,
            pending=(65_536, 16 * 2**20),  # small messages, many of them, never to be lost
            beats=True,
        ),
        _Route(
            DEREGISTER_SUBJECT, "deregistration", decode_lease_request, lambda r, _: Deregister(r)
        ),
        _Route(
            MAINTENANCE_SUBJECT,
            "maintenance",
            decode_maintenance_request,
            lambda r, _: SetMaintenance(r),
            pending=(4_096, 8 * 2**20),
        ),
        _Route(
            ROUTER_ADMIN_SUBJECT,
            "operator_command",
            _Sealed.read,
            lambda r, _: SignedAdminWrite(r.data),
            pending=(1_024, 4 * 2**20),
        ),
        _Route(
            LIST_SUBJECT,
            "list",
            decode_list_request,
            # Room for the reply's own fields around the services.
            lambda r, max_reply: ListServices(r, max_bytes=max_reply - 1024),
            lambda result: ListServicesReply(status=Status.OK, result=result),
            write=False,
            lane=Lane.LOW,
            pending=(4_096, 8 * 2**20),  # queries are shed first under a flood
        ),
        _Route(
            GET_SUBJECT,
            "get",
            decode_get_request,
            # Room for the reply's own fields around the instances.
            lambda r, max_reply: GetService(r, missing_ok=True, max_bytes=max_reply - 1024),
            lambda result: GetServiceReply(status=Status.OK, result=result),
            write=False,
            lane=Lane.LOW,
            pending=(4_096, 8 * 2**20),
        ),
    )


class _Sealed:
    """The body of a request on `ipc.router.admin`: a sealed operator command, opened
    (and checked) by the registry."""

    __slots__ = ("data",)
    nonce = None
    _MAX_BYTES = 4096

    def __init__(self, data: bytes) -> None:
        self.data = data

    @classmethod
    def read(cls, data: bytes) -> _Sealed:
        if len(data) > cls._MAX_BYTES:
            raise ProtocolError(
                Status.PAYLOAD_TOO_LARGE, ErrorCode.PAYLOAD_TOO_LARGE,
                f"An operator command is at most {cls._MAX_BYTES} bytes.", {"field": "$"},
            )  # fmt: skip
        return cls(data)


_FORWARD_PATIENCE = 8.0
"""Seconds an operator's write taken by a router that does not lead waits for a leader
to take it (a failover lasts about one second)."""
_FORWARD_TIMEOUT = 5.0
"""Seconds the leader has to answer it."""


class _ReplyVia:
    """Reply target handed to the registry: the outcome comes back to the gateway's
    mailbox as a `SendReply` (raising `ActorDeadError` if the gateway is gone)."""

    __slots__ = ("gateway", "meter", "nc", "nonce", "reply_to", "started", "wrap")

    def __init__(
        self,
        gateway: ActorRef,
        reply_to: str,
        wrap: Callable[[Any], Any] | None,
        nonce: str | None,
        meter: _Meter,
        started: float,
        nc: Any,
    ) -> None:
        self.gateway = gateway
        self.reply_to = reply_to
        self.wrap = wrap
        self.nonce = nonce
        self.meter = meter
        self.started = started
        self.nc = nc

    def _send(self, outcome: Any) -> None:
        # (The gateway wraps a value, never an error: see `handle_batch`.)
        self.gateway.tell(
            SendReply(
                self.reply_to, outcome, self.wrap, self.nonce, self.meter, self.started, self.nc
            )
        )

    resolve = reject = _send


def _reply_body(outcome: Any, nonce: str | None = None) -> tuple[bytes, int]:
    """The encoded reply for an outcome (a reply Struct, or an error of any kind), and
    its status."""
    if isinstance(outcome, Reply):
        if nonce is not None:
            outcome = msgspec.structs.replace(outcome, nonce=nonce)
        return encode_msgpack(outcome), outcome.status
    if isinstance(outcome, ProtocolError):
        error = outcome
    elif isinstance(outcome, MailboxFullError):
        error = _unavailable("overloaded")
    elif isinstance(outcome, ActorDeadError):
        error = _unavailable("the registry is restarting")
    else:
        log.error("request_failed", error=repr(outcome))
        error = ProtocolError(
            Status.INTERNAL_ERROR,
            ErrorCode.INTERNAL_ERROR,
            "The router failed to handle this request; it has been logged. Retry, "
            "and report it if it persists.",
        )
    return encode_msgpack(error_reply(error, nonce)), int(error.status)


def _unavailable(reason: str) -> ProtocolError:
    return ProtocolError(
        Status.SERVICE_UNAVAILABLE,
        ErrorCode.ROUTER_UNAVAILABLE,
        f"The router cannot take this request right now ({reason}); retry shortly.",
    )


_BEATS_SILENCE = 0.5
"""When no heartbeat has come for this long, the gateway asks the server for an answer
on the heartbeat link (within as long again), every so often: a dead link is found
within about a second and a half, well within a lease (3 s by default)."""


class NatsGateway(Actor):
    """Owns the router's NATS connection and the request subscriptions.

    Takes `SendReply` (from the reply targets it hands the registry), `EventBatch` and
    `ServeWrites` (from the registry) and `GetStats` (-> `NatsGatewayStats`). In
    memory mode it serves writes from the start; in stream mode only while the
    registry says it leads."""

    max_batch = 256

    def __init__(
        self,
        registry: ActorRef,
        nats_url: str,
        *,
        client_name: str = "ipc-router",
        startup_timeout: float = 10.0,
        limits: RegistryLimits | None = None,
        auth: NatsAuth | None = None,
        presence: Presence | None = None,
        presence_wait: float = 0.3,
        reply_prefixes: tuple[str, ...] = (),
        dead_link_after: float = DEAD_LINK_AFTER,
    ) -> None:
        """`presence` says how this router serves (memory or a stream), to check that
        no router serving otherwise runs on the same NATS system (default: memory).
        `reply_prefixes`: the inbox prefixes (besides `_INBOX` and this router's own)
        whose subjects it answers on; a request naming any other reply subject is
        dropped, so that no request can make the router publish where it should not
        (a stream's subject, a key)."""
        super().__init__("nats-gateway")
        self._presence = presence or Presence(mode="memory")
        self._presence_wait = presence_wait
        self._write_subscriptions: list[Subscription] = []
        self._read_subscriptions: list[Subscription] = []
        self._routes = _routes(limits or RegistryLimits())
        self._meters = {route.subject: _Meter() for route in self._routes}
        self._auth = auth or NatsAuth()
        self._startup_timeout = startup_timeout
        self._dead_link_after = dead_link_after
        self._registry = registry
        self._url = nats_url
        self._client_name = client_name
        self._nc: GuardedClient | None = None
        self._beats: GuardedClient | None = None
        """The heartbeat connection (see `_Route.beats`)."""
        accepted = ["_INBOX", *reply_prefixes]
        if self._auth.inbox_prefix:
            accepted.append(self._auth.inbox_prefix)
        self._reply_prefixes = tuple(f"{prefix.rstrip('.')}." for prefix in accepted)
        self._dropped_reply_subject = 0
        self._reply_logged_at = float("-inf")
        self._beats_good_at = 0.0
        """Loop time the heartbeat link last worked (a heartbeat came, or the server
        answered on it)."""
        self._beats_excused_to: float | None = None
        """While the heartbeat link fails: lease time is excused up to here."""
        self._beats_failed_at = 0.0
        self._beats_watch: asyncio.Task[None] | None = None
        self._forwards: set[asyncio.Task[None]] = set()
        """Operator writes on their way to the leader."""
        self._self: ActorRef = self.ref
        self._stopping = False
        self._presence_refused: str | None = None
        """What the server said when it refused this router the presence subject."""
        self._dropped_without_reply = 0
        self._dropped_slow = 0
        self._unanswered_writes = 0
        self._slow_logged_at = float("-inf")
        self._events_published = 0
        self._max_reply = 1024 * 1024
        """The server's max payload (known once connected)."""

    async def on_start(self) -> None:
        self._nc = GuardedClient()
        await connect_at_start(
            self._nc,
            self._url,
            auth=self._auth,
            timeout=self._startup_timeout,
            error_cb=self._on_error,
            name=self._client_name,
            dead_link_after=self._dead_link_after,
            # Reply subjects come from the server's protocol parser and event
            # subjects from validated service names: nothing to re-check per publish.
            skip_subject_validation=True,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
        )
        self._max_reply = self._nc.max_payload
        self._beats = GuardedClient()
        await connect_at_start(
            self._beats,
            self._url,
            auth=self._auth,
            timeout=self._startup_timeout,
            error_cb=self._on_error,
            name=f"{self._client_name}-heartbeats",
            dead_link_after=self._dead_link_after,
            skip_subject_validation=True,
            disconnected_cb=self._on_beats_down,
            reconnected_cb=self._on_beats_back,
            closed_cb=self._on_closed,
        )
        self._beats_watch = asyncio.create_task(self._watch_beats(), name="heartbeat-link")
        await self._check_presence()
        status = None if self._presence.mode == "memory" else await self._registry.ask_or_none(GetStatus())
        if status is None or status.not_serving_reads is None:
            await self._serve_reads(True)
        if self._presence.mode == "memory" or (status is not None and status.role == "leader"):
            await self._serve_writes(True)  # (which flushes)
        else:
            await self._nc.flush()
        log.info("nats_gateway_ready", url=redact(self._url), mode=self._presence.mode)

    async def _subscribe(self, route: _Route) -> Subscription:
        nc = self._beats if route.beats else self._nc
        assert nc is not None
        return await nc.subscribe(
            route.subject,
            # Queries are shared out among the routers. Writes are not: only the leader
            # takes them, and while a paused ex-leader's subscription lingers, every
            # write must still reach the new leader (the first reply wins; the late one
            # is refused, and ignored by the client).
            queue="" if route.write else ROUTER_QUEUE_GROUP,
            cb=self._callback(route),
            pending_msgs_limit=route.pending[0],
            pending_bytes_limit=route.pending[1],
        )

    async def _serve_writes(self, serve: bool) -> None:
        if serve and not self._write_subscriptions:
            for route in self._routes:
                if route.write:
                    self._write_subscriptions.append(await self._subscribe(route))
            assert self._nc is not None and self._beats is not None
            # (The server routes writes here before we go on.)
            await asyncio.gather(self._nc.flush(), self._beats.flush())
            log.info("serving_writes")
        elif not serve and self._write_subscriptions:
            subscriptions, self._write_subscriptions = self._write_subscriptions, []
            for subscription in subscriptions:
                with contextlib.suppress(nats.errors.Error):
                    await subscription.unsubscribe()
            log.info("not_serving_writes")

    async def _serve_reads(self, serve: bool) -> None:
        """Join (or leave) the routers' queue group for queries."""
        if serve and not self._read_subscriptions:
            for route in self._routes:
                if not route.write:
                    self._read_subscriptions.append(await self._subscribe(route))
            log.info("serving_queries")
        elif not serve and self._read_subscriptions:
            subscriptions, self._read_subscriptions = self._read_subscriptions, []
            for subscription in subscriptions:
                with contextlib.suppress(nats.errors.Error):
                    await subscription.unsubscribe()
            log.warning("not_serving_queries")

    async def _check_presence(self) -> None:
        """Answer other routers' probes, then probe: refuse to start beside a router
        that would split the registry (any other one, for a router in memory)."""
        assert self._nc is not None
        mine = self._presence
        me = encode_msgpack(mine)

        async def answer(msg: Msg) -> None:
            if msg.reply and msg.data != me and self._reply_allowed(msg.reply, msg.subject):
                with contextlib.suppress(nats.errors.Error):
                    await msg.respond(me)

        await self._nc.subscribe(ROUTER_PRESENCE_SUBJECT, cb=answer)
        inbox = self._nc.new_inbox()
        others: list[Presence] = []

        async def collect(msg: Msg) -> None:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                others.append(msgspec.msgpack.decode(msg.data, type=Presence))

        probe = await self._nc.subscribe(inbox, cb=collect)
        await self._nc.publish(ROUTER_PRESENCE_SUBJECT, me, reply=inbox)
        await self._nc.flush()
        await asyncio.sleep(self._presence_wait)  # as long as other routers take to answer
        await probe.unsubscribe()
        if self._presence_refused is not None:
            # Without it a second router could start unnoticed and split the registry.
            raise StartupError(
                f"the NATS server refused this router the subject {ROUTER_PRESENCE_SUBJECT} "
                f"({self._presence_refused}): grant the router user publish and subscribe on it (see "
                "deploy/nats-server.conf)"
            )
        for other in others:
            if mine.mode == "memory" or other.mode == "memory" or other.stream != mine.stream:
                raise StartupError(
                    f"another ipc-router ({other.describe()}) already serves this NATS "
                    f"system; this one ({mine.describe()}) would split the registry. Run "
                    "several routers with --store stream and the same --stream, or stop the "
                    "other one"
                )

    async def on_stop(self) -> None:
        self._stopping = True
        tasks = [*self._forwards, *([self._beats_watch] if self._beats_watch else [])]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: on Python 3.11 a cancellation can be lost in asyncio.wait_for
            # (CPython gh-86296), which nats-py's flush uses; the watcher then ends at
            # its next look at `_stopping`, and the links are closed meanwhile.
            await asyncio.wait(tasks, timeout=1.0)
        await asyncio.gather(*(_close(nc) for nc in (self._beats, self._nc) if nc is not None))

    async def handle_batch(self, batch: list[Envelope]) -> None:
        # One loop over the drain rather than `handle` per message: replies are the
        # router's hottest path.
        now = asyncio.get_running_loop().time()
        for envelope in batch:
            message = envelope.message
            kind = type(message)
            if kind is SendReply:
                outcome = message.outcome
                if type(outcome) is NotLeading:
                    # Silence: an answer from a router that is not sure it leads would
                    # race the leader's (and could contradict what it stored).
                    self._unanswered_writes += 1
                    continue
                if message.wrap is not None and not isinstance(outcome, BaseException):
                    outcome = message.wrap(outcome)
                body, status = _reply_body(outcome, message.nonce)
                await self._publish(message.reply_to, body, message.nonce, message.nc)
                if message.meter is not None:
                    message.meter.record(status, now - message.started)
            elif kind is EventBatch:
                for event in message.events:
                    await self._publish(
                        events_subject(event.instance.service_name), encode_msgpack(event)
                    )
                self._events_published += len(message.events)
            elif kind is IsConnected:
                self.resolve(envelope, self._nc is not None and self._nc.is_connected)
            elif kind is GetStats:
                self.resolve(envelope, self._stats())
            elif kind is ServeWrites:
                await self._serve_writes(message.serve)
                self.resolve(envelope, None)
            elif kind is ServeReads:
                await self._serve_reads(message.serve)
                self.resolve(envelope, None)
            elif kind is ForwardAdmin:
                task = asyncio.create_task(self._forward(envelope, message.sealed))
                self._forwards.add(task)
                task.add_done_callback(self._forwards.discard)
            else:
                error = TypeError(f"nats gateway cannot handle {kind.__name__}")
                self.reject(envelope, error)
                raise error

    async def _forward(self, envelope: Envelope, sealed: bytes) -> None:
        """Send an operator's write to the leader and settle `envelope` with its answer.
        No responders (no router leads right now: a failover) is waited out; a timeout is
        not retried (the leader may have applied it, and would refuse the same command
        again as a replay): the operator is told to look before trying again."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + _FORWARD_PATIENCE
        pause = 0.05
        try:
            while True:
                nc = self._nc
                try:
                    if nc is None:
                        raise nats.errors.ConnectionClosedError
                    msg = await nc.request(ROUTER_ADMIN_SUBJECT, sealed, timeout=_FORWARD_TIMEOUT)
                except nats.errors.NoRespondersError:
                    if loop.time() + pause > give_up:
                        envelope.reject(_unavailable("no router leads"))
                        return
                    await asyncio.sleep(pause)
                    pause = min(2 * pause, 0.5)
                    continue
                except nats.errors.TimeoutError:
                    envelope.reject(
                        ProtocolError(
                            Status.GATEWAY_TIMEOUT, ErrorCode.ROUTER_TIMEOUT,
                            f"The leader did not answer within {_FORWARD_TIMEOUT:g} s; the change "
                            "may have been applied: look at the instance before trying again.",
                        )
                    )  # fmt: skip
                    return
                except (nats.errors.Error, OSError) as error:
                    envelope.reject(_unavailable(f"the NATS connection failed: {error!r}"))
                    return
                try:
                    envelope.resolve(decode_instance_reply(msg.data))
                except ProtocolError as error:
                    envelope.reject(error)
                return
        except asyncio.CancelledError:
            envelope.reject(ActorDeadError("the NATS gateway stopped"))
            raise

    def _stats(self) -> NatsGatewayStats:
        nc = self._nc
        return NatsGatewayStats(
            connected=nc is not None and nc.is_connected,
            events_published=self._events_published,
            dropped_without_reply=self._dropped_without_reply,
            dropped_slow=self._dropped_slow,
            requests={
                (subject, status): count
                for subject, meter in self._meters.items()
                for status, count in meter.statuses.items()
            },
            latency={subject: meter.latency.snapshot() for subject, meter in self._meters.items()},
            dropped_malformed=nc.dropped_malformed if nc is not None else 0,
            unanswered_writes=self._unanswered_writes,
            dropped_reply_subject=self._dropped_reply_subject,
        )

    async def _publish(
        self, reply_to: str, body: bytes, nonce: str | None = None, nc: Any = None
    ) -> None:
        nc = nc or self._nc
        assert nc is not None
        try:
            await nc.publish(reply_to, body)
        except nats.errors.MaxPayloadError:
            log.error("reply_too_large", size=len(body), max_payload=self._max_reply)
            too_large = ProtocolError(
                Status.INTERNAL_ERROR,
                ErrorCode.INTERNAL_ERROR,
                f"The reply ({len(body)} bytes) exceeds the NATS max payload "
                f"({self._max_reply} bytes); ask for a smaller page (limit).",
            )
            await self._publish(reply_to, encode_msgpack(error_reply(too_large, nonce)), None, nc)
        except Exception as error:  # noqa: BLE001 - one lost reply must not stop the gateway
            log.warning("reply_publish_failed", error=repr(error))

    def _callback(self, route: _Route) -> Callable[[Msg], Awaitable[None]]:
        decode, make_message, wrap = route.decode, route.message, route.wrap
        lane, write = route.lane, route.write and self._presence.mode != "memory"
        meter = self._meters[route.subject]
        now = asyncio.get_running_loop().time
        nc = self._beats if route.beats else self._nc
        accepted = self._reply_prefixes
        beats = route.beats

        async def on_request(msg: Msg) -> None:
            reply_to = msg.reply
            if not reply_to:
                self._dropped_without_reply += 1
                log.warning("request_without_reply_subject", subject=msg.subject)
                return
            if not reply_to.startswith(accepted) and not self._reply_allowed(reply_to, msg.subject):
                return
            started = now()
            if beats:
                self._beats_good_at = started
                if self._beats_excused_to is not None:
                    self._beats_work(started)
            try:
                request = decode(msg.data)
            except ProtocolError as error:
                log.info(
                    route.action,
                    outcome="invalid",
                    status=int(error.status),
                    code=str(error.code),
                    field=error.details.get("field"),
                )
                body, status = _reply_body(error, peek_nonce(msg.data))
                await self._publish(reply_to, body, None, nc)
                meter.record(status, now() - started)
                return
            try:
                self._registry.tell(
                    make_message(request, self._max_reply),
                    _ReplyVia(self._self, reply_to, wrap, request.nonce, meter, started, nc),
                    lane=lane,
                )
            except ActorDeadError as error:
                if write:
                    # No registry here, and none that leads: silence, so that the leader
                    # (another router, or this one's registry restarted) answers alone.
                    self._unanswered_writes += 1
                    self._leave_writes()
                    return
                body, status = _reply_body(error, request.nonce)
                await self._publish(reply_to, body, None, nc)
                meter.record(status, now() - started)
            except Exception as error:  # noqa: BLE001 - every request gets an answer
                body, status = _reply_body(error, request.nonce)
                await self._publish(reply_to, body, None, nc)
                meter.record(status, now() - started)

        return on_request

    def _reply_allowed(self, reply_to: str, subject: str) -> bool:
        """Whether `reply_to` is under an inbox prefix this router answers on; if not,
        the request is dropped and counted (logged once a second)."""
        if reply_to.startswith(self._reply_prefixes):
            return True
        self._dropped_reply_subject += 1
        now = asyncio.get_running_loop().time()
        if now - self._reply_logged_at >= 1.0:
            self._reply_logged_at = now
            log.warning("reply_subject_refused", subject=subject, reply_to=reply_to[:120],
                        accepted=list(self._reply_prefixes), total=self._dropped_reply_subject)  # fmt: skip
        return False

    def _leave_writes(self) -> None:
        """Leave the write subjects (the registry that took them is gone; one that leads
        again says so)."""
        if self._write_subscriptions:
            with contextlib.suppress(ActorDeadError, MailboxFullError):
                self.tell(ServeWrites(False), lane=Lane.URGENT)

    async def _on_error(self, error: Exception) -> None:
        refused = refusal(error, ROUTER_PRESENCE_SUBJECT)
        if refused is not None:
            self._presence_refused = refused
        if isinstance(error, nats.errors.SlowConsumerError):
            # One per dropped message under a flood: counted, logged once a second.
            self._dropped_slow += 1
            now = asyncio.get_running_loop().time()
            if now - self._slow_logged_at >= 1.0:
                self._slow_logged_at = now
                log.warning("requests_dropped", subject=error.subject, total=self._dropped_slow)
            return
        log.warning("nats_error", error=repr(error))

    async def _on_disconnected(self) -> None:
        if not self._stopping:
            log.warning("nats_disconnected", url=redact(self._url))

    async def _on_reconnected(self) -> None:
        log.info("nats_reconnected", url=redact(self._url))

    async def _on_beats_down(self) -> None:
        if not self._stopping:
            log.warning("nats_disconnected", url=redact(self._url), connection="heartbeats")
            self._beats_failing(asyncio.get_running_loop().time())

    async def _on_beats_back(self) -> None:
        log.info("nats_reconnected", url=redact(self._url), connection="heartbeats")

    def _beats_failing(self, now: float) -> None:
        """The heartbeat link is down, or unanswering: from the last moment it worked,
        no heartbeat could arrive. That is the router's own gap: it is left out of lease
        time, as a stall of its event loop is, for as long as it lasts."""
        if self._beats_excused_to is None:
            self._beats_excused_to = self._beats_failed_at = self._beats_good_at or now
            log.warning("heartbeat_link_failing", url=redact(self._url),
                        effect="lease time stands still until it works again")  # fmt: skip
        self._excuse_beats(now)

    def _beats_work(self, now: float) -> None:
        """The heartbeat link works again: lease time runs again."""
        self._excuse_beats(now)
        self._beats_excused_to = None
        log.warning("heartbeat_link_back", url=redact(self._url),
                    excused_seconds=round(now - self._beats_failed_at, 3))  # fmt: skip

    def _excuse_beats(self, now: float) -> None:
        since = self._beats_excused_to
        if since is not None and now > since:
            with contextlib.suppress(ActorDeadError, MailboxFullError):
                self._registry.tell(ExcuseGap(now - since), lane=Lane.URGENT)
            self._beats_excused_to = now

    async def _watch_beats(self) -> None:
        """While no heartbeat comes, ask the server for an answer on their link now and
        then: a link gone half-open says nothing by itself until its pings go
        unanswered, seconds later, perhaps after a lease."""
        loop = asyncio.get_running_loop()
        beats = self._beats
        assert beats is not None
        self._beats_good_at = loop.time()
        while not self._stopping:
            await asyncio.sleep(_BEATS_SILENCE)
            now = loop.time()
            if self._beats_excused_to is None and now - self._beats_good_at < _BEATS_SILENCE:
                continue
            self._excuse_beats(now)
            try:
                async with asyncio.timeout(_BEATS_SILENCE):
                    await beats.flush()
            except (nats.errors.Error, OSError, TimeoutError):
                self._beats_failing(loop.time())
                continue
            self._beats_good_at = loop.time()
            if self._beats_excused_to is not None:
                self._beats_work(self._beats_good_at)

    async def _on_closed(self) -> None:
        if not self._stopping:
            self.crash(ConnectionError("NATS connection closed"))


async def _close(nc: GuardedClient) -> None:
    """Drain (at most 2 s: the server may be gone or wedged), then close, whatever
    the drain did: `asyncio.wait` rather than `wait_for`, which on Python 3.11 waits
    on for a drain that lost its cancellation (CPython gh-86296)."""
    if nc.is_closed:
        return
    drain = asyncio.ensure_future(nc.drain())
    drain.add_done_callback(_retrieved)
    if not (await asyncio.wait({drain}, timeout=2.0))[0]:
        drain.cancel()
        await asyncio.wait({drain}, timeout=0.5)
    with contextlib.suppress(Exception):
        await nc.close()


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark a background task's outcome seen (a drain's error is nothing to report)."""
    if not task.cancelled():
        task.exception()


class NatsGatewayClient:
    """Typed calls to a NATS gateway through its ref."""

    __slots__ = ("ref",)

    def __init__(self, ref: ActorRef) -> None:
        self.ref = ref

    async def stats(self, timeout: float = 2.0) -> NatsGatewayStats | None:
        """What the gateway has seen, and whether it is connected (None when it does
        not run or does not answer)."""
        stats: NatsGatewayStats | None = await self.ref.ask_or_none(GetStats(), timeout)
        return stats

    async def connected(self) -> bool:
        """True while the gateway runs and its NATS connection is up."""
        connected: bool | None = await self.ref.ask_or_none(IsConnected())
        return bool(connected)

    async def forward_admin(self, sealed: bytes) -> InstanceReply:
        """Send a sealed operator write to the leader; its answer (an error reply is
        answered as it is). Raises `ProtocolError` 503/504 when none came."""
        reply: InstanceReply = await self.ref.ask(
            ForwardAdmin(sealed), _FORWARD_PATIENCE + _FORWARD_TIMEOUT + 1.0
        )
        return reply
