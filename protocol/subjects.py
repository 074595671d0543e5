"""NATS subject names: the one place they are spelled."""

from __future__ import annotations

SUBJECT_PREFIX = "ipc.service"
REGISTER_SUBJECT = f"{SUBJECT_PREFIX}.register"
"""Request/reply subject on which service instances register."""

ROUTER_QUEUE_GROUP = "ipc-router"
"""Queue group shared by every router, so several routers can split the load."""
