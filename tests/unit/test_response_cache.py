"""The admin response cache: one entry per request however it is spelled, and a
bound on bytes rather than entries."""

from __future__ import annotations

import pytest

from actors.http_gateway import _cache_key, _ResponseCache
from actors.registry import GetService, ListServices
from protocol import GetServiceRequest, InstanceStatus, ListServicesRequest, encode_cursor

pytestmark = pytest.mark.timeout(10)


def test_spellings_of_one_request_share_a_key() -> None:
    a = GetService(GetServiceRequest(service_name="s", status=None, limit=1000, metadata={"a": "1", "b": "2"}))
    b = GetService(GetServiceRequest(service_name="s", status=None, limit=1000, metadata={"b": "2", "a": "1"}))
    assert _cache_key(a) == _cache_key(b)
    first = ListServices(ListServicesRequest(cursor=encode_cursor("x")))
    assert _cache_key(first) != _cache_key(ListServices(ListServicesRequest()))
    assert _cache_key(ListServices(ListServicesRequest(status=InstanceStatus.ONLINE))) != _cache_key(
        ListServices(ListServicesRequest())
    )


def test_the_cache_is_bounded_by_bytes_and_skips_huge_bodies() -> None:
    cache = _ResponseCache(max_bytes=1000, max_body=400)
    for n in range(10):
        cache._store(("k", n), n, b"x" * 300)
    assert cache._bytes <= 1000
    assert len(cache._entries) == 3
    assert ("k", 9) in cache._entries  # the newest stay
    cache._store(("big",), 0, b"x" * 401)
    assert ("big",) not in cache._entries
    cache._store(("k", 9), 1, b"y" * 10)  # replacing an entry frees its old bytes
    assert cache._bytes == 600 + 10
