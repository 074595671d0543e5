"""`InstanceChooser`: picks one usable instance from a `ServiceCache`'s view, cheaply.

Everything a strategy needs (the usable instances, those matching a preference, the
cumulative weights) is built once per view, the first time it is asked for, and
dropped when the view changes. A call then costs a lookup and an index: it allocates
nothing but, with a preference, the hashable key it looks its tables up by.

Round robin keeps its place across view changes: the tables built for a new view start
after the instance chosen last, so an added or removed instance neither restarts the
cycle nor makes it skip the others.

Single event loop, no locks: `choose()` is synchronous and the view changes only
between two steps of the loop, never during a call. It is not meant to be called from
other threads.
"""

from __future__ import annotations

import itertools
import math
import random
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

from protocol import Instance, InstanceStatus, encode_json
from protocol.models import MetadataValue

__all__ = [
    "MAX_PREFERENCES",
    "InstanceChooser",
    "Preference",
    "Strategy",
    "is_usable",
    "matches_preference",
    "weight_of",
]

Strategy: TypeAlias = Literal["round_robin", "random", "weighted"]
Preference: TypeAlias = Mapping[str, MetadataValue]

_PreferenceKey: TypeAlias = tuple[tuple[str, type, MetadataValue], ...]
"""A preference as a dict key. The value's type is part of it: `{"w": 1}`, `{"w": 1.0}`
and `{"w": True}` are equal as Python values but match different instances."""

_EVERYONE: _PreferenceKey = ()

MAX_PREFERENCES = 16
"""Distinct preferences whose tables are kept at once; past it the oldest is dropped
(and rebuilt, its round robin starting afresh, when asked for again)."""

_UNSCALAR = (str, dict, list, tuple)


def is_usable(instance: Instance) -> bool:
    """ONLINE and not in maintenance."""
    return instance.status is InstanceStatus.ONLINE and instance.maintenance is None


def weight_of(instance: Instance) -> float:
    """`metadata["weight"]` when it is a finite number >= 0 (int or float, not bool);
    anything else, or no weight at all, counts as 1."""
    value = instance.metadata.get("weight")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 1.0
    try:
        weight = float(value)
    except OverflowError:  # (an int too large for a float)
        return 1.0
    return weight if 0.0 <= weight < math.inf else 1.0


def matches_preference(metadata: Mapping[str, Any], prefer: Preference) -> bool:
    """Whether `metadata` has every key of `prefer` with an equal value, as the
    router's metadata filter decides it (`get_instances(..., metadata=...)`): equal
    values of the same JSON type, or a string that is the JSON text of a number, bool
    or nil (`{"replicas": "3"}` matches `{"replicas": 3}`)."""
    return _matches(metadata, _preference_key(prefer))


def _preference_key(prefer: Preference) -> _PreferenceKey:
    if len(prefer) == 1:  # the usual case, three times faster without the sort
        ((key, value),) = prefer.items()
        return ((key, type(value), value),)
    return tuple(sorted([(key, type(value), value) for key, value in prefer.items()]))


def _matches(metadata: Mapping[str, Any], wanted: _PreferenceKey) -> bool:
    # The SDK must not import the router (`actors.registry_state._metadata_matches`);
    # tests/unit/test_sdk_choice.py checks that the two agree.
    for key, kind, value in wanted:
        if key not in metadata:
            return False
        actual = metadata[key]
        if type(actual) is kind and actual == value:
            continue
        if (
            kind is str
            and not isinstance(actual, _UNSCALAR)
            and encode_json(actual).decode() == value
        ):
            continue
        return False
    return True


class _Pool:
    """The instances one preference chooses among (in id order), with its round robin
    place and, once asked for, its weighted table."""

    __slots__ = ("_cumulative", "_heavy", "_total", "instances", "turn")

    def __init__(self, instances: list[Instance], turn: int) -> None:
        self.instances = instances
        self.turn = turn
        """Index of the next round robin choice (may equal len: it wraps on use)."""
        self._heavy: list[Instance] = []
        self._cumulative: list[float] | None = None
        self._total = 0.0

    @property
    def last_chosen(self) -> str | None:
        """Id of the instance just before round robin's next place (the one it chose
        last, once it has chosen); None at the first place."""
        if not 0 < self.turn <= len(self.instances):
            return None
        return self.instances[self.turn - 1].instance_id

    def in_turn(self) -> Instance | None:
        count = len(self.instances)
        if not count:
            return None
        index = self.turn if self.turn < count else 0
        self.turn = index + 1
        return self.instances[index]

    def uniform(self, draw: Callable[[], float]) -> Instance | None:
        if not self.instances:
            return None
        # draw() < 1, so the product stays below len: the float just under 1 times any
        # n < 2**53 rounds down.
        return self.instances[int(draw() * len(self.instances))]

    def weighted(self, draw: Callable[[], float]) -> Instance | None:
        if not self.instances:
            return None
        if self._cumulative is None:
            self._tabulate()
            assert self._cumulative is not None
        # draw() * total < total == cumulative[-1]: the index is always in range, and an
        # instance of weight 0 is never in the table to be found.
        return self._heavy[bisect_right(self._cumulative, draw() * self._total)]

    def _tabulate(self) -> None:
        weights = [weight_of(instance) for instance in self.instances]
        heavy = [(i, w) for i, w in zip(self.instances, weights, strict=True) if w > 0.0]
        if not heavy:  # all weigh 0: none is preferred to another
            heavy = [(instance, 1.0) for instance in self.instances]
        if not math.isfinite(sum(w for _, w in heavy)):  # huge weights: keep their ratios
            top = max(w for _, w in heavy)
            heavy = [(i, w / top) for i, w in heavy]
        self._heavy = [instance for instance, _ in heavy]
        self._cumulative = list(itertools.accumulate(w for _, w in heavy))
        self._total = self._cumulative[-1]


class InstanceChooser:
    """Chooses one usable instance from `source()`, the current view sorted by
    instance id, which it reads again only after `invalidate()`.

    `rng` (a `random.Random`) makes the random and weighted strategies, and the first
    round robin place, reproducible; by default the `random` module's generator.
    """

    def __init__(
        self, source: Callable[[], Sequence[Instance]], rng: random.Random | None = None
    ) -> None:
        self._source = source
        self._draw: Callable[[], float] = (rng or random).random  # (bound once, not per call)
        self._everyone: _Pool | None = None
        self._preferred: dict[_PreferenceKey, _Pool] = {}
        self._resume: dict[_PreferenceKey, str] = {}
        """Per preference, the id round robin chose last before the view changed."""

    def invalidate(self) -> None:
        """The view changed: drop the tables (round robin places are kept)."""
        for key, pool in itertools.chain([(_EVERYONE, self._everyone)], self._preferred.items()):
            if pool is not None and (last := pool.last_chosen) is not None:
                self._resume[key] = last
        while len(self._resume) > MAX_PREFERENCES + 1:
            del self._resume[next(iter(self._resume))]
        self._everyone = None
        self._preferred.clear()

    def choose(
        self, strategy: Strategy = "round_robin", prefer: Preference | None = None
    ) -> Instance | None:
        """One usable instance, or None when there is none; see `ServiceCache.choose`."""
        if prefer:
            key = _preference_key(prefer)
            pool = self._preferred.get(key)
            if pool is None:
                pool = self._prefer(key)
        else:
            pool = self._everyone
            if pool is None:
                pool = self._everyone_pool()
        if strategy == "round_robin":
            return pool.in_turn()
        if strategy == "random":
            return pool.uniform(self._draw)
        if strategy == "weighted":
            return pool.weighted(self._draw)
        raise ValueError(
            f"unknown strategy {strategy!r}: use 'round_robin', 'random' or 'weighted'"
        )

    def _everyone_pool(self) -> _Pool:
        usable = [instance for instance in self._source() if is_usable(instance)]
        self._everyone = self._pool(_EVERYONE, usable)
        return self._everyone

    def _prefer(self, key: _PreferenceKey) -> _Pool:
        everyone = self._everyone if self._everyone is not None else self._everyone_pool()
        matching = [i for i in everyone.instances if _matches(i.metadata, key)]
        pool = self._pool(key, matching) if matching else everyone  # none: fall back
        if len(self._preferred) >= MAX_PREFERENCES:
            del self._preferred[next(iter(self._preferred))]
        self._preferred[key] = pool
        return pool

    def _pool(self, key: _PreferenceKey, instances: list[Instance]) -> _Pool:
        if not instances:
            return _Pool(instances, 0)  # (the place is kept for when some are back)
        last = self._resume.pop(key, None)
        if last is not None:
            turn = bisect_right([instance.instance_id for instance in instances], last)
        else:
            # A random first place: caches started together do not all begin with the
            # same instance.
            turn = int(self._draw() * len(instances))
        return _Pool(instances, turn)
