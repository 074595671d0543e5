"""docs/protocol.md holds to its own word: every hex dump is as long as the text says,
matches its annotation byte for byte, and decodes to the decoded form the section
shows; every link inside the document finds its heading.

(New examples come from `python -m tests.support.protocol_examples`.)"""

from __future__ import annotations

import re

import msgpack
import pytest

from tests.support.protocol_doc import (
    ALL,
    DOC,
    HEX_LINE,
    SIZE,
    Block,
    annotated_bytes,
    comparable,
    is_annotation,
    is_hex_dump,
    packed_literals,
    values_in,
)

pytestmark = pytest.mark.timeout(10)

DUMPS = [(index, block) for index, block in enumerate(ALL) if is_hex_dump(block)]


def test_the_document_has_its_hex_dumps() -> None:
    assert len(DUMPS) >= 6


@pytest.mark.parametrize(("index", "dump"), DUMPS, ids=[f"block{i}" for i, _ in DUMPS])
def test_each_hex_dump_is_as_long_as_the_text_says(index: int, dump: Block) -> None:
    data = bytes.fromhex(" ".join(dump.lines))
    sizes = [int(re.sub(r"[ ,]", "", size)) for size in SIZE.findall(dump.prose)]
    assert sizes, f"no size given before the dump in {dump.section}"
    assert sizes[-1] == len(data), f"{dump.section}: the text says {sizes[-1]}, the dump has {len(data)}"


@pytest.mark.parametrize(("index", "dump"), DUMPS, ids=[f"block{i}" for i, _ in DUMPS])
def test_each_annotation_spells_out_its_dump_byte_for_byte(index: int, dump: Block) -> None:
    data = bytes.fromhex(" ".join(dump.lines))
    following = ALL[index + 1] if index + 1 < len(ALL) else None
    if following is None or not is_annotation(following):
        pytest.skip("no annotation follows this dump")
    assert annotated_bytes(following) == data


@pytest.mark.parametrize(("index", "dump"), DUMPS, ids=[f"block{i}" for i, _ in DUMPS])
def test_each_hex_dump_decodes_to_what_its_section_shows(index: int, dump: Block) -> None:
    data = bytes.fromhex(" ".join(dump.lines))
    decoded = comparable(msgpack.unpackb(data, timestamp=0, strict_map_key=False))
    same_section = [block for block in ALL if block.section == dump.section]
    shown = [value for block in same_section for value, _ in values_in(block)]
    packed = [value for block in same_section for value in packed_literals(block)]
    assert decoded in shown or any(msgpack.packb(value) == data for value in packed), (
        f"{dump.section}: {decoded} is shown nowhere in the section"
    )
    for block in same_section:  # where a listing gives sizes, they are right too
        for value, size in values_in(block):
            if value == decoded and size is not None:
                assert size == len(data)


def test_the_mixed_example_of_7_2_is_right() -> None:
    """`{"service_name": "orders", "status": nil}`, its size and its bytes."""
    [block] = [b for b in ALL if any("29 bytes" in line for line in b.lines)]
    data = bytes.fromhex(" ".join(line for line in block.lines if HEX_LINE.fullmatch(line)))
    assert len(data) == 29
    assert msgpack.unpackb(data) == {"service_name": "orders", "status": None}
    assert len(msgpack.packb({"service_name": "orders"})) == 21


def test_every_link_inside_the_document_finds_its_heading() -> None:
    text = DOC.read_text()
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    missing = sorted({a for a in re.findall(r"\]\(#([^)]+)\)", text) if a not in anchors})
    assert missing == []
