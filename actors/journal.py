"""The registry's JetStream stream: its durable, replicated mailbox.

One subject per instance, one message kept per subject, so the stream is itself the
compacted current state: no unbounded log, no snapshot. A forgotten instance is a
tombstone (an empty message with the `Ipc-Forget` header) that JetStream removes
after `tombstone_ttl`. Each leader's first write is a term marker.

`Journal` is what the RegistryActor uses, from its own task only:
- `open()` finds the stream (or creates it: the epoch and the cursor secret are born
  with it, in its metadata);
- `head()` tells where the stream stands against a view of it: gone, replaced, its
  last sequence (the last message ever stored, which may have been removed since),
  how many messages it holds, and the first message after the view's revision;
- `follow()` reads it from the start with an ordered consumer and goes on with every
  new entry, in stream order, handing each to a callback;
- `append()` writes one drain's changes as one pipelined batch: the first message
  conditional on the stream's last sequence (`Nats-Expected-Last-Sequence`), each
  next one on the message before it being the last in the stream
  (`Nats-Expected-Last-Msg-Id`), so that a leader that lost its leadership cannot
  write after its successor has.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy

from actors.nats_connection import refusal
from actors.role_state import StreamHead
from protocol import encode_msgpack
from protocol.stored import (
    FORGET_HEADER,
    StoredInstance,
    TermMarker,
    instance_subject,
    term_subject,
)

__all__ = [
    "Entry",
    "Fenced",
    "Journal",
    "JournalConfig",
    "JournalError",
    "StreamFacts",
    "Write",
]

log = structlog.get_logger(component="journal")

_WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code for a failed `Nats-Expected-Last-Sequence`."""
_STREAM_NOT_FOUND = 10059
_NO_PEERS_FOR_PLACEMENT = 10005
"""Fewer JetStream servers known than replicas asked for: while a cluster forms, or
for good when --replicas exceeds the cluster's size."""
_WRONG_LAST_MSG_ID = 10070
"""JetStream's error code for a failed `Nats-Expected-Last-Msg-Id`."""
_REPLICAS_NOT_SUPPORTED = 10074
"""Replicas asked of a JetStream server that is not clustered."""
_NO_MESSAGE_FOUND = 10037


class JournalError(RuntimeError):
    """The stream could not be read or written (the state may now differ from it)."""


class Fenced(JournalError):
    """A conditional append failed: someone else wrote to the stream (a new leader)."""


@dataclass(frozen=True, slots=True)
class JournalConfig:
    """Where the registry lives in JetStream."""

    stream: str = "IPC_REGISTRY"
    subject_prefix: str = "ipc.registry.state"
    replicas: int = 1
    tombstone_ttl: float = 600.0
    """Seconds a forgotten instance's tombstone stays (standbys that lag by more than
    this, a rare case, reload the whole stream anyway)."""


@dataclass(frozen=True, slots=True)
class StreamFacts:
    """What `open()` learns: the registry's identity and where the stream stands."""

    epoch: str
    cursor_secret: bytes
    last_sequence: int
    messages: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream message as `follow()` hands it on."""

    sequence: int
    subject: str
    data: bytes
    forgotten: bool
    pending: int
    """Messages still to come after this one when it was delivered (0: caught up)."""


@dataclass(frozen=True, slots=True)
class Write:
    """One instance to store (`stored`), or to forget (`stored` None)."""

    service_name: str
    instance_id: str
    stored: StoredInstance | None


class Journal:
    """The registry's stream over one NATS connection (see the module)."""

    def __init__(
        self, nc: NatsClient, config: JournalConfig | None = None, *, timeout: float = 5.0
    ) -> None:
        """`timeout`: how long one acknowledgement or check may take (the router derives
        it from `--failover-after`: a leader that cannot write stops leading in time)."""
        self._nc = nc
        self.config = config or JournalConfig()
        self.timeout = timeout
        self._prefix = self.config.subject_prefix
        self._js = nc.jetstream(timeout=max(timeout, 1.0))
        self._follower: Subscription | None = None
        self.refused: str | None = None
        """A permission violation about JetStream that the server reported (the
        connection's error callback sets it: see `note_error`)."""

    def note_error(self, error: Exception) -> None:
        """For the connection's error callback: remember a refusal of JetStream, so that
        a call that then gets no answer says why."""
        refused = refusal(error, "$JS")
        if refused is not None:
            self.refused = refused

    # -- the stream ----------------------------------------------------------------

    async def open(self, *, patient: bool = False) -> StreamFacts:
        """Find the stream, or create it with a new epoch and cursor secret. Each
        request is asked once, within the journal's timeout; `patient` (at start) asks
        again for up to about ten seconds while a cluster elects its leaders.

        Raises:
            JournalError: JetStream is not available, or refused the stream.
        """
        asks: dict[str, Any] = {"attempts": 8} if patient else {"attempts": 1, "timeout": self.timeout}
        info = await self._api(f"STREAM.INFO.{self.config.stream}", {}, missing_ok=True, **asks)
        if info is None:
            info = await self._create(asks)
        config = info["config"]
        metadata = config.get("metadata") or {}
        if "ipc_router_epoch" not in metadata:
            raise JournalError(
                f"stream {self.config.stream} exists but was not made by ipc-router; "
                "choose another name with --stream"
            )
        if config.get("num_replicas", 1) != self.config.replicas:
            log.warning(
                "stream_replicas_differ",
                stream=self.config.stream,
                configured=self.config.replicas,
                actual=config.get("num_replicas", 1),
            )
        state = info["state"]
        return StreamFacts(
            epoch=metadata["ipc_router_epoch"],
            cursor_secret=bytes.fromhex(metadata["ipc_router_cursor_secret"]),
            last_sequence=int(state.get("last_seq", 0)),
            messages=int(state.get("messages", 0)),
        )

    async def _create(self, asks: dict[str, Any]) -> dict[str, Any]:
        config = {
            "name": self.config.stream,
            "description": "ipc-router registry: one message per instance",
            "subjects": [f"{self._prefix}.>"],
            "retention": "limits",
            "max_msgs_per_subject": 1,
            "discard": "old",
            "storage": "file",
            "num_replicas": self.config.replicas,
            "allow_msg_ttl": True,
            # ns: our message ids only chain a batch's writes; they never repeat.
            "duplicate_window": 1_000_000_000,
            "metadata": {
                "ipc_router_epoch": secrets.token_hex(8),
                "ipc_router_cursor_secret": secrets.token_hex(16),
            },
        }
        stream = self.config.stream
        created = await self._api(f"STREAM.CREATE.{stream}", config, exists_ok=True, **asks)
        if created is None:  # another router created it a moment ago: use theirs
            found = await self._api(f"STREAM.INFO.{stream}", {}, **asks)
            assert found is not None
            return found
        log.info("stream_created", stream=self.config.stream, replicas=self.config.replicas)
        return created

    async def head(self, revision: int) -> StreamHead:
        """Where the stream stands against a view at `revision` (one quick look, no
        retries: the caller looks again later).

        Raises:
            JournalError: JetStream did not answer in time.
        """
        stream, timeout = self.config.stream, self.timeout
        info = await self._api(
            f"STREAM.INFO.{stream}", {}, missing_ok=True, attempts=1, timeout=timeout
        )
        if info is None:
            return StreamHead(None)
        metadata = info["config"].get("metadata") or {}
        state = info["state"]
        last = int(state.get("last_seq", 0))
        next_unapplied = None
        if last > revision:
            # Is anything after the view still there (or were those messages removed:
            # tombstones past their TTL)? Asked after the info, so a message stored
            # meanwhile counts as unapplied rather than being skipped.
            found = await self._api(
                f"STREAM.MSG.GET.{stream}",
                {"seq": revision + 1, "next_by_subj": f"{self._prefix}.>"},
                missing_ok=True,
                attempts=1,
                timeout=timeout,
            )
            next_unapplied = int(found["message"]["seq"]) if found is not None else None
        return StreamHead(
            epoch=str(metadata.get("ipc_router_epoch", "")),
            last_sequence=last,
            first_sequence=int(state.get("first_seq", 0)),
            messages=int(state.get("messages", 0)),
            next_unapplied=next_unapplied,
        )

    async def new_epoch(self) -> str:
        """Give the stream a new epoch (its content was removed behind the routers'
        backs: every view and cache must read it again); returns it.

        Raises:
            JournalError: the stream could not be updated.
        """
        stream = self.config.stream
        info = await self._api(f"STREAM.INFO.{stream}", {}, attempts=1, timeout=self.timeout)
        assert info is not None
        config = info["config"]
        epoch = secrets.token_hex(8)
        config["metadata"] = {**(config.get("metadata") or {}), "ipc_router_epoch": epoch}
        await self._api(f"STREAM.UPDATE.{stream}", config, attempts=1, timeout=self.timeout)
        log.warning("stream_epoch_changed", stream=stream, epoch=epoch)
        return epoch

    async def _api(
        self,
        call: str,
        body: dict[str, Any],
        *,
        missing_ok: bool = False,
        exists_ok: bool = False,
        attempts: int = 15,
        timeout: float = 1.0,
    ) -> dict[str, Any] | None:
        """One JetStream API call, retried while the cluster elects its leaders. With
        `missing_ok`, None when there is no such stream (or message)."""
        for attempt in range(attempts):
            try:
                reply = await self._nc.request(
                    f"$JS.API.{call}", json.dumps(body).encode(), timeout=timeout
                )
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as error:
                if self.refused is not None:
                    raise JournalError(
                        f"the NATS server refused this router JetStream ({self.refused}): "
                        "grant the router user the JetStream API for the registry's stream "
                        "(see deploy/nats-server.conf)"
                    ) from None
                if attempt + 1 == attempts:
                    raise JournalError(
                        f"JetStream did not answer {call}: {error!r}; is JetStream enabled "
                        "on the NATS server (nats-server -js)?"
                    ) from None
                await asyncio.sleep(0.25)
                continue
            answer: dict[str, Any] = json.loads(reply.data)
            refusal = answer.get("error")
            if refusal is None:
                return answer
            code = refusal.get("err_code")
            if missing_ok and code in (_STREAM_NOT_FOUND, _NO_MESSAGE_FOUND):
                return None
            if exists_ok and "already in use" in str(refusal.get("description", "")):
                return None
            transient = refusal.get("code") == 503 or code == _NO_PEERS_FOR_PLACEMENT
            if transient and attempt + 1 < attempts:  # no leader yet, peers still joining
                await asyncio.sleep(0.25)
                continue
            hint = ""
            if code in (_NO_PEERS_FOR_PLACEMENT, _REPLICAS_NOT_SUPPORTED):
                hint = (
                    f"; the stream wants {self.config.replicas} replica(s): are that many "
                    "JetStream servers in the cluster and up (--replicas)?"
                )
            raise JournalError(
                f"JetStream refused {call}: {refusal.get('description', refusal)}{hint}"
            )
        raise JournalError(f"JetStream did not answer {call}")  # pragma: no cover

    # -- reading ------------------------------------------------------------------

    async def follow(self, on_entry: Callable[[Entry], Awaitable[None]], after: int = 0) -> None:
        """Hand every message of the stream after sequence `after` to `on_entry`, then
        each new one as it comes, in stream order (an ordered consumer: a gap makes it
        start again where it was). `on_entry` may take its time: the next message waits
        (and the server holds back more, by flow control). Returns once the consumer
        exists.

        Raises:
            JournalError: the consumer could not be made (no stream, no answer).
        """
        await self.stop_following()
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after else DeliverPolicy.ALL,
            opt_start_seq=after + 1 if after else None,
        )

        async def deliver(msg: Msg) -> None:
            metadata = msg.metadata
            headers = msg.headers or {}
            await on_entry(
                Entry(
                    sequence=metadata.sequence.stream,
                    subject=msg.subject,
                    data=msg.data,
                    forgotten=FORGET_HEADER in headers,
                    pending=metadata.num_pending,
                )
            )

        try:
            self._follower = await self._js.subscribe(
                f"{self._prefix}.>",
                cb=deliver,
                config=config,
                ordered_consumer=True,
                idle_heartbeat=1.0,
                stream=self.config.stream,
            )
        except (nats.errors.Error, OSError) as error:
            raise JournalError(f"cannot follow stream {self.config.stream}: {error!r}") from None

    async def stop_following(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None:
            try:
                await follower.unsubscribe()
            except nats.errors.Error as error:
                log.debug("follower_not_removed", error=repr(error))

    # -- writing ------------------------------------------------------------------

    async def write_term(self, marker: TermMarker, expected_last: int) -> int:
        """Write a term marker after `expected_last`; returns its sequence.

        Raises:
            Fenced: the stream's last sequence is not `expected_last`.
            JournalError: no acknowledgement.
        """
        return await self._append([(term_subject(self._prefix), encode_msgpack(marker), None)], expected_last)

    async def append(self, writes: list[Write], expected_last: int) -> int:
        """Store `writes` in order, the first conditional on the stream's last
        sequence being `expected_last`, each next on the one before; returns the last
        sequence written. All or a prefix may be stored when this raises: the caller
        must then read the stream again.

        Raises:
            Fenced: someone else wrote to the stream.
            JournalError: not every write was acknowledged in time.
        """
        ttl = max(1, math.ceil(self.config.tombstone_ttl))  # (whole seconds, at least one)
        forget = {FORGET_HEADER: "1", "Nats-TTL": f"{ttl}s"}
        messages = [
            (
                instance_subject(self._prefix, write.service_name, write.instance_id),
                b"" if write.stored is None else encode_msgpack(write.stored),
                forget if write.stored is None else None,
            )
            for write in writes
        ]
        return await self._append(messages, expected_last)

    async def _append(
        self, messages: list[tuple[str, bytes, dict[str, str] | None]], expected_last: int
    ) -> int:
        # Each write is conditional on the one before being the stream's last message:
        # if any fails (or is lost), so do all after it, down to the last, which alone
        # asks for an acknowledgement. Chaining on sequence numbers alone is not enough:
        # with one foreign write in the gap, the first write fails and the next one's
        # expected sequence matches.
        batch = secrets.token_hex(8)
        last = len(messages) - 1
        for index, (subject, data, extra) in enumerate(messages):
            headers = {"Nats-Expected-Last-Sequence": str(expected_last + index)}
            if last:  # (a write alone needs no id: nothing is chained on it)
                headers["Nats-Msg-Id"] = f"{batch}.{index}"
            if index:
                headers["Nats-Expected-Last-Msg-Id"] = f"{batch}.{index - 1}"
            if extra:
                headers |= extra
            if index < last:
                await self._nc.publish(subject, data, headers=headers)
                continue
            try:
                ack = await self._nc.request(subject, data, timeout=self.timeout, headers=headers)
            except nats.errors.TimeoutError:
                raise JournalError(
                    f"{len(messages)} writes not acknowledged within {self.timeout:g} s"
                ) from None
            except nats.errors.NoRespondersError:
                raise JournalError(f"no stream stores {subject}: was the stream deleted?") from None
            _check_ack(ack.data)
        return expected_last + len(messages)


def _check_ack(data: bytes) -> None:
    """Raise what JetStream's acknowledgement of a commit says went wrong, if anything."""
    if b'"error"' not in data:
        return
    try:
        error: dict[str, Any] = json.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        error = {"description": data[:200].decode(errors="replace")}
    description = str(error.get("description", error))
    if error.get("err_code") in (_WRONG_LAST_SEQUENCE, _WRONG_LAST_MSG_ID):
        raise Fenced(f"the stream moved on: {description}")
    raise JournalError(f"JetStream refused a write: {description}")


def decode_or_none(data: bytes, decode: Callable[[bytes], Any]) -> Any:
    """`decode(data)`, or None for an entry this router cannot read (logged)."""
    try:
        return decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        log.error("unreadable_stream_entry", error=str(error))
        return None
