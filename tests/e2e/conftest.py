"""Routers and services as real subprocesses, killed when the test is done."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest

from tests.support.network import free_port
from tests.support.processes import RouterLauncher, RouterProcess

ROUTER_LOGS = Path(__file__).resolve().parents[2] / "test-artifacts" / "router-logs"
FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture
async def routers(request: pytest.FixtureRequest) -> AsyncIterator[RouterLauncher]:
    """Starts `ipc-router serve` subprocesses; kills what is left of them at teardown.
    When the test failed, each router's log is kept in test-artifacts/router-logs/ and
    its last lines printed, so that a failure seen once (in CI, say) can be read."""
    launcher = RouterLauncher()
    try:
        yield launcher
    finally:
        await launcher.kill_all()
        if request.node.stash.get(FAILED, False):
            keep_logs(request.node.nodeid, launcher.launched)


def keep_logs(test: str, launched: list[RouterProcess]) -> None:
    folder = ROUTER_LOGS / re.sub(r"[^\w.-]+", "_", test)
    folder.mkdir(parents=True, exist_ok=True)
    for n, router in enumerate(launched):
        pid = router.process.pid if router.process is not None else 0
        path = folder / f"router-{n}-pid{pid}.log"
        path.write_text("\n".join(router.raw_lines) + "\n")
        print(f"---- router {n} (pid {pid}), last lines; all in {path}")
        print("\n".join(router.raw_lines[-25:]))


@pytest.fixture
async def started_router(routers: RouterLauncher) -> tuple[RouterProcess, int, int]:
    """A router with its embedded NATS; (process, nats_port, http_port)."""
    nats_port, http_port = free_port(), free_port()
    router = await routers.start(
        "--embedded-nats-port", str(nats_port), "--http-port", str(http_port)
    )
    return router, nats_port, http_port
