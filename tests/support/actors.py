"""Reaching behind an `ActorRef`: tests inject faults into, and compare, the actor a
ref points at."""

from __future__ import annotations

from actors.actor import Actor, ActorRef
from actors.nats_gateway import NatsGatewayClient, NatsGatewayStats


def bound_actor(ref: ActorRef) -> Actor | None:
    """The actor `ref` points at now; None between incarnations (or before the first)."""
    return ref._actor


def incarnation(ref: ActorRef) -> Actor:
    """The actor `ref` points at now, which must be running."""
    actor = bound_actor(ref)
    assert actor is not None, f"{ref.id} is not running"
    return actor


async def gateway_stats(gateway: NatsGatewayClient) -> NatsGatewayStats:
    """The NATS gateway's stats, which must be available."""
    stats = await gateway.stats()
    assert stats is not None, "the NATS gateway did not answer"
    return stats
