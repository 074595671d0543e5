"""`ServiceCache.choose()` and the `InstanceChooser` behind it, without a router: the
cache is fed snapshots and events as the router would send them. The real thing over
NATS is in tests/integration/test_discovery.py."""

from __future__ import annotations

import random
import tracemalloc
from collections import Counter
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
import pytest

from actors.registry_state import _metadata_matches
from protocol import EventType, Instance, InstanceStatus, Maintenance, RegistryEvent, ServiceDetail
from sdk.cache import ServiceCache
from sdk.choice import MAX_PREFERENCES, InstanceChooser, Strategy, matches_preference, weight_of
from sdk.client import ServiceClient

pytestmark = pytest.mark.timeout(10)

EPOCH = "epoch-1"
DRAWS = 10_000


def instance(
    instance_id: str, status: InstanceStatus = InstanceStatus.ONLINE, **metadata: Any
) -> Instance:
    return Instance(
        service_name="orders",
        instance_id=instance_id,
        status=status,
        metadata=metadata,
        registered_at=datetime(2024, 1, 1, tzinfo=UTC),
    )


def in_maintenance(plain: Instance) -> Instance:
    drain = Maintenance(since=datetime(2024, 1, 1, tzinfo=UTC), by="owner", reason="draining")
    return msgspec.structs.replace(plain, maintenance=drain)


class Feed:
    """A `ServiceCache` with no router behind it, driven the way the router drives it:
    a first snapshot, then events in revision order."""

    def __init__(self, *instances: Instance, seed: int = 7) -> None:
        self.cache = ServiceCache(cast(ServiceClient, None), "orders", rng=random.Random(seed))
        self.revision = len(instances)
        self.cache._take(
            ServiceDetail(
                service_name="orders",
                instances=list(instances),
                epoch=EPOCH,
                revision=self.revision,
                service_revision=self.revision,
                router_uptime=60.0,
                lease_ttl=3.0,
            )
        )

    async def event(self, kind: EventType, changed: Instance) -> None:
        previous, self.revision = self.revision, self.revision + 1
        await self.cache._apply(
            RegistryEvent(
                epoch=EPOCH,
                revision=self.revision,
                previous_revision=previous,
                type=kind,
                instance=changed,
            )
        )

    async def add(self, instance_id: str, **metadata: Any) -> None:
        await self.event(EventType.REGISTERED, instance(instance_id, **metadata))

    async def remove(self, instance_id: str) -> None:
        await self.event(EventType.DEREGISTERED, instance(instance_id, InstanceStatus.OFFLINE))

    def ids(self, calls: int, **options: Any) -> list[str | None]:
        return [
            chosen.instance_id if (chosen := self.cache.choose(**options)) else None
            for _ in range(calls)
        ]

    def until(self, instance_id: str) -> None:
        """Round robin until `instance_id` was the one chosen last."""
        for _ in range(len(self.cache) + 1):
            chosen = self.cache.choose()
            if chosen is not None and chosen.instance_id == instance_id:
                return
        raise AssertionError(f"round robin never chose {instance_id}")


def rotation_of(ids: list[str], first: str) -> list[str]:
    start = ids.index(first)
    return ids[start:] + ids[:start]


# -- round robin ----------------------------------------------------------------------


async def test_round_robin_visits_every_instance_once_per_cycle_in_id_order() -> None:
    feed = Feed(instance("c"), instance("a"), instance("d"), instance("b"))
    picks = feed.ids(12)
    cycle = rotation_of(["a", "b", "c", "d"], cast(str, picks[0]))
    assert picks == cycle * 3


async def test_round_robin_starts_at_a_random_place_so_fresh_caches_spread_their_first_calls() -> (
    None
):
    ids = [f"i-{n:02}" for n in range(10)]
    firsts = {Feed(*map(instance, ids), seed=seed).ids(1)[0] for seed in range(40)}
    assert len(firsts) > 3


async def test_round_robin_goes_on_after_the_last_chosen_when_another_instance_is_removed() -> None:
    feed = Feed(*map(instance, "abcde"))
    feed.until("b")
    await feed.remove("c")
    assert feed.ids(8) == ["d", "e", "a", "b", "d", "e", "a", "b"]


async def test_round_robin_goes_on_after_the_last_chosen_when_that_one_is_removed() -> None:
    feed = Feed(*map(instance, "abcd"))
    feed.until("b")
    await feed.remove("b")
    assert feed.ids(4) == ["c", "d", "a", "c"]


async def test_round_robin_takes_an_added_instance_in_its_id_place() -> None:
    feed = Feed(*map(instance, "acd"))
    feed.until("a")
    await feed.add("b")
    assert feed.ids(5) == ["b", "c", "d", "a", "b"]


async def test_round_robin_survives_the_view_emptying_and_filling_again() -> None:
    feed = Feed(*map(instance, "ab"))
    feed.until("b")
    await feed.remove("a")
    await feed.remove("b")
    assert feed.ids(2) == [None, None]
    await feed.add("c")
    await feed.add("a")
    assert feed.ids(4) == ["c", "a", "c", "a"]


async def test_round_robin_after_the_last_instance_wraps_to_the_first() -> None:
    feed = Feed(*map(instance, "abc"))
    feed.until("c")
    await feed.remove("a")
    assert feed.ids(3) == ["b", "c", "b"]


# -- random and weighted --------------------------------------------------------------


async def test_random_is_uniform() -> None:
    feed = Feed(*map(instance, "abcd"))
    counts = Counter(feed.ids(DRAWS, strategy="random"))
    assert set(counts) == set("abcd")
    for count in counts.values():
        assert abs(count - DRAWS / 4) < DRAWS / 4 * 0.1


async def test_weighted_follows_the_weights() -> None:
    feed = Feed(instance("a", weight=1), instance("b", weight=3.0))
    counts = Counter(feed.ids(DRAWS, strategy="weighted"))
    assert abs(counts["b"] / DRAWS - 0.75) < 0.03


async def test_weighted_never_chooses_an_instance_of_weight_0() -> None:
    feed = Feed(instance("a", weight=0), instance("b", weight=2), instance("c", weight=0.0))
    assert set(feed.ids(1000, strategy="weighted")) == {"b"}


async def test_weighted_is_uniform_when_every_weight_is_0() -> None:
    feed = Feed(instance("a", weight=0), instance("b", weight=0))
    counts = Counter(feed.ids(DRAWS, strategy="weighted"))
    assert abs(counts["a"] / DRAWS - 0.5) < 0.03


async def test_missing_or_invalid_weights_count_as_1() -> None:
    feed = Feed(
        instance("a"),
        instance("b", weight="5"),
        instance("c", weight=True),
        instance("d", weight=-2),
        instance("e", weight=None),
        instance("f", weight=[3]),
        instance("g", weight=6),
    )
    counts = Counter(feed.ids(DRAWS * 2, strategy="weighted"))
    assert abs(counts["g"] / (DRAWS * 2) - 0.5) < 0.03
    for light in "abcdef":
        assert abs(counts[light] / (DRAWS * 2) - 1 / 12) < 0.02


def test_a_weight_is_a_finite_number_at_least_0() -> None:
    assert [weight_of(instance("x", weight=w)) for w in (2, 0.5, 0, 10**400, float("inf"))] == [
        2.0, 0.5, 0.0, 1.0, 1.0,
    ]  # fmt: skip


async def test_huge_weights_keep_their_ratio() -> None:
    feed = Feed(instance("a", weight=1e308), instance("b", weight=1e308), instance("c", weight=1))
    counts = Counter(feed.ids(DRAWS, strategy="weighted"))
    assert abs(counts["a"] / DRAWS - 0.5) < 0.03 and counts["c"] == 0


async def test_weighted_tables_follow_a_changed_view() -> None:
    feed = Feed(instance("a", weight=1), instance("b", weight=0))
    assert set(feed.ids(100, strategy="weighted")) == {"a"}
    await feed.event(EventType.METADATA_UPDATED, instance("b", weight=1000))
    assert Counter(feed.ids(DRAWS, strategy="weighted"))["b"] > DRAWS * 0.95


# -- preference -----------------------------------------------------------------------


async def test_prefer_chooses_only_matching_instances() -> None:
    feed = Feed(instance("a", zone="a"), instance("b", zone="b"), instance("c", zone="a"))
    for strategy in ("round_robin", "random", "weighted"):
        assert set(feed.ids(200, strategy=strategy, prefer={"zone": "a"})) == {"a", "c"}


async def test_prefer_falls_back_to_every_usable_instance_when_none_matches() -> None:
    feed = Feed(instance("a", zone="a"), instance("b", zone="b"))
    assert set(feed.ids(20, prefer={"zone": "z"})) == {"a", "b"}
    assert set(feed.ids(20, prefer={"zone": "a", "rack": 1})) == {"a", "b"}


async def test_round_robin_with_a_preference_cycles_within_the_matching_subset() -> None:
    feed = Feed(*(instance(name, zone="a" if name in "bdf" else "b") for name in "abcdef"))
    picks = feed.ids(6, prefer={"zone": "a"})
    assert picks == rotation_of(["b", "d", "f"], cast(str, picks[0])) * 2
    assert set(feed.ids(6)) == set("abcdef")


async def test_prefer_matches_as_the_router_filter_does() -> None:
    feed = Feed(
        instance("a", replicas=3, on=True), instance("b", replicas=3.0), instance("c", on=1)
    )
    assert set(feed.ids(20, prefer={"replicas": "3"})) == {"a"}
    assert set(feed.ids(20, prefer={"replicas": 3})) == {"a"}
    assert set(feed.ids(20, prefer={"replicas": 3.0})) == {"b"}
    # 1 == True in Python, but not in JSON: each preference has its own tables.
    assert set(feed.ids(20, prefer={"on": True})) == {"a"}
    assert set(feed.ids(20, prefer={"on": 1})) == {"c"}


@pytest.mark.parametrize(
    ("metadata", "wanted"),
    [
        ({"zone": "a"}, {"zone": "a"}),
        ({"zone": "a"}, {"zone": "b"}),
        ({"zone": "a"}, {"rack": "a"}),
        ({"n": 3}, {"n": "3"}),
        ({"n": 3}, {"n": 3.0}),
        ({"n": 3.5}, {"n": "3.5"}),
        ({"on": True}, {"on": "true"}),
        ({"on": True}, {"on": 1}),
        ({"x": None}, {"x": None}),
        ({"x": None}, {"x": "null"}),
        ({"x": "null"}, {"x": None}),
        ({"x": {"a": 1}}, {"x": '{"a":1}'}),
        ({"zone": "a", "n": 1}, {"zone": "a", "n": 1}),
        ({"zone": "a", "n": 1}, {"zone": "a", "n": 2}),
        ({}, {}),
    ],
)
def test_preference_matching_agrees_with_the_router_filter(
    metadata: dict[str, Any], wanted: dict[str, Any]
) -> None:
    assert matches_preference(metadata, wanted) == _metadata_matches(metadata, wanted)


async def test_more_preferences_than_are_kept_are_still_answered_right() -> None:
    feed = Feed(*(instance(f"i-{n:02}", slot=n) for n in range(MAX_PREFERENCES + 4)))
    for _ in range(2):
        for n in range(MAX_PREFERENCES + 4):
            assert feed.ids(2, prefer={"slot": n}) == [f"i-{n:02}"] * 2


# -- usable instances and the empty view ---------------------------------------------


async def test_an_instance_in_maintenance_is_never_chosen() -> None:
    feed = Feed(instance("a"), in_maintenance(instance("b")), instance("c"))
    for strategy in ("round_robin", "random", "weighted"):
        assert set(feed.ids(200, strategy=strategy)) == {"a", "c"}


def test_the_chooser_itself_skips_instances_in_maintenance_or_not_online() -> None:
    view = [
        instance("a"),
        in_maintenance(instance("b")),
        instance("c", InstanceStatus.UNHEALTHY),
        instance("d"),
    ]
    chooser = InstanceChooser(lambda: view, random.Random(1))
    for strategy in ("round_robin", "random", "weighted"):
        chosen = (chooser.choose(strategy) for _ in range(100))
        assert {i.instance_id if i else None for i in chosen} == {"a", "d"}


@pytest.mark.parametrize("strategy", ["round_robin", "random", "weighted"])
async def test_an_empty_view_gives_none(strategy: Strategy) -> None:
    feed = Feed()
    assert feed.cache.choose(strategy=strategy) is None
    assert feed.cache.choose(strategy=strategy, prefer={"zone": "a"}) is None


async def test_an_unknown_strategy_is_a_value_error() -> None:
    feed = Feed(instance("a"))
    with pytest.raises(ValueError, match="unknown strategy 'fastest'"):
        feed.cache.choose(strategy="fastest")  # type: ignore[arg-type]


# -- cost -----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["round_robin", "random", "weighted"])
@pytest.mark.parametrize("prefer", [None, {"zone": "a"}], ids=["everyone", "preferred"])
async def test_repeated_choices_leave_no_memory_behind(
    strategy: Strategy, prefer: dict[str, Any] | None
) -> None:
    feed = Feed(*(instance(f"i-{n:03}", zone="ab"[n % 2], weight=n % 5) for n in range(100)))
    choose = feed.cache.choose
    choose(strategy=strategy, prefer=prefer)  # (builds the tables)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(DRAWS):
            choose(strategy=strategy, prefer=prefer)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 1024
