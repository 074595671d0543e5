"""`ipc-router services NAME` as a table: times in ISO 8601 with their zone, to the
millisecond, as the API gives them (in UTC, with `Z`)."""

from __future__ import annotations

import io

import pytest

from actors.admin_cli import render_instances, render_time

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    ("api", "shown"),
    [
        ("2026-12-06T22:47:37.712345Z", "2026-12-06T22:47:37.712Z"),
        ("2026-12-06T22:47:37Z", "2026-12-06T22:47:37.000Z"),
        ("2026-12-06T23:47:37.712999+01:00", "2026-12-06T22:47:37.712Z"),
        (None, "-"),
        ("", "-"),
        ("2026-12-06T22:47:37.712345", "2026-12-06T22:47:37.712345"),  # no zone: as it came
        ("soon", "soon"),
    ],
)
def test_a_time_is_shown_in_utc_to_the_millisecond_with_its_zone(
    api: str | None, shown: str
) -> None:
    assert render_time(api) == shown


def test_the_instances_table_keeps_the_zone_of_each_time() -> None:
    body = {
        "service_name": "orders",
        "instances": [
            {
                "instance_id": "orders-1",
                "status": "ONLINE",
                "last_heartbeat": "2026-12-06T22:47:37.712345Z",
                "lease_expires_at": "2026-12-06T22:47:40.712345Z",
                "metadata": {"zone": "a"},
                "maintenance": {"since": "2026-12-06T22:40:00Z", "by": "admin", "reason": "bad disk"},
            },
            {"instance_id": "orders-2", "status": "OFFLINE", "last_heartbeat": None, "metadata": {}},
        ],
    }
    out = io.StringIO()
    render_instances(body, out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == [
        "INSTANCE", "STATUS", "LAST", "HEARTBEAT", "LEASE", "EXPIRES", "MAINTENANCE", "METADATA"
    ]  # fmt: skip
    assert lines[1].split() == [
        "orders-1", "ONLINE", "2026-12-06T22:47:37.712Z", "2026-12-06T22:47:40.712Z",
        "since", "2026-12-06T22:40:00.000Z", "by", "admin:", "bad", "disk", '{"zone":"a"}',
    ]  # fmt: skip
    assert lines[2].split() == ["orders-2", "OFFLINE", "-", "-", "-", "{}"]
    assert lines[3] == "2 instance(s) of orders"
