"""ipc-router client SDK: register service instances with the router over NATS."""

from protocol import EventType, Instance, InstanceStatus, RegistryEvent, ServiceSummary
from sdk.cache import ServiceCache
from sdk.client import Registration, ServiceClient
from sdk.connection import NatsAuth
from sdk.errors import (
    ConflictError,
    InvalidRequestError,
    RegistryError,
    RouterError,
    RouterTimeoutError,
    RouterUnavailableError,
)
from sdk.retry import Backoff
from sdk.running import run

__all__ = [
    "Backoff",
    "ConflictError",
    "EventType",
    "Instance",
    "InstanceStatus",
    "InvalidRequestError",
    "NatsAuth",
    "Registration",
    "RegistryError",
    "RegistryEvent",
    "RouterError",
    "RouterTimeoutError",
    "RouterUnavailableError",
    "ServiceCache",
    "ServiceClient",
    "ServiceSummary",
    "run",
]
