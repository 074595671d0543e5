"""`ipc-router bench` end to end at a tiny size: it starts its own nats-server,
router and echo responder, and reports every phase beside its baseline."""

from __future__ import annotations

import io
import json

import pytest

from actors.bench import BenchConfig, render_report, reply_status, report_json, run_bench
from actors.cli import main
from protocol import ErrorInfo, RegisterReply, encode_msgpack

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
    for name in ("register", "heartbeat", "query"):
        assert report["ratios"][name]["throughput"] > 0
        assert report["ratios"][name]["p50"] > 0
    out = io.StringIO()
    render_report(report, out)
    assert "ratio to the raw NATS echo round trip" in out.getvalue()
    assert json.loads(report_json(report))["config"]["instances"] == 300


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
