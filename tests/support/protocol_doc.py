"""Reading docs/protocol.md: its fenced blocks, hex dumps, annotations, and values in
the document's notation (JSON-like, `nil` for msgpack nil, `Timestamp(…)` for ext -1)."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
HEX_LINE = re.compile(r"(?:[0-9a-f]{2} )*[0-9a-f]{2}")
LEADING_HEX = re.compile(r"^((?:[0-9a-f]{2} )*[0-9a-f]{2})(?= |$)")
SIZE = re.compile(r"(\d{1,3}(?:[ ,]\d{3})*|\d+) bytes")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


@dataclass
class Block:
    """One fenced block: its language, lines, and the prose before it."""

    language: str
    lines: list[str]
    prose: str
    section: str

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def blocks(markdown: str) -> list[Block]:
    """The fenced blocks of a markdown text, each with the prose before it and the
    heading it is under."""
    found: list[Block] = []
    prose: list[str] = []
    section = ""
    fence: list[str] | None = None
    language = ""
    for line in markdown.splitlines():
        if fence is not None:
            if line.startswith("```"):
                found.append(Block(language, fence, "\n".join(prose), section))
                fence, prose = None, []
            else:
                fence.append(line)
        elif line.startswith("```"):
            fence, language = [], line[3:].strip()
        else:
            if line.startswith("#"):
                section = line
            prose.append(line)
    return found


def is_hex_dump(block: Block) -> bool:
    """A block of hex bytes and nothing else."""
    return block.language == "" and bool(block.lines) and all(
        HEX_LINE.fullmatch(line) for line in block.lines
    )


def is_annotation(block: Block) -> bool:
    """A block that spells bytes out, with comments."""
    return block.language == "" and bool(block.lines) and bool(
        LEADING_HEX.match(block.lines[0])
    ) and not is_hex_dump(block)


def annotated_bytes(block: Block) -> bytes:
    """The bytes an annotation spells out: the hex at the start of each line that
    starts with hex (comment-only lines are indented)."""
    spelled = [m.group(1) for line in block.lines if (m := LEADING_HEX.match(line))]
    return bytes.fromhex(" ".join(spelled))


def comparable(value: Any) -> Any:
    """A decoded msgpack value as the document's notation reads (see `notation`)."""
    if isinstance(value, msgpack.Timestamp):
        return "TS:" + value.to_datetime().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [comparable(item) for item in value]
    return value


def notation(text: str) -> Any:
    """The document's notation (JSON, with `nil` and `Timestamp(…)`) as a value; None
    when the text is not one complete value (an elided `…` one, say)."""
    pieces: list[str] = []
    at = 0
    for match in STRING.finditer(text):
        pieces.append(_outside_strings(text[at : match.start()]))
        pieces.append(match.group(0))
        at = match.end()
    pieces.append(_outside_strings(text[at:]))
    try:
        return json.loads("".join(pieces))
    except ValueError:
        return None


def _outside_strings(text: str) -> str:
    text = re.sub(r"\bnil\b", "null", text)
    return re.sub(r"Timestamp\(([^)]*)\)", r'"TS:\1"', text)


def values_in(block: Block) -> list[tuple[Any, int | None]]:
    """The values a block in the notation shows, each with the size written after it:
    a block may hold one value, or several, one after another, each starting at the
    start of a line (`{...}   241 bytes`)."""
    if block.language != "" or not block.lines or not block.lines[0].startswith("{"):
        return []
    whole = notation(block.text)
    if whole is not None:
        return [(whole, None)]
    entries: list[list[str]] = []
    for line in block.lines:
        if line.startswith("{"):
            entries.append([])
        if entries:
            entries[-1].append(line)
    shown: list[tuple[Any, int | None]] = []
    for entry in entries:
        text = "\n".join(entry)
        size = None
        if match := re.search(r"\s+(\d+) bytes(?::.*)?$", text):
            size, text = int(match.group(1)), text[: match.start()]
        value = notation(text)
        if value is not None:
            shown.append((value, size))
    return shown


def packed_literals(block: Block) -> list[Any]:
    """The maps a `msgpack.packb({...})` example packs."""
    if block.language != "python" or "msgpack.packb(" not in block.text:
        return []
    inner = block.text.split("msgpack.packb(", 1)[1].rsplit(")", 1)[0]
    try:
        return [ast.literal_eval(inner)]
    except (ValueError, SyntaxError):
        return []



ALL = blocks(DOC.read_text())
"""The blocks of docs/protocol.md."""
