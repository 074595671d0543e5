"""The ```python blocks of the README and docs/*.md, for the tests that compile them
and run them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(path: Path) -> list[tuple[str, str]]:
    """(name, code) of each ```python block of a document; the name is
    `path:line` of its first line of code."""
    text = path.read_text()
    found = []
    for match in PYTHON_BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 2
        found.append((f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return found
