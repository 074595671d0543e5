"""Building msgpack payloads byte for byte: exact sizes, deep nesting, raw values
spliced into a map."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack


def pack(value: Any, *, bin_type: bool = True, single_float: bool = False) -> bytes:
    """msgpack; `bin_type=False` sends bytes as (possibly invalid UTF-8) str,
    `single_float=True` floats as float32 (unless one does not fit)."""
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=bin_type, use_single_float=single_float)
    except OverflowError:
        if not single_float:
            raise
        packed = msgpack.packb(value, use_bin_type=bin_type)
    return packed


def exact_size(build: Callable[[int], bytes], size: int, start: int) -> bytes:
    """`build(n)` for the n that makes it `size` bytes long (or as close as msgpack
    header sizes allow)."""
    n = max(start, 0)
    data = build(n)
    for _ in range(6):
        if len(data) == size:
            break
        n = max(n + size - len(data), 0)
        data = build(n)
    return data


def metadata_of_size(size: int) -> dict[str, Any]:
    """`{"blob": "x" * n}` whose msgpack encoding is exactly `size` bytes."""
    data = exact_size(lambda n: pack({"blob": "x" * n}), size, size - 9)
    assert len(data) == size
    metadata: dict[str, Any] = msgpack.unpackb(data)
    return metadata


def padded(request: dict[Any, Any], size: int, **options: bool) -> bytes:
    """The request with an unknown key `zz_pad` that makes it exactly `size` bytes (when
    the request alone is not already larger)."""
    plain = pack(request, **options)
    if len(plain) + 8 > size:
        return plain
    return exact_size(
        lambda n: pack({**request, "zz_pad": "p" * n}, **options), size, size - len(plain) - 10
    )


def nested(depth: int, opener: bytes, leaf: bytes = b"\xc0") -> bytes:
    """`depth` containers, each opened by `opener` (one element each), around `leaf`."""
    return opener * depth + leaf


def map_with(entries: dict[str, Any], raw_key: str, raw_value: bytes) -> bytes:
    """A msgpack map of `entries` plus one key whose value is the given raw bytes."""
    count = len(entries) + 1
    assert count <= 15
    body = b"".join(pack(k) + pack(v) for k, v in entries.items())
    return bytes([0x80 | count]) + body + pack(raw_key) + raw_value


def deep_metadata(depth: int, array: bool) -> dict[str, Any]:
    """Metadata nested `depth` levels deep, in maps or in arrays."""
    value: Any = 1
    for _ in range(depth - 1):
        value = [value] if array else {"k": value}
    return {"k": value}

