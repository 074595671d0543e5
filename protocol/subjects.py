"""NATS subject names: the one place they are spelled."""

from __future__ import annotations

SUBJECT_PREFIX = "ipc.service"
REGISTER_SUBJECT = f"{SUBJECT_PREFIX}.register"
"""Request/reply subject on which service instances register."""
HEARTBEAT_SUBJECT = f"{SUBJECT_PREFIX}.heartbeat"
"""Request/reply subject on which instances renew their lease."""
DEREGISTER_SUBJECT = f"{SUBJECT_PREFIX}.deregister"
"""Request/reply subject on which instances leave."""
MAINTENANCE_SUBJECT = f"{SUBJECT_PREFIX}.maintenance"
"""Request/reply subject on which an instance's client puts it into maintenance or
takes it out."""

ROUTER_QUEUE_GROUP = "ipc-router"
"""Queue group of the routers' request subscriptions: each request reaches one
router. Every router answers queries from its view of the shared registry; only the
leader subscribes to registrations, heartbeats and deregistrations."""
ROUTER_ADMIN_SUBJECT = "ipc.router.admin"
"""Request/reply among routers only: an operator's write, taken by a standby's admin
API, signed, for the leader to apply."""
ROUTER_PRESENCE_SUBJECT = "ipc.router.presence"
"""Request/reply among routers only: who else serves this NATS system, and how. A
router keeping its registry in memory refuses to start beside another router."""
LIST_SUBJECT = f"{SUBJECT_PREFIX}.list"
"""Request/reply: all services with counts per status, paginated."""
GET_SUBJECT = f"{SUBJECT_PREFIX}.get"
"""Request/reply: one service's instances, filtered and paginated."""

EVENTS_PREFIX = "ipc.registry.events"
EVENTS_WILDCARD = f"{EVENTS_PREFIX}.*"
"""Subscribe here to see every service's changes."""


def events_subject(service_name: str) -> str:
    """Subject on which changes to `service_name` are published (one token: service
    names are restricted to subject-safe characters)."""
    return f"{EVENTS_PREFIX}.{service_name}"
