"""ipc-router client SDK: register service instances with the router over NATS."""

from protocol import Instance, InstanceStatus
from sdk.client import Registration, ServiceClient
from sdk.errors import (
    ConflictError,
    InvalidRequestError,
    RegistryError,
    RouterError,
    RouterTimeoutError,
    RouterUnavailableError,
)
from sdk.retry import Backoff

__all__ = [
    "Backoff",
    "ConflictError",
    "Instance",
    "InstanceStatus",
    "InvalidRequestError",
    "Registration",
    "RegistryError",
    "RouterError",
    "RouterTimeoutError",
    "RouterUnavailableError",
    "ServiceClient",
]
