"""The registry as a pure state machine: records, leases and queries, no I/O.

`RegistryState` is driven by requests and clock readings only (both clocks are
injectable), so tests run it without an event loop and every router can replay the
same inputs into the same state. `RegistryActor` (registry.py) wraps it.

Leases: an instance is ONLINE while it renews within `lease_ttl`; then UNHEALTHY;
after `offline_after` more seconds OFFLINE (gone from the live registry, kept
`offline_retention` seconds for admins); then forgotten. Deadlines live in a heap
with one entry per instance, so expiry costs O(log n) per due instance, never a
scan, and a heartbeat only moves a number.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import hmac
import itertools
import math
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import msgspec

from protocol import (
    OWNER,
    ErrorCode,
    EventType,
    GetServiceRequest,
    Instance,
    InstanceReply,
    InstanceStatus,
    LeasePolicy,
    LeaseReply,
    LeaseRequest,
    ListServicesRequest,
    Maintenance,
    ProtocolError,
    RegisterReply,
    RegisterRequest,
    RegistryEvent,
    RegistryLimits,
    ServiceDetail,
    ServiceList,
    ServiceSummary,
    Status,
    decode_cursor,
    encode_cursor,
    encode_json,
    encode_msgpack,
)
from protocol.stored import StoredInstance, StoredMaintenance

__all__ = ["FrozenMetadata", "RegistryState", "Transition", "frozen_metadata"]

ONLINE = InstanceStatus.ONLINE
UNHEALTHY = InstanceStatus.UNHEALTHY
OFFLINE = InstanceStatus.OFFLINE


class Transition(msgspec.Struct, frozen=True):
    """A change to an instance: the event to publish, the record to store (None: the
    instance is forgotten, or the state was made without `keep_stored`), plus the
    reason for the log."""

    event: RegistryEvent
    old: InstanceStatus | None
    new: InstanceStatus | None
    reason: str
    stored: StoredInstance | None

    @property
    def service_name(self) -> str:
        return self.event.instance.service_name

    @property
    def instance_id(self) -> str:
        return self.event.instance.instance_id



# -- state ----------------------------------------------------------------------


class _Record:
    """One instance. `renewed` is monotonic (deadlines), `last_heartbeat` wall clock
    (display). `generation` invalidates heap entries that no longer apply."""

    __slots__ = (
        "deadline",
        "generation",
        "instance_id",
        "last_heartbeat",
        "maintenance",
        "metadata",
        "offline_at",
        "registered_at",
        "removed_by",
        "renewed",
        "service_name",
        "session_hash",
        "size",
        "status",
    )

    def __init__(
        self,
        service_name: str,
        instance_id: str,
        metadata: FrozenMetadata,
        session_hash: bytes | None,
        *,
        status: InstanceStatus = ONLINE,
        registered_at: float,
        last_heartbeat: float,
        renewed: float,
        deadline: float,
        offline_at: float | None = None,
    ) -> None:
        self.service_name = sys.intern(service_name)  # stored once, however many instances
        self.instance_id = instance_id
        self.metadata = metadata
        self.registered_at = registered_at
        self.session_hash = session_hash
        """Never the session id itself: see `StoredInstance.session_hash`."""
        self.status = status
        self.renewed = renewed
        self.last_heartbeat = last_heartbeat
        self.deadline = deadline
        self.offline_at = offline_at
        self.generation = 0
        self.size = 0
        """Encoded size bound of the view (0: not measured yet)."""
        self.maintenance: _Maintenance | None = None
        """Live records only: going OFFLINE ends it."""
        self.removed_by: str | None = None
        """OFFLINE records an operator deregistered: who."""

    def stored(self) -> StoredInstance:
        maintenance = self.maintenance
        return StoredInstance(
            service_name=self.service_name,
            instance_id=self.instance_id,
            status=self.status,
            metadata=self.metadata,
            registered_at=self.registered_at,
            last_heartbeat=self.last_heartbeat,
            session_hash=self.session_hash,
            offline_at=self.offline_at,
            maintenance=(
                None
                if maintenance is None
                else StoredMaintenance(
                    since=maintenance.since, by=maintenance.by, reason=maintenance.reason
                )
            ),
            removed_by=self.removed_by,
        )


class _Maintenance(msgspec.Struct, frozen=True):
    """A record's maintenance: since when (wall clock), who asked, why."""

    since: float
    by: str
    reason: str


class _Service:
    """One service's instances, with what queries need kept up to date: the count per
    status, and the ids in sorted order (built on first use, then maintained)."""

    __slots__ = ("_sorted_ids", "counts", "drained", "instances", "revision", "serial", "version")

    def __init__(self, serial: int, revision: int) -> None:
        self.serial = serial
        """Unique within the registry: a service emptied and created again is another."""
        self.instances: dict[str, _Record] = {}
        self.counts: dict[InstanceStatus, int] = {}
        self.drained: dict[InstanceStatus, int] = {}
        """Instances in maintenance, by status (each counted in `counts` too)."""
        self.version = 0
        """+1 with every change to any of its instances, heartbeats included."""
        self.revision = revision
        """Registry revision of its last change: the `previous_revision` of its next event."""
        self._sorted_ids: list[str] | None = None

    def sorted_ids(self) -> list[str]:
        if self._sorted_ids is None:
            self._sorted_ids = sorted(self.instances)
        return self._sorted_ids

    def add(self, record: _Record) -> None:
        self.instances[record.instance_id] = record
        if self._sorted_ids is not None:
            bisect.insort(self._sorted_ids, record.instance_id)

    def remove(self, record: _Record) -> None:
        del self.instances[record.instance_id]
        if self._sorted_ids is not None:
            del self._sorted_ids[bisect.bisect_left(self._sorted_ids, record.instance_id)]

    def count(self, status: InstanceStatus, delta: int) -> bool:
        """Move the count of `status` by `delta`; True when that status appeared in or
        left the service (0 <-> 1)."""
        self.version += 1
        before = self.counts.get(status, 0)
        left = before + delta
        if left:
            self.counts[status] = left
        else:
            del self.counts[status]
        return not before or not left


_VIEW_BYTES = 320
"""Upper bound of an instance view's msgpack size, metadata aside."""
_MAINTENANCE_BYTES = 64
"""Upper bound of an instance view's maintenance part, its strings aside."""
_SUMMARY_BYTES = 112
"""Upper bound of a service summary's msgpack size, its name aside."""
SCAN_BUDGET = 1_000
"""Most entries one query page looks at. A filter that matches little ends the page
early, with a cursor to go on from: each query costs the registry a bounded time,
however large the registry and however selective the filter."""
_EMPTIED_KEPT = 10_000
"""Services emptied recently whose last revision is kept, so that their next event
still links to the one before; older ones are forgotten (a cache then resyncs)."""
_HEAP_SLACK = 1_024


class RegistryState:
    """Registry state and its transitions; no I/O, no concurrency concerns.

    `clock` is monotonic seconds (deadlines), `wall_clock` Unix seconds (display);
    both injectable so tests can drive time.
    """

    def __init__(
        self,
        policy: LeasePolicy | None = None,
        *,
        limits: RegistryLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        cursor_secret: bytes | None = None,
        keep_stored: bool = True,
    ) -> None:
        """`cursor_secret` signs the cursors of query pages (routers that serve one
        registry share it); by default a random one. Without `keep_stored` the
        transitions carry no `StoredInstance` (a registry in memory stores none)."""
        self._keep_stored = keep_stored
        self.policy = policy or LeasePolicy()
        self.limits = limits or RegistryLimits()
        self.live = 0
        """Instances not OFFLINE (what `limits.max_instances` caps)."""
        self._offline: dict[_Record, None] = {}
        """OFFLINE records in the order they went OFFLINE (an ordered set): the oldest
        is forgotten early when they would outnumber `limits.max_instances`."""
        self._cursor_secret = cursor_secret or secrets.token_bytes(16)
        self._clock = clock
        self._wall = wall_clock
        self._services: dict[str, _Service] = {}
        self._sorted_names: list[str] | None = None
        self._deadlines: list[tuple[float, int, int, _Record]] = []
        self._sequence = itertools.count()
        self._started = clock()
        self.epoch = secrets.token_hex(8)
        """Random id of this registry incarnation: state and revisions start afresh."""
        self.revision = 0
        self._emptied: OrderedDict[str, int] = OrderedDict()
        """Last revision of recently emptied services (at most `_EMPTIED_KEPT`)."""
        self._services_in: dict[InstanceStatus, int] = {}
        """How many services have instances in each status."""
        self.instances_in: dict[InstanceStatus, int] = {}
        """How many instances are in each status."""
        self.drained_in: dict[InstanceStatus, int] = {}
        """How many instances in each status are in maintenance."""
        self.transitions: list[Transition] = []
        """Changes since the owner last took them (`take_transitions`)."""
        self._ttl_delta = timedelta(seconds=self.policy.lease_ttl)

    # -- mutations ---------------------------------------------------------------

    def register(self, request: RegisterRequest) -> RegisterReply:
        """Apply a registration.

        A new (service, instance) pair is created (201), as is one whose previous
        holder went OFFLINE, or stopped renewing (UNHEALTHY: a restarted service taking
        its id back; the event says `replaced`). The same session registering again
        gets its record back (200), lease renewed, metadata replaced if it changed.
        Anything else naming an ONLINE instance is a conflict (409): another session,
        or any registration without a session, since that cannot prove ownership.
        """
        now, wall = self._clock(), self._wall()
        session = session_hash(request.session_id)
        service = self._services.get(request.service_name)
        record = service.instances.get(request.instance_id) if service is not None else None
        if record is not None and record.status is not OFFLINE and _same(session, record):
            return self._register_again(record, request, now, wall)
        if record is not None and record.status is ONLINE:
            raise ProtocolError(
                Status.CONFLICT,
                ErrorCode.INSTANCE_CONFLICT,
                f"Instance {request.instance_id!r} of service {request.service_name!r} is "
                "already registered by another client, which keeps renewing it. Use a "
                "different instance_id, or retry from the client that registered it.",
                {"existing": self._view(record)},
            )
        replaced = record is not None and record.status is UNHEALTHY
        if not replaced:
            self._check_room(service, request)
        if service is None:  # only now: a refused registration leaves nothing behind
            service = self._add_service(request.service_name)
        held = None
        if record is not None:  # an OFFLINE record, or an UNHEALTHY one taken over
            if replaced and record.maintenance is not None and record.maintenance.by != OWNER:
                held = record.maintenance  # an operator's hold outlives a restart
            self._drop(service, record)
        record = _Record(
            request.service_name,
            request.instance_id,
            frozen_metadata(request.metadata),
            session,
            registered_at=wall,
            last_heartbeat=wall,
            renewed=now,
            deadline=now + self.policy.lease_ttl,
        )
        record.maintenance = held
        self._insert(service, record)
        self._push(record)
        if replaced:
            view = self._note(record, UNHEALTHY, EventType.REPLACED, "taken over by a new client")
        else:
            view = self._note(record, None, EventType.REGISTERED, "registered")
        return self._register_reply(Status.CREATED, view)

    def _register_again(
        self, record: _Record, request: RegisterRequest, now: float, wall: float
    ) -> RegisterReply:
        metadata = frozen_metadata(request.metadata)
        changed = record.metadata != metadata
        if changed:
            record.metadata = metadata
            record.size = 0
        self._renew(record, now, wall, "registered again")
        if changed:  # noted after the renewal, so the event shows the instance as it is now
            view = self._note(record, record.status, EventType.METADATA_UPDATED, "metadata updated")
            return self._register_reply(Status.OK, view)
        return self._register_reply(Status.OK, self._view(record))

    def heartbeat(self, request: LeaseRequest) -> LeaseReply:
        """Renew a lease (UNHEALTHY comes back ONLINE).

        Raises:
            ProtocolError: 404 unknown or OFFLINE instance (register again), 403 when
                another session owns it.
        """
        record = self._owned(request.service_name, request.instance_id, request.session_id, "renew")
        self._renew(record, self._clock(), self._wall(), "heartbeat")
        return LeaseReply(
            status=Status.OK,
            instance_status=record.status,
            lease_expires_at=datetime.fromtimestamp(
                record.last_heartbeat + self.policy.lease_ttl, UTC
            ),
        )

    def deregister(self, request: LeaseRequest) -> LeaseReply:
        """Take an instance OFFLINE at once. Idempotent: an unknown or already
        OFFLINE instance is a 200 too. Raises 403 when another session owns it."""
        try:
            record = self._owned(
                request.service_name, request.instance_id, request.session_id, "deregister"
            )
        except ProtocolError as error:
            if error.status == Status.NOT_FOUND:
                return LeaseReply(status=Status.OK, instance_status=OFFLINE)
            raise
        self._go_offline(record, self._clock(), EventType.DEREGISTERED, "deregistered")
        return LeaseReply(status=Status.OK, instance_status=OFFLINE)

    def set_maintenance(
        self,
        service_name: str,
        instance_id: str,
        maintenance: bool,
        *,
        reason: str = "",
        by: str,
        session_id: str | None = None,
    ) -> InstanceReply:
        """Put a live instance into maintenance, or take it out: `by` "owner" with the
        registering `session_id`, or an operator's name (no session). Entering again
        with another reason updates the reason; a change that changes nothing is a
        200 without an event.

        Raises:
            ProtocolError: 404 unknown or OFFLINE instance, 403 `not_owner` (another
                session), 403 `maintenance_held` (the owner may not end, nor change,
                an operator's maintenance).
        """
        if session_id is not None:
            record = self._owned(service_name, instance_id, session_id, "change the maintenance of")
        else:
            record = self._live(service_name, instance_id)
        current = record.maintenance
        held_by_operator = current is not None and current.by != OWNER
        if by == OWNER and held_by_operator:
            if maintenance:
                return InstanceReply(status=Status.OK, instance=self._view(record))
            raise ProtocolError(
                Status.FORBIDDEN,
                ErrorCode.MAINTENANCE_HELD,
                f"An operator put instance {instance_id!r} of service {service_name!r} into "
                "maintenance; only an operator can take it out (ipc-router maintenance ... off).",
                {"service_name": service_name, "instance_id": instance_id},
            )
        if maintenance:
            if current is not None and (current.by, current.reason) == (by, reason):
                return InstanceReply(status=Status.OK, instance=self._view(record))
            since = current.since if current is not None else self._wall()
            self._drain(record, _Maintenance(since, by, reason))
            view = self._note(record, record.status, EventType.MAINTENANCE_ON,
                              f"into maintenance by {by}", event_reason=reason or None)  # fmt: skip
        else:
            if current is None:
                return InstanceReply(status=Status.OK, instance=self._view(record))
            self._drain(record, None)
            view = self._note(record, record.status, EventType.MAINTENANCE_OFF,
                              f"out of maintenance by {by}", event_reason=reason or None)  # fmt: skip
        return InstanceReply(status=Status.OK, instance=view)

    def remove(self, service_name: str, instance_id: str, *, by: str) -> InstanceReply:
        """An operator's deregistration: OFFLINE now (the event's reason is "admin"),
        and its client's next heartbeat is told that an operator removed it (404
        `instance_removed`), so that it does not register again by itself. Idempotent
        for an instance already OFFLINE.

        Raises:
            ProtocolError: 404 when the registry holds no such instance.
        """
        service = self._services.get(service_name)
        record = service.instances.get(instance_id) if service is not None else None
        if record is None:
            raise _no_instance(service_name, instance_id)
        if record.status is not OFFLINE:
            record.removed_by = by
            self._go_offline(record, self._clock(), EventType.DEREGISTERED,
                             f"removed by {by}", event_reason="admin")  # fmt: skip
        return InstanceReply(status=Status.OK, instance=self._view(record))

    def expire(self, limit: int | None = None) -> bool:
        """Apply the lease transitions that are due now, at most `limit` of them (a
        caller that stores each batch keeps every batch small); True when more are
        due."""
        now = self._clock()
        heap = self._deadlines
        left = limit if limit is not None else -1
        while heap and heap[0][0] <= now:
            if left == 0:
                return True
            _, _, generation, record = heapq.heappop(heap)
            if generation != record.generation:
                continue  # superseded entry
            if record.deadline > now:
                self._push(record)  # renewed since this entry was pushed
                continue
            self._advance(record, now)
            left -= 1
        return False

    # -- replication ----------------------------------------------------------------

    def apply(self, revision: int, key: tuple[str, str], stored: StoredInstance | None) -> None:
        """Make the state match one stream entry at `revision` (a standby following the
        leader, or any router loading the stream): the instance as stored, or gone
        (None). No events and no lease deadlines: those are the leader's."""
        service_name, instance_id = key
        service = self._services.get(service_name)
        record = service.instances.get(instance_id) if service is not None else None
        if service is not None:
            service.revision = revision
            service.version += 1
        if record is not None:
            assert service is not None
            self._drop(service, record)
            if stored is None and not service.instances:
                self._remove_service(service_name, service)
        if stored is not None:
            if service is None:
                service = self._add_service(service_name)
                service.revision = revision
            record = _Record(
                stored.service_name,
                stored.instance_id,
                frozen_metadata(stored.metadata),
                stored.session_hash,
                status=stored.status,
                registered_at=stored.registered_at,
                last_heartbeat=stored.last_heartbeat,
                renewed=self._clock(),
                deadline=math.inf,
                offline_at=stored.offline_at,
            )
            held = stored.maintenance
            if held is not None and stored.status is not OFFLINE:
                record.maintenance = _Maintenance(held.since, held.by, held.reason)
            record.removed_by = stored.removed_by
            self._insert(service, record)
        self.revision = revision

    def skip_to(self, revision: int) -> None:
        """A stream entry that holds no instance (a term marker) took `revision`."""
        self.revision = revision

    def grant_leases(self) -> None:
        """Give every instance a lease from now on, as a new leader must (deadlines are
        not replicated): ONLINE ones a full TTL, UNHEALTHY ones their `offline_after`,
        OFFLINE ones what is left of their retention by the stored time. The first two
        are spread over a further half TTL, in the order of the records: instances
        whose clients are gone (all of them, after every router restarted) then expire
        over that time rather than in one moment."""
        now, wall = self._clock(), self._wall()
        policy = self.policy
        self._deadlines.clear()
        spread = policy.lease_ttl / 2 / max(1, self.live)
        position = 0
        for service in self._services.values():
            for record in service.instances.values():
                record.generation += 1
                if record.status is ONLINE:
                    position += 1
                    record.renewed = now + position * spread
                    record.deadline = record.renewed + policy.lease_ttl
                elif record.status is UNHEALTHY:
                    position += 1
                    record.renewed = now + position * spread - policy.lease_ttl
                    record.deadline = now + position * spread + policy.offline_after
                else:
                    offline_at = record.offline_at if record.offline_at is not None else wall
                    left = offline_at + policy.offline_retention - wall
                    record.deadline = now + max(0.0, left)
                self._deadlines.append(
                    (record.deadline, next(self._sequence), record.generation, record)
                )
        heapq.heapify(self._deadlines)

    @property
    def offline(self) -> int:
        """OFFLINE records held."""
        return len(self._offline)

    @property
    def services(self) -> int:
        """How many services the registry holds."""
        return len(self._services)

    def take_transitions(self) -> list[Transition]:
        """The changes since the last call, in revision order."""
        transitions, self.transitions = self.transitions, []
        return transitions

    def service_counts(
        self, limit: int
    ) -> tuple[
        list[tuple[str, dict[InstanceStatus, int], dict[InstanceStatus, int]]],
        tuple[dict[InstanceStatus, int], dict[InstanceStatus, int]] | None,
        int,
    ]:
        """Instance counts of the first `limit` services by name (by status, and in
        maintenance by status); the counts of the others summed, when there are any;
        and how many those are. Costs the `limit` services, not the registry."""
        names = self._names()
        services = self._services
        shown = [
            (name, dict(services[name].counts), dict(services[name].drained))
            for name in names[:limit]
        ]
        folded = len(names) - len(shown)
        if not folded:
            return shown, None, 0
        rest = {status: count for status, count in self.instances_in.items() if count}
        drained = {status: count for status, count in self.drained_in.items() if count}
        for _, counts, in_maintenance in shown:
            for status, count in counts.items():
                rest[status] -= count
            for status, count in in_maintenance.items():
                drained[status] -= count
        return shown, (rest, drained), folded

    def next_deadline(self) -> float | None:
        """Monotonic time of the earliest pending transition, if any."""
        return self._deadlines[0][0] if self._deadlines else None

    # -- queries -----------------------------------------------------------------

    def list_stamp(self) -> tuple[str, int]:
        """Changes whenever any service list page could: every change bumps the
        revision."""
        return (self.epoch, self.revision)

    def service_stamp(self, service_name: str) -> tuple[str, int, int]:
        """Changes whenever a page of this service could, heartbeats included."""
        service = self._services.get(service_name)
        return (self.epoch, service.serial, service.version) if service else (self.epoch, -1, -1)

    def list_services(
        self, request: ListServicesRequest | None = None, *, max_bytes: int | None = None
    ) -> ServiceList:
        """A page of services sorted by name, with instance counts per status. With a
        `status`, only services that have instances in that status, counted by it.
        A page looks at no more than `SCAN_BUDGET` services: it may hold fewer than
        `limit` (even none) and still have a `next_cursor`. `max_bytes` bounds the
        page's encoded size, as for `get_service`."""
        request = request or ListServicesRequest()
        status = request.status
        names = self._names()
        start = 0
        if request.cursor is not None:
            start = bisect.bisect_right(names, self._resume_after(request.cursor))
        page: list[ServiceSummary] = []
        next_cursor = None
        services = self._services
        budget = max(max_bytes, 0) if max_bytes is not None else None
        end = min(len(names), start + SCAN_BUDGET)
        for index in range(start, end):
            name = names[index]
            service = services[name]
            count = service.counts.get(status, 0) if status is not None else len(service.instances)
            if not count:
                continue
            if len(page) == request.limit:
                next_cursor = self._cursor(page[-1].service_name)
                break
            if budget is not None:
                budget -= _SUMMARY_BYTES + len(name)
                if budget < 0 and page:  # (a page always holds at least one service)
                    next_cursor = self._cursor(page[-1].service_name)
                    break
            page.append(
                ServiceSummary(
                    service_name=name,
                    instance_count=count,
                    status_counts=dict(service.counts),
                    in_maintenance=sum(service.drained.values()),
                )
            )
        else:
            if end < len(names):
                next_cursor = self._cursor(names[end - 1])
        total = len(names) if status is None else self._services_in.get(status, 0)
        return ServiceList(
            services=page,
            total=total,
            next_cursor=next_cursor,
            epoch=self.epoch,
            revision=self.revision,
        )

    def get_service(
        self,
        request: GetServiceRequest,
        *,
        missing_ok: bool = False,
        max_bytes: int | None = None,
    ) -> ServiceDetail:
        """A page of one service's instances sorted by id, filtered by status and
        metadata. `max_bytes` bounds the page's encoded size (a NATS reply must fit
        in the server's max payload): the page then ends early, with a cursor. As for
        `list_services`, a page looks at no more than `SCAN_BUDGET` instances.

        Raises:
            ProtocolError: 404 when the registry holds no instance of that service
                (unless `missing_ok`: then an empty page).
        """
        name = request.service_name
        service = self._services.get(name)
        if service is None:
            if not missing_ok:
                raise ProtocolError(
                    Status.NOT_FOUND,
                    ErrorCode.SERVICE_NOT_FOUND,
                    f"No service named {name!r} is registered. "
                    "List the registered services at /api/v1/admin/services.",
                    {"service_name": name},
                )
            ids: list[str] = []
            instances: dict[str, _Record] = {}
        else:
            ids, instances = service.sorted_ids(), service.instances
        start = 0
        if request.cursor is not None:
            start = bisect.bisect_right(ids, self._resume_after(request.cursor))
        page: list[Instance] = []
        next_cursor = None
        budget = max(max_bytes, 0) if max_bytes is not None else None
        status, wanted = request.status, request.metadata
        drained = request.include_maintenance
        if drained is None:
            drained = status is not ONLINE  # (the ONLINE view is discovery's)
        end = min(len(ids), start + SCAN_BUDGET)
        for index in range(start, end):
            record = instances[ids[index]]
            if status is not None and record.status is not status:
                continue
            if not drained and record.maintenance is not None:
                continue
            if wanted and not _metadata_matches(record.metadata, wanted):
                continue
            if len(page) == request.limit:
                next_cursor = self._cursor(page[-1].instance_id)
                break
            if budget is not None:
                budget -= _record_size(record)
                if budget < 0 and page:  # (a page always holds at least one instance)
                    next_cursor = self._cursor(page[-1].instance_id)
                    break
            page.append(self._view(record))
        else:
            if end < len(ids):
                next_cursor = self._cursor(ids[end - 1])
        return ServiceDetail(
            service_name=name,
            instances=page,
            next_cursor=next_cursor,
            epoch=self.epoch,
            revision=self.revision,
            service_revision=service.revision if service else self._emptied.get(name, 0),
            router_uptime=round(self._clock() - self._started, 3),
            lease_ttl=self.policy.lease_ttl,
        )

    # -- internals ---------------------------------------------------------------

    def _owned(self, service_name: str, instance_id: str, session_id: str, action: str) -> _Record:
        service = self._services.get(service_name)
        record = service.instances.get(instance_id) if service else None
        if record is not None and record.status is OFFLINE and record.removed_by is not None:
            raise ProtocolError(
                Status.NOT_FOUND,
                ErrorCode.INSTANCE_REMOVED,
                f"An operator ({record.removed_by}) removed instance {instance_id!r} of "
                f"service {service_name!r}; it is not renewed. Register it again to come back.",
                {"service_name": service_name, "instance_id": instance_id,
                 "removed_by": record.removed_by},
            )  # fmt: skip
        if record is None or record.status is OFFLINE:
            raise ProtocolError(
                Status.NOT_FOUND,
                ErrorCode.INSTANCE_NOT_FOUND,
                f"Instance {instance_id!r} of service {service_name!r} is not "
                "registered (the router restarted or its lease ran out); register it again.",
                {"service_name": service_name, "instance_id": instance_id},
            )
        if not _same(session_hash(session_id), record):
            raise ProtocolError(
                Status.FORBIDDEN,
                ErrorCode.NOT_OWNER,
                f"Only the client that registered instance {instance_id!r} may {action} it.",
                {"service_name": service_name, "instance_id": instance_id},
            )
        return record

    def _live(self, service_name: str, instance_id: str) -> _Record:
        service = self._services.get(service_name)
        record = service.instances.get(instance_id) if service else None
        if record is None or record.status is OFFLINE:
            raise _no_instance(service_name, instance_id)
        return record

    def _drain(self, record: _Record, maintenance: _Maintenance | None) -> None:
        """Set or clear a live record's maintenance, keeping the counts."""
        service = self._services[record.service_name]
        if (record.maintenance is None) != (maintenance is None):
            self._count_drained(service, record.status, 1 if maintenance is not None else -1)
        record.maintenance = maintenance
        record.size = 0

    def _check_room(self, service: _Service | None, request: RegisterRequest) -> None:
        limits = self.limits
        live_in_service = len(service.instances) - service.counts.get(OFFLINE, 0) if service else 0
        if live_in_service >= limits.max_instances_per_service:
            raise ProtocolError(
                Status.INSUFFICIENT_STORAGE,
                ErrorCode.SERVICE_FULL,
                f"Service {request.service_name!r} already has "
                f"{limits.max_instances_per_service} live instances, the most one service may "
                "have on this router. Deregister unused instances or raise "
                "--max-instances-per-service.",
                {"service_name": request.service_name, "limit": limits.max_instances_per_service},
            )
        if self.live >= limits.max_instances:
            raise ProtocolError(
                Status.INSUFFICIENT_STORAGE,
                ErrorCode.REGISTRY_FULL,
                f"The registry holds {limits.max_instances} live instances, the most this router "
                "is configured for. Deregister unused instances or raise --max-instances.",
                {"limit": limits.max_instances},
            )

    def _set_status(self, record: _Record, status: InstanceStatus) -> None:
        if status is OFFLINE:
            self.live -= 1
        service = self._services[record.service_name]
        self._count(service, record.status, -1, record.maintenance is not None)
        if status is OFFLINE:
            record.maintenance = None  # (an OFFLINE instance takes no traffic anyway)
            record.size = 0
        self._count(service, status, +1, record.maintenance is not None)
        record.status = status

    def _count(
        self, service: _Service, status: InstanceStatus, delta: int, drained: bool = False
    ) -> None:
        self.instances_in[status] = self.instances_in.get(status, 0) + delta
        if service.count(status, delta):
            self._services_in[status] = self._services_in.get(status, 0) + delta
        if drained:
            self._count_drained(service, status, delta)

    def _count_drained(self, service: _Service, status: InstanceStatus, delta: int) -> None:
        left = service.drained.get(status, 0) + delta
        if left:
            service.drained[status] = left
        else:
            del service.drained[status]
        self.drained_in[status] = self.drained_in.get(status, 0) + delta

    def _renew(self, record: _Record, now: float, wall: float, reason: str) -> None:
        self._services[record.service_name].version += 1
        record.renewed = now
        record.last_heartbeat = wall
        record.deadline = now + self.policy.lease_ttl
        if record.status is UNHEALTHY:
            self._set_status(record, ONLINE)
            record.generation += 1
            self._push(record)
            self._note(record, UNHEALTHY, EventType.ONLINE, f"{reason}: back online")

    def _advance(self, record: _Record, now: float) -> None:
        policy = self.policy
        if record.status is ONLINE:
            self._set_status(record, UNHEALTHY)
            record.deadline = record.renewed + policy.lease_ttl + policy.offline_after
            self._push(record)
            self._note(
                record, ONLINE, EventType.UNHEALTHY, f"no heartbeat for {policy.lease_ttl:g} s"
            )
        elif record.status is UNHEALTHY:
            silent = policy.lease_ttl + policy.offline_after
            # From when it was due, so a late tick does not extend the retention.
            self._go_offline(
                record, record.deadline, EventType.EXPIRED, f"no heartbeat for {silent:g} s"
            )
        else:
            self._forget(record, "offline retention ended")

    def _forget(self, record: _Record, reason: str) -> None:
        """Remove an OFFLINE record for good."""
        self._note(record, OFFLINE, EventType.REMOVED, reason)
        service = self._services[record.service_name]
        self._drop(service, record)
        if not service.instances:
            self._remove_service(record.service_name, service)

    def _insert(self, service: _Service, record: _Record) -> None:
        """Put a new record in every structure but the heap (`_drop` undoes it)."""
        service.add(record)
        self._count(service, record.status, +1, record.maintenance is not None)
        if record.status is OFFLINE:
            self._offline[record] = None
        else:
            self.live += 1

    def _drop(self, service: _Service, record: _Record) -> None:
        """Take a record out of every structure (its heap entry goes stale)."""
        record.generation = -1
        if record.status is OFFLINE:
            del self._offline[record]
        else:
            self.live -= 1
        service.remove(record)
        self._count(service, record.status, -1, record.maintenance is not None)

    def _go_offline(
        self,
        record: _Record,
        since: float,
        kind: EventType,
        reason: str,
        event_reason: str | None = None,
    ) -> None:
        old = record.status
        record.offline_at = self._wall() - (self._clock() - since)
        self._set_status(record, OFFLINE)
        self._offline[record] = None
        while self.offline > self.limits.max_instances:
            # Register/deregister churn must not hold memory without bound: forget the
            # oldest OFFLINE record before its retention ends.
            self._forget(next(iter(self._offline)), "forgotten early: too many OFFLINE records")
        record.deadline = since + self.policy.offline_retention
        record.generation += 1
        self._push(record)
        self._note(record, old, kind, reason, event_reason)

    def _add_service(self, name: str) -> _Service:
        service = _Service(next(self._sequence), self._emptied.pop(name, 0))
        self._services[name] = service
        if self._sorted_names is not None:
            bisect.insort(self._sorted_names, name)
        return service

    def _remove_service(self, name: str, service: _Service) -> None:
        del self._services[name]
        if self._sorted_names is not None:
            del self._sorted_names[bisect.bisect_left(self._sorted_names, name)]
        self._emptied[name] = service.revision
        if len(self._emptied) > _EMPTIED_KEPT:
            self._emptied.popitem(last=False)

    def _names(self) -> list[str]:
        if self._sorted_names is None:
            self._sorted_names = sorted(self._services)
        return self._sorted_names

    def _push(self, record: _Record) -> None:
        heap = self._deadlines
        heapq.heappush(heap, (record.deadline, next(self._sequence), record.generation, record))
        if len(heap) > 2 * (self.live + self.offline) + _HEAP_SLACK:
            # Entries of renewed, replaced or forgotten records are skipped when they
            # come up, but until then they hold their record: under churn they must
            # not pile up. (In place: `expire` holds the list.)
            heap[:] = [entry for entry in heap if entry[2] == entry[3].generation]
            heapq.heapify(heap)

    def _note(
        self,
        record: _Record,
        old: InstanceStatus | None,
        kind: EventType,
        reason: str,
        event_reason: str | None = None,
    ) -> Instance:
        """Record a change: bump the revision, queue its event; returns the view."""
        self.revision += 1
        service = self._services[record.service_name]
        event = RegistryEvent(
            epoch=self.epoch,
            revision=self.revision,
            previous_revision=service.revision,
            type=kind,
            instance=self._view(record),
            reason=event_reason,
        )
        service.revision = self.revision
        service.version += 1
        if kind is EventType.REMOVED:
            self.transitions.append(Transition(event, old, None, reason, None))
        else:
            stored = record.stored() if self._keep_stored else None
            self.transitions.append(Transition(event, old, record.status, reason, stored))
        return event.instance

    def _cursor(self, last_key: str) -> str:
        return encode_cursor(last_key, self._cursor_secret)

    def _resume_after(self, cursor: str) -> str:
        return decode_cursor(cursor, self._cursor_secret)

    def _view(self, record: _Record) -> Instance:
        """The wire view (built afresh: keeping one per record would cost ~200 bytes
        of memory per instance for a small saving on queries)."""
        last = datetime.fromtimestamp(record.last_heartbeat, UTC)
        maintenance = record.maintenance
        return Instance(
            service_name=record.service_name,
            instance_id=record.instance_id,
            status=record.status,
            metadata=record.metadata,
            registered_at=datetime.fromtimestamp(record.registered_at, UTC),
            last_heartbeat=last,
            lease_expires_at=None if record.status is OFFLINE else last + self._ttl_delta,
            maintenance=(
                None
                if maintenance is None
                else Maintenance(
                    since=datetime.fromtimestamp(maintenance.since, UTC),
                    by=maintenance.by,
                    reason=maintenance.reason,
                )
            ),
        )

    def _register_reply(self, status: Status, view: Instance) -> RegisterReply:
        return RegisterReply(
            status=status,
            instance=view,
            heartbeat_interval=self.policy.heartbeat_interval,
            lease_ttl=self.policy.lease_ttl,
        )


def session_hash(session_id: str | None) -> bytes | None:
    """What the registry keeps of a session id (see `StoredInstance.session_hash`)."""
    if session_id is None:
        return None
    return hashlib.sha256(session_id.encode()).digest()[:16]


def _same(session: bytes | None, record: _Record) -> bool:
    """Whether a request's session is the record's (no session matches nothing)."""
    return (
        session is not None
        and record.session_hash is not None
        and hmac.compare_digest(session, record.session_hash)
    )


class FrozenMetadata(dict[str, Any]):
    """Metadata as the registry stores it: a dict that refuses changes (nested maps
    are frozen too, arrays are tuples). Views share it with the stored record, so
    neither the sender of a request nor the holder of a view can change a record;
    msgspec encodes it as the map it is."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("registry metadata is read-only; copy it with dict(...) to change it")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only
    __ior__ = _read_only


def frozen_metadata(metadata: dict[str, Any]) -> FrozenMetadata:
    """A deep, read-only copy of validated metadata (maps, arrays and scalars)."""
    for value in metadata.values():
        if type(value) in _CONTAINERS:
            return FrozenMetadata({key: _frozen(item) for key, item in metadata.items()})
    return FrozenMetadata(metadata)  # flat, the common case


_CONTAINERS = frozenset({dict, list, tuple, FrozenMetadata})


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return frozen_metadata(value)
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item) for item in value)
    return value


def _record_size(record: _Record) -> int:
    """Upper bound of the record's encoded view size (metadata measured once)."""
    if not record.size:
        size = _VIEW_BYTES + len(record.instance_id) + len(encode_msgpack(record.metadata))
        if record.maintenance is not None:
            # (at most 4 bytes per character of UTF-8, plus keys and a timestamp)
            size += _MAINTENANCE_BYTES + 4 * (len(record.maintenance.reason) + len(record.maintenance.by))
        record.size = size
    return record.size


def _no_instance(service_name: str, instance_id: str) -> ProtocolError:
    return ProtocolError(
        Status.NOT_FOUND,
        ErrorCode.INSTANCE_NOT_FOUND,
        f"The registry holds no live instance {instance_id!r} of service {service_name!r} "
        f"(see ipc-router services {service_name}).",
        {"service_name": service_name, "instance_id": instance_id},
    )


def _metadata_matches(metadata: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Equal values of the same JSON type; a string also matches a number, bool or nil
    whose JSON text it is (`?meta.replicas=3` finds `{"replicas": 3}`)."""
    for key, value in wanted.items():
        if key not in metadata:
            return False
        actual = metadata[key]
        if type(actual) is type(value) and actual == value:
            continue
        if (
            isinstance(value, str)
            and not isinstance(actual, (str, dict, tuple))  # (stored arrays are tuples)
            and _json_text(actual) == value
        ):
            continue
        return False
    return True


def _json_text(value: Any) -> str:
    return encode_json(value).decode()

