"""The admin response cache: one entry per request however it is spelled, and a
bound on what its entries really cost rather than on their number."""

from __future__ import annotations

import pytest

from actors.http_gateway import _ENTRY_OVERHEAD, _ResponseCache, cache_key
from actors.registry_api import GetService, ListServices
from protocol import GetServiceRequest, InstanceStatus, ListServicesRequest, encode_cursor

pytestmark = pytest.mark.timeout(10)


def test_spellings_of_one_request_share_a_key() -> None:
    a = GetService(
        GetServiceRequest(service_name="s", status=None, limit=1000, metadata={"a": "1", "b": "2"})
    )
    b = GetService(
        GetServiceRequest(service_name="s", status=None, limit=1000, metadata={"b": "2", "a": "1"})
    )
    assert cache_key(a) == cache_key(b)
    first = ListServices(ListServicesRequest(cursor=encode_cursor("x", b"secret")))
    assert cache_key(first) != cache_key(ListServices(ListServicesRequest()))
    assert cache_key(ListServices(ListServicesRequest(status=InstanceStatus.ONLINE))) != cache_key(
        ListServices(ListServicesRequest())
    )


def test_the_cache_is_bounded_by_the_real_cost_of_its_entries() -> None:
    entry = 300 + 2 + _ENTRY_OVERHEAD  # body, key, overhead
    cache = _ResponseCache(max_bytes=3 * entry, max_body=400)
    for n in range(10):
        cache._store(b"k%d" % n, n, b"x" * 300)
    assert cache.bytes == 3 * entry
    assert len(cache) == 3
    assert b"k9" in cache._entries  # the newest stay
    cache._store(b"big", 0, b"x" * 401)
    assert b"big" not in cache._entries
    cache._store(b"k9", 1, b"y" * 10)  # replacing an entry frees its old cost
    assert cache.bytes == 2 * entry + 10 + 2 + _ENTRY_OVERHEAD


def test_many_tiny_entries_cannot_outgrow_the_bound() -> None:
    """Counting only body bytes let 150,000 small pages hold ten times the bound."""
    cache = _ResponseCache(max_bytes=100_000)
    for n in range(10_000):
        cache._store(b"key-%d" % n, n, b"{}")
    assert cache.bytes <= 100_000
    assert len(cache) < 100_000 // _ENTRY_OVERHEAD
