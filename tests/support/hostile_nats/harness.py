"""The harness of the hostile-input tests: it sends requests to a real router, checks
every reply against the oracle, and checks that the router is unharmed.

After every example (`Harness.assert_still_serving`): the registry actor and the NATS
gateway are the very objects the test started with (no crash, no restart), both are
alive, the registry's revision and service total match the model, no request was
dropped that should not have been, and a fresh valid registration still gets 201.
"""

from __future__ import annotations

import itertools
import os
import secrets
from typing import Any

from hypothesis import HealthCheck, currently_in_test_context, event, settings
from nats.aio.client import Client as NatsClient

from actors.app import Router
from protocol import REGISTER_SUBJECT, ListServicesRequest
from tests.support.actors import gateway_stats, incarnation
from tests.support.hostile_nats.oracle import SUBJECTS, RegistryModel, check_reply
from tests.support.hostile_nats.payloads import pack
from tests.support.nats_requests import REQUEST_TIMEOUT, nats_request, show

PROBE_SERVICE = "zz-probe"
"""Service of the registrations that prove the router still serves (no strategy
draws this name)."""

EXAMPLES_SCALE = float(os.environ.get("HOSTILE_NATS_EXAMPLES_SCALE", "1"))
"""Multiplies every test's example count (`HOSTILE_NATS_EXAMPLES_SCALE=20`: a long hunt)."""


def hostile_settings(max_examples: int) -> settings:
    """Bounded examples, no deadline (a real network is in the loop), no example
    database; the router fixture is deliberately shared by all examples of a test."""
    return settings(
        max_examples=max(1, round(max_examples * EXAMPLES_SCALE)),
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


class Harness:
    """Sends requests, checks every reply against the oracle, and checks that the
    router is unharmed."""

    def __init__(self, router: Router, nc: NatsClient, dropped: int) -> None:
        self.router = router
        self.nc = nc
        self.model = RegistryModel()
        self.registry_actor = incarnation(router.registry.ref)
        self.gateway_actor = incarnation(router.nats_gateway.ref)
        self.expected_dropped = dropped
        self._probes = itertools.count()

    @classmethod
    async def start(cls, router: Router, nc: NatsClient) -> Harness:
        return cls(router, nc, (await gateway_stats(router.nats_gateway)).dropped_without_reply)

    async def dropped_without_reply(self) -> int:
        return (await gateway_stats(self.router.nats_gateway)).dropped_without_reply

    async def request(
        self, subject: str, payload: bytes, *, timeout: float = REQUEST_TIMEOUT
    ) -> dict[str, Any]:
        """Request/reply; the decoded reply (a test failure on silence)."""
        return await nats_request(self.nc, subject, payload, timeout=timeout)

    async def check(self, subject: str, payload: bytes, *, probe: bool = False) -> dict[str, Any]:
        """Send one request; its reply and the registry's revision are as predicted."""
        expect = self.model.predict(subject, payload)
        reply = await self.request(subject, payload)
        check_reply(subject, payload, reply, expect, self.model)
        self.model.commit(subject, expect)
        if not probe and currently_in_test_context():
            # The mix of outcomes, for --hypothesis-show-statistics.
            outcome = str(reply["status"])
            if reply["status"] >= 400:
                error = reply["error"]
                where = str(error["details"].get("field", "")).split("[")[0].split(".")[:2]
                outcome += f" {error['code']} {'.'.join(where)}"
            event(f"{subject.rsplit('.', 1)[1]} {outcome.strip()}")
        await self.assert_registry_matches_model(f"after {subject} {show(payload)}")
        return reply

    async def check_everywhere(self, payload: bytes) -> list[dict[str, Any]]:
        """`check` the payload on every subject, in the order of `SUBJECTS`."""
        return [await self.check(subject, payload) for subject in SUBJECTS]

    async def assert_registry_matches_model(self, context: str = "") -> None:
        """Revision and service total as the model says: rejected requests changed
        nothing, accepted ones exactly what they should."""
        snapshot = await self.router.registry.list_services(ListServicesRequest(limit=1))
        assert snapshot.revision == self.model.revision, f"registry revision moved {context}"
        assert snapshot.total == len(self.model.counts()), f"service total changed {context}"

    async def assert_still_serving(self) -> None:
        """No crash, no restart, nothing dropped, and a valid registration gets 201."""
        registry = self.router.registry
        assert incarnation(registry.ref) is self.registry_actor, "the registry actor was restarted"
        assert registry.alive, f"the registry actor is dead: {self.registry_actor.failure!r}"
        gateway = self.router.nats_gateway
        assert incarnation(gateway.ref) is self.gateway_actor, "the NATS gateway was restarted"
        assert await gateway.connected(), "the NATS gateway is down"
        assert await self.dropped_without_reply() == self.expected_dropped
        await self.assert_registry_matches_model()
        probe = pack(
            {
                "service_name": PROBE_SERVICE,
                "instance_id": f"probe-{next(self._probes)}",
                "session_id": secrets.token_hex(16),
                "metadata": {"probe": True},
            }
        )
        reply = await self.check(REGISTER_SUBJECT, probe, probe=True)
        assert reply["status"] == 201

    async def sync(self) -> None:
        """A request on every subject: once all are answered, every message published
        before them on that subject has been handled (one subscription handles its
        messages in order)."""
        for subject in SUBJECTS:
            await self.check(subject, b"")
