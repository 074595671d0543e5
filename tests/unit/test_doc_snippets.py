"""The Python code blocks of README.md and docs/*.md are meant to run as written: each
must at least compile as a module (no top-level `await` or `async with`), and what it
imports from this project must exist. A fragment that is not meant to run goes in a
block marked `py` or `text`, not `python`."""

from __future__ import annotations

import ast
import importlib

import pytest

from tests.support.doc_snippets import DOCUMENTS, python_blocks

pytestmark = pytest.mark.timeout(10)

PROJECT = ("sdk", "protocol", "actors", "benchmarks")


SNIPPETS = [snippet for path in DOCUMENTS for snippet in python_blocks(path)]


def test_the_readme_has_snippets() -> None:
    assert any(name.startswith("README.md") for name, _ in SNIPPETS)


@pytest.mark.parametrize(("name", "code"), SNIPPETS, ids=[name for name, _ in SNIPPETS])
def test_each_snippet_compiles_as_a_module(name: str, code: str) -> None:
    try:
        compile(code, name, "exec")
    except SyntaxError as error:
        pytest.fail(f"{name} does not run as written: {error}")


@pytest.mark.parametrize(("name", "code"), SNIPPETS, ids=[name for name, _ in SNIPPETS])
def test_what_each_snippet_imports_from_the_project_exists(name: str, code: str) -> None:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        pytest.skip("does not compile (the test above says so)")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{name}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PROJECT:
                    importlib.import_module(alias.name)
