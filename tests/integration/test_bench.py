"""`ipc-router bench` end to end at a tiny size: it starts its own nats-server,
router and echo responder (or uses a live router), reports every phase beside its
baseline, leaves nothing registered, and gives no ratio for a row with errors."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.app import Router
from actors.cli import main
from actors.embedded_nats import NatsServerProcess
from benchmarks.loadgen import (
    BenchConfig,
    format_ratio,
    render_report,
    reply_status,
    report_json,
    run_bench,
)
from protocol import ErrorInfo, InstanceStatus, RegisterReply, RegistryLimits, encode_msgpack
from tests.support.routers import InProcessRouters
from tests.support.waiting import eventually

RATIO = re.compile(r"x\d+\.\d+")

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("raw", [False, True], ids=["sdk", "raw"])
async def test_bench_reports_each_phase_beside_the_echo_baseline(raw: bool) -> None:
    config = BenchConfig(instances=300, services=5, concurrency=16, heartbeat_seconds=0.3, raw=raw, progress=False)
    report = await run_bench(config)
    phases = {p["name"]: p for p in report["phases"]}
    assert set(phases) == {"echo-register", "register", "echo-heartbeat", "heartbeat", "echo-query", "query"}
    assert phases["register"]["requests"] == 300
    assert phases["register"]["errors"] == {}
    assert phases["heartbeat"]["errors"] == {}, "heartbeats for registered instances must all be 200"
    assert phases["query"]["errors"] == {}
    assert report["ok"] is True
    assert report["cleanup"] == {"deregistered": 300, "errors": {}}
    for name in ("register", "heartbeat", "query"):
        assert report["ratios"][name]["throughput"] > 0
        assert report["ratios"][name]["p50"] > 0
    out = io.StringIO()
    render_report(report, out)
    text = out.getvalue()
    assert "ratio to the raw NATS echo round trip" in text
    # The header: what the rows measure, and how the router was run.
    assert "rows: register = registrations of new instances" in text
    assert "router: started by the bench (nats-server with JetStream); store: stream IPC_REGISTRY" in text
    assert "log level: warning" in text
    ratios = RATIO.findall(text)
    assert len(ratios) == 6 and all(len(r.split(".")[1]) == 2 for r in ratios)  # alike
    assert json.loads(report_json(report))["config"]["instances"] == 300


@pytest.fixture
async def live_router(nats_server: NatsServerProcess) -> AsyncIterator[Router]:
    """A router on the test's nats-server that keeps its registry in a stream, as
    `ipc-router serve` does by default."""
    started = InProcessRouters(nats_server.url)
    try:
        router = await started.start(store="stream")

        async def leads() -> bool:
            status = await router.registry.status()
            return status is not None and status.role == "leader"

        await eventually(leads, timeout=10, what="the router to lead")
        yield router
    finally:
        await started.stop_all()


async def online_instances(router: Router) -> int:
    listing = await router.registry.list_services()
    return sum(s.status_counts.get(InstanceStatus.ONLINE, 0) for s in listing.services)


async def test_two_runs_against_one_live_router_both_succeed_and_leave_nothing_behind(
    live_router: Router, nats_server: NatsServerProcess
) -> None:
    config = BenchConfig(
        instances=200, services=4, concurrency=16, heartbeat_seconds=0.3,
        nats_url=nats_server.url, progress=False,
    )  # fmt: skip
    first = await run_bench(config)
    second = await run_bench(config)
    for report in (first, second):
        assert report["ok"] is True, report
        assert all(phase["errors"] == {} for phase in report["phases"])
        assert all(ratio["throughput"] for ratio in report["ratios"].values())
        assert report["router"] == {
            "started_by_bench": False,
            "log_level": None,
            "store": "stream IPC_REGISTRY (1 router)",
        }
    assert first["run_id"] != second["run_id"]
    assert await online_instances(live_router) == 0
    out = io.StringIO()
    render_report(second, out)
    assert "router: external; store: stream IPC_REGISTRY (1 router); log level: unknown (info " \
        "logging costs registration throughput)" in out.getvalue()


async def test_a_run_with_errors_prints_no_ratio_and_exits_1(
    nats_server: NatsServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    started = InProcessRouters(nats_server.url)
    try:
        # Room for 50 of the 80 instances: 30 registrations get 507, their heartbeats 404.
        router = await started.start(limits=RegistryLimits(max_instances=50))
        code = await asyncio.to_thread(
            main,
            ["bench", "--nats-url", nats_server.url, "-n", "80", "-s", "2", "-c", "8", "-d", "0.2",
             "--no-progress"],
        )  # fmt: skip
        assert await online_instances(router) == 0  # the 50 are deregistered all the same
    finally:
        await started.stop_all()
    out = capsys.readouterr().out
    assert code == 1
    assert "register   ratio n/a (errors: {'507': 30})" in out
    assert "heartbeat  ratio n/a (errors: {'404':" in out
    assert re.search(r"query +throughput x\d\.\d\d +p50 x\d\.\d\d", out)  # (no errors there)
    assert "bench: FAILED" in out


def test_ratios_are_formatted_alike() -> None:
    assert [format_ratio(v) for v in (0.7, 1.0, 0.733, 12.5, None)] == [
        "x0.70", "x1.00", "x0.73", "x12.50", "n/a",
    ]  # fmt: skip


def test_reply_status_reads_the_status_without_decoding_the_reply() -> None:
    assert reply_status(encode_msgpack(RegisterReply(status=201))) == "201"
    assert reply_status(encode_msgpack(RegisterReply(status=409, error=ErrorInfo(code="x", message="y")))) == "409"
    assert reply_status(encode_msgpack(RegisterReply(status=7))) == "7"
    assert reply_status(b"\x80") == "unreadable"


def test_bench_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "-n", "100", "-s", "2", "-c", "8", "-d", "0.2", "--json", "--no-progress"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["instances"] == 100
    assert report["ok"] is True


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("tqdm", "bench needs the bench extra: pip install 'ipc-router[bench]'"),
        ("benchmarks.loadgen", "bench needs the load generator (benchmarks/loadgen.py)"),
    ],
)
def test_bench_without_its_extra_or_module_is_a_one_line_usage_error(
    missing: str, message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "benchmarks.loadgen")
    monkeypatch.setitem(sys.modules, missing, None)  # None: "import of ... halted"
    assert main(["bench", "-n", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ipc-router: error: {message}")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_router_modules_do_not_import_the_load_generator_or_tqdm() -> None:
    code = (
        "import importlib, pkgutil, sys, actors\n"
        "for m in pkgutil.iter_modules(actors.__path__, 'actors.'):\n"
        "    if m.name != 'actors.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tqdm', 'benchmarks')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bench_command_runs_from_any_working_directory(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "ipc-router"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "actors"]
    done = subprocess.run(
        [*command, "bench", "-n", "50", "-s", "2", "-c", "4", "-d", "0.2", "--json", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["config"]["instances"] == 50
