"""A local NATS cluster with JetStream for the tests (and the failover benchmark):
`actors.nats_cluster.NatsCluster`, which `make cluster` runs too."""

from __future__ import annotations

from actors.nats_cluster import NatsCluster

__all__ = ["NatsCluster"]
