"""The README, the CHANGELOG and docs/*.md point at each other: every relative link must
reach a file that exists and, when it names a heading (`page.md#anchor`), a heading
that page has. And docs/configuration.md lists every option `ipc-router serve` takes."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from actors.cli import build_parser
from tests.support.doc_snippets import ROOT

pytestmark = pytest.mark.timeout(10)

PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
HEADING = re.compile(r"^#{1,6} (.+?)\s*$", re.MULTILINE)


def anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, markup and punctuation dropped
    (hyphens and underscores kept), each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading id of a page, the repeated ones numbered as GitHub numbers them."""
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = anchor(heading)
        name, n = base, 0
        while name in found:
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text()))


def test_the_anchor_rule_matches_githubs() -> None:
    assert anchor("14. Python SDK: errors, retries, heartbeats, discovery") == (
        "14-python-sdk-errors-retries-heartbeats-discovery"
    )
    assert anchor("10.3 `deploy/nats-server.conf`: least privilege") == (
        "103-deploynats-serverconf-least-privilege"
    )
    assert anchor("Options of `ipc-router serve`") == "options-of-ipc-router-serve"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_reaches_a_file_and_a_heading(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not ours to check offline
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no such heading in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_the_readme_links_every_page_of_the_docs() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md")}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


def test_the_readme_stays_a_five_minute_page() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_every_serve_option_is_documented() -> None:
    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    serve = commands.choices["serve"]
    options = {o for a in serve._actions for o in a.option_strings if o.startswith("--")}
    page = (ROOT / "docs" / "configuration.md").read_text()
    missing = sorted(o for o in options - {"--help"} if f"`{o}" not in page)
    assert not missing, f"docs/configuration.md does not mention {missing}"
