"""The RegistryActor: the single owner of registry state.

Every mutation and query is a message in its mailbox, handled one at a time, so
concurrent registrations need no locks. `handle` does no I/O: it is pure state
work plus a log line. The functions at the bottom hide the message plumbing.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from actors.actor import Actor
from actors.supervisor import ActorRef
from protocol import (
    ErrorCode,
    Instance,
    InstanceStatus,
    ProtocolError,
    RegisterRequest,
    ServiceDetail,
    ServiceList,
    ServiceSummary,
    Status,
)

__all__ = [
    "GetService",
    "ListServices",
    "Register",
    "RegisterOutcome",
    "RegistryActor",
    "RegistryState",
    "get_service",
    "list_services",
    "register",
]

log = structlog.get_logger(component="registry")


@dataclass(frozen=True, slots=True)
class Register:
    """Register (or idempotently re-register) one instance."""

    request: RegisterRequest


@dataclass(frozen=True, slots=True)
class ListServices:
    """List every service with its instance counts."""


@dataclass(frozen=True, slots=True)
class GetService:
    """One service with its instances."""

    service_name: str


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    """The registered instance, and whether this request created it."""

    instance: Instance
    created: bool

    @property
    def status(self) -> Status:
        """201 for a new registration, 200 for an idempotent repeat."""
        return Status.CREATED if self.created else Status.OK


class _Record:
    """An instance plus the session that owns it (None: anonymous)."""

    __slots__ = ("instance", "session_id")

    def __init__(self, instance: Instance, session_id: str | None) -> None:
        self.instance = instance
        self.session_id = session_id


class RegistryState:
    """Registry state and its transitions; no I/O, no concurrency concerns."""

    def __init__(self) -> None:
        self._services: dict[str, dict[str, _Record]] = {}

    def register(self, request: RegisterRequest) -> RegisterOutcome:
        """Apply a registration.

        A new (service, instance) pair is created (201). The same session registering
        again gets its record back (200), with the metadata replaced if it changed.
        Anything else that names a live instance is a conflict (409): another session,
        or any registration without a session, since that cannot prove ownership.
        """
        instances = self._services.setdefault(request.service_name, {})
        record = instances.get(request.instance_id)
        if record is None:
            instance = Instance(
                service_name=request.service_name,
                instance_id=request.instance_id,
                status=InstanceStatus.ONLINE,
                metadata=request.metadata,
                registered_at=datetime.now(UTC),
            )
            instances[request.instance_id] = _Record(instance, request.session_id)
            return RegisterOutcome(instance, created=True)
        if request.session_id is None or record.session_id != request.session_id:
            raise ProtocolError(
                Status.CONFLICT,
                ErrorCode.INSTANCE_CONFLICT,
                f"Instance {request.instance_id!r} of service {request.service_name!r} is "
                "already registered by another client. Use a different instance_id, or "
                "retry from the client that registered it.",
                {"existing": record.instance},
            )
        if record.instance.metadata != request.metadata:
            record.instance = _replace_metadata(record.instance, request.metadata)
        return RegisterOutcome(record.instance, created=False)

    def list_services(self) -> ServiceList:
        """Every service that has at least one instance, sorted by name."""
        services = [
            ServiceSummary(
                service_name=name,
                instance_count=len(instances),
                status_counts=dict(Counter(r.instance.status for r in instances.values())),
            )
            for name, instances in sorted(self._services.items())
            if instances
        ]
        return ServiceList(services=services, total=len(services))

    def get_service(self, service_name: str) -> ServiceDetail:
        """One service's instances, sorted by instance id.

        Raises:
            ProtocolError: 404 when no instance of that service is registered.
        """
        instances = self._services.get(service_name)
        if not instances:
            raise ProtocolError(
                Status.NOT_FOUND,
                ErrorCode.SERVICE_NOT_FOUND,
                f"No service named {service_name!r} is registered. "
                "List the registered services at /api/v1/admin/services.",
                {"service_name": service_name},
            )
        return ServiceDetail(
            service_name=service_name,
            instances=[instances[key].instance for key in sorted(instances)],
        )


def _replace_metadata(instance: Instance, metadata: dict[str, Any]) -> Instance:
    return Instance(
        service_name=instance.service_name,
        instance_id=instance.instance_id,
        status=instance.status,
        metadata=metadata,
        registered_at=instance.registered_at,
    )


class RegistryActor(Actor):
    """Owns a `RegistryState`; serializes every access through its mailbox."""

    caller_errors = (ProtocolError,)

    def __init__(self, *, mailbox_size: int = 0) -> None:
        super().__init__("registry", mailbox_size=mailbox_size)
        self.state = RegistryState()

    async def handle(self, message: Any) -> Any:
        if type(message) is Register:
            return self._register(message.request)
        if type(message) is GetService:
            return self.state.get_service(message.service_name)
        if type(message) is ListServices:
            return self.state.list_services()
        raise TypeError(f"registry cannot handle {type(message).__name__}")

    def _register(self, request: RegisterRequest) -> RegisterOutcome:
        try:
            outcome = self.state.register(request)
        except ProtocolError as error:
            log.info(
                "registration",
                service_name=request.service_name,
                instance_id=request.instance_id,
                outcome="conflict",
                status=int(error.status),
            )
            raise
        fields: dict[str, Any] = {}
        if isinstance(request.timestamp, (int, float)):
            fields["client_delay_ms"] = round((time.time() - request.timestamp) * 1000, 3)
        elif isinstance(request.timestamp, datetime):
            delay = datetime.now(UTC) - request.timestamp
            fields["client_delay_ms"] = round(delay.total_seconds() * 1000, 3)
        log.info(
            "registration",
            service_name=request.service_name,
            instance_id=request.instance_id,
            outcome="created" if outcome.created else "repeated",
            status=int(outcome.status),
            **fields,
        )
        return outcome


async def register(ref: ActorRef, request: RegisterRequest, timeout: float = 5.0) -> RegisterOutcome:
    """Register through the registry actor (raises `ProtocolError` 409 on conflict)."""
    outcome: RegisterOutcome = await ref.ask(Register(request), timeout)
    return outcome


async def list_services(ref: ActorRef, timeout: float = 5.0) -> ServiceList:
    """All services with their instance counts."""
    services: ServiceList = await ref.ask(ListServices(), timeout)
    return services


async def get_service(ref: ActorRef, service_name: str, timeout: float = 5.0) -> ServiceDetail:
    """One service's instances (raises `ProtocolError` 404 when unknown)."""
    detail: ServiceDetail = await ref.ask(GetService(service_name), timeout)
    return detail
