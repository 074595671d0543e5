"""The admin console (`GET /`) in a real browser: Debian's headless Chromium, driven by
Playwright, against a router in this process (admin token set, short leases) and a
service instance in a subprocess that is SIGKILLed.

Needs /usr/bin/chromium (`apt-get install -y chromium`; `.ci/run` installs it when apt
is available) and the `playwright` package (the `test` extra; its own browser
download is never used). Without either the tests are skipped, saying which is
missing. Screenshots are kept in the test's tmp dir and copied to `test-artifacts/` at
the repository's root (a person looks at them; see the list in each test).

Every page runs in the Asia/Tokyo time zone (UTC+9, no daylight saving) with the en-US
locale, whose defaults are the 12-hour clock and month/day/year: a time formatted with
the browser's defaults would show, the console's own format must.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from nats.aio.client import Client as NatsClient

from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from actors.http_gateway import CONTENT_SECURITY_POLICY
from protocol import REGISTER_SUBJECT, LeasePolicy
from sdk import ServiceClient
from tests.support.nats_requests import nats_request
from tests.support.processes import REPO, ServiceLauncher
from tests.support.routers import InProcessRouters
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = Path(os.environ.get("IPC_ROUTER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts"
TOKEN = "console-admin-token-0123456789"
# Short leases: a killed instance is UNHEALTHY after 1 s and OFFLINE 3 s later.
POLICY = LeasePolicy(heartbeat_interval=0.25, lease_ttl=1.0, offline_after=3.0, offline_retention=60)
# For a fleet to look at: an instance that stops renewing is UNHEALTHY after 3 s and
# stays so for a minute; one that renews has six beats of slack on a busy machine.
STEADY_POLICY = LeasePolicy(
    heartbeat_interval=0.5, lease_ttl=3.0, offline_after=60.0, offline_retention=60
)
TIME_ZONE = "Asia/Tokyo"
LOCALE = "en-US"


def _why_no_browser() -> str | None:
    if not CHROMIUM.exists():
        return (
            f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install -y chromium; "
            ".ci/run does so when apt is available) or point IPC_ROUTER_CHROMIUM at one"
        )
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing: pip install -e '.[test]'"
    return None


pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(_why_no_browser() is not None, reason=_why_no_browser() or ""),
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def console_router(routers: InProcessRouters) -> Router:
    return await routers.start(lease_policy=POLICY, admin_token=TOKEN)


def keep_artifact(source: Path, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(source, ARTIFACTS / name)


async def screenshot(page: Page, tmp_path: Path, name: str, *, full_page: bool = True) -> None:
    """A PNG of `page` in the test's tmp dir, kept as test-artifacts/`name`."""
    shot = tmp_path / name
    await page.screenshot(path=str(shot), full_page=full_page)
    keep_artifact(shot, name)


class PageWatch:
    """What the page reports on its own: uncaught errors, console errors and CSP
    violations."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        text = message.text
        # The first stream request, before the token is known, is refused: expected.
        if message.type == "error" and "401" not in text:
            self.errors.append(f"console: {text}")


async def open_console(
    browser: Browser, router: Router, width: int, height: int, *, time_zone: str = TIME_ZONE
) -> tuple[Page, PageWatch]:
    """A new page on the console, `width` x `height` (a phone, with touch, below 500 px)."""
    phone = width < 500
    page = await browser.new_page(
        viewport={"width": width, "height": height},
        timezone_id=time_zone,
        locale=LOCALE,
        is_mobile=phone,
        has_touch=phone,
    )
    watch = PageWatch(page)
    response = await page.goto(f"http://127.0.0.1:{router.http_port}/")
    assert response is not None and response.status == 200
    return page, watch


async def enter_token(page: Page) -> None:
    from playwright.async_api import expect

    token = page.get_by_label("Admin token")
    await expect(token).to_be_visible()
    await expect(token).to_be_focused()  # asked for at once, ready to type into
    await token.fill(TOKEN)
    await token.press("Enter")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")


async def test_the_console_follows_an_instance_from_registration_to_offline_without_a_reload(
    browser: Browser,
    console_router: Router,
    nats_server: NatsServerProcess,
    service_processes: ServiceLauncher,
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    page, watch = await open_console(browser, console_router, 1280, 800)
    await page.evaluate("window.loadedOnce = true")  # gone if the page is ever reloaded
    await enter_token(page)
    assert await page.evaluate("sessionStorage.getItem('ipc-router.admin-token')") == TOKEN
    await expect(page.locator("#services-empty")).to_have_text("No services registered.")

    async with ServiceClient(nats_server.url) as other:
        await other.register("payments", "payments-1", {"zone": "b", "replicas": 3})
        process = await service_processes.start(nats_server.url, "orders", "orders-1")

        orders = page.locator("#services-body tr[data-service='orders']")
        await expect(orders).to_be_visible(timeout=10_000)
        await expect(orders.locator("td").nth(2)).to_have_text("1")  # ONLINE
        # Chosen with the keyboard: the service name is a button.
        await orders.get_by_role("button", name="orders").focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("#detail-title")).to_have_text("Instances of orders")
        await expect(page.locator("#detail-title")).to_be_focused()
        instance = page.locator("#instances-body tr", has_text="orders-1")
        badge = instance.locator(".badge")
        await expect(badge).to_have_text("ONLINE")
        await expect(instance).to_contain_text(f"pid={process.process.pid if process.process else ''}")
        await expect(instance).to_contain_text("ago")

        process.send(signal.SIGKILL)  # no deregistration: the lease runs out
        await expect(badge).to_have_text("UNHEALTHY", timeout=10_000)
        await screenshot(page, tmp_path, "console.png", full_page=False)
        await expect(instance).to_have_class("status-unhealthy")
        await expect(orders.locator("td").nth(3)).to_have_text("1")  # UNHEALTHY count
        age = instance.locator(".age")
        first = await age.text_content()
        await expect(age).not_to_have_text(first or "", timeout=5_000)  # ticking

        await expect(badge).to_have_text("OFFLINE", timeout=10_000)
        await expect(instance).to_have_class("status-offline")
        await expect(orders.locator("td").nth(4)).to_have_text("1")  # OFFLINE count
        # UNHEALTHY and OFFLINE look different: not only their words.
        assert await badge.evaluate("b => getComputedStyle(b).borderStyle") == "dashed"

        # The filter box narrows the table; the other service stays listed otherwise.
        await page.get_by_label("Filter services").fill("pay")
        await expect(orders).to_have_count(0)
        await expect(page.locator("#services-body tr[data-service='payments']")).to_be_visible()
        await page.get_by_label("Filter services").fill("")
        await expect(orders).to_be_visible()

        await screenshot(page, tmp_path, "console-offline.png")

    assert await page.evaluate("window.loadedOnce === true"), "the page was reloaded"
    assert watch.errors == []

    # The token stays for the tab: a reload goes straight to the console.
    await page.reload()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    await expect(page.locator("#token-form")).to_be_hidden()


LAYOUT_PROBLEMS = """
() => {
  const problems = [];
  const range = document.createRange();
  const expanded = '.reveal:not(.time)[aria-expanded="true"]';
  const visibleText = (root) => {
    const nodes = [];
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const parent = node.parentElement;
      if (node.data.trim() && parent.checkVisibility() && !parent.closest(expanded)) nodes.push(node);
    }
    return nodes;
  };
  const rectsOf = (node, start, end) => {
    range.setStart(node, start);
    range.setEnd(node, end);
    return Array.from(range.getClientRects()).filter((rect) => rect.width > 0);
  };
  // Boxes on one line overlap vertically; a box below all the others starts a line.
  // (Counting boxes would not do: Chrome gives a word cut by an ellipsis two, side by
  // side.)
  const lineCount = (rects) => {
    let lines = 0;
    let bottom = -Infinity;
    for (const rect of [...rects].sort((a, b) => a.top - b.top)) {
      if (rect.top >= bottom - 0.5) lines += 1;
      bottom = Math.max(bottom, rect.bottom);
    }
    return lines;
  };
  const describe = (element) =>
    `<${element.tagName.toLowerCase()} class="${element.className}">`;

  // 1. No word is broken: each run of non-space characters lies on one line.
  for (const node of visibleText(document.body)) {
    for (const word of node.data.matchAll(/\\S+/g)) {
      const lines = lineCount(rectsOf(node, word.index, word.index + word[0].length));
      if (lines > 1) {
        problems.push(`"${word[0]}" in ${describe(node.parentElement)} is broken over ${lines} lines`);
      }
    }
  }
  // 2. Headers, names, ids, badges, ages, times and chips are each one line: all the
  //    text in them together.
  const atoms = "th, .service-button, .instance-id, .service-name, .badge, .age, .time > .clip, .chip";
  for (const atom of document.querySelectorAll(atoms)) {
    if (!atom.checkVisibility() || atom.closest(expanded)) continue;
    const rects = visibleText(atom).flatMap((node) => rectsOf(node, 0, node.data.length));
    if (lineCount(rects) > 1) {
      problems.push(`${describe(atom)} "${atom.textContent}" takes more than one line`);
    }
  }
  // 3. A value cut short ends in an ellipsis, and its whole text is on demand: in the
  //    title of the button it is in (a click, tap or key expands it).
  for (const clip of document.querySelectorAll(".clip")) {
    if (!clip.checkVisibility() || clip.scrollWidth <= clip.clientWidth) continue;
    const button = clip.closest("button");
    if (getComputedStyle(clip).textOverflow !== "ellipsis") {
      problems.push(`"${clip.textContent}" is cut without an ellipsis`);
    }
    if (!button || button.title !== clip.textContent) {
      problems.push(`"${clip.textContent}" is cut, and not to be had whole`);
    }
  }
  // 4. The page does not scroll sideways (a table container may, on purpose).
  const wide = Math.max(document.documentElement.scrollWidth, document.body.scrollWidth);
  if (wide > window.innerWidth) problems.push(`the page is ${wide} px wide in ${window.innerWidth} px`);
  return problems;
}
"""
"""What is wrong with the console's layout, as a list of sentences (empty: nothing).

Measured, not looked at, with the boxes `Range.getClientRects()` gives for a piece of
text: boxes that overlap vertically are on one line, a box below all the others starts
another (which holds for any font, size and line height, and for a word that Chrome
splits in two boxes side by side where an ellipsis cuts it). (1) Every word of visible
text (a run of non-space characters in one text node) is on one line; (2) so is all the
text of each atom (header cells, service names, instance ids, badges, ages, times,
metadata chips); (3) a `.clip` whose content is wider than its box (`scrollWidth >
clientWidth`) is drawn with an ellipsis and sits in a button whose `title` is its whole
text; (4) the document is no wider than the window. Values expanded on demand are left
out of (1) and (2): they wrap anywhere, on purpose."""

LONG_VALUE = "".join(f"{n:03d}" for n in range(100))
"""300 characters without a space."""
LONG_URL = (
    "https://payments.internal.example.com/api/v2/health/dependencies"
    "?verbose=true&include=queues,ledgers,fx-rates&region=eu-west-1"
)
PAYMENTS_METADATA = {
    "build": LONG_VALUE,
    "host": "ip-10-0-3-17.eu-west-1.compute.internal",
    "labels": {"team": "payments", "tier": "gold"},
    "pid": 48213,
    "url": LONG_URL,
    "version": "2.14.3",
    "zone": "eu-west-1b",
}
LONG_NAME = "a-service-with-a-rather-long-name-for-a-phone"
LONG_ID = "instance-with-a-long-identifier-0123456789"
FLEET_SUMMARY = "5 services · 12 instances: 9 online, 2 unhealthy, 1 offline · 1 in maintenance"
DRAIN_REASON = "deploying 2.14.4 to the eu-west fleet before the evening peak, then checking the dashboards"


@pytest.fixture
async def fleet_router(routers: InProcessRouters) -> Router:
    return await routers.start(lease_policy=STEADY_POLICY, admin_token=TOKEN)


async def register_fleet(client: ServiceClient, nc: NatsClient) -> None:
    """5 services, 12 instances: 9 ONLINE (kept alive by `client`), 2 UNHEALTHY
    (registered once over plain NATS, never renewed) and 1 OFFLINE (deregistered)."""
    for instance in ("payments-0", "payments-1", "payments-2"):
        await client.register("payments", instance, PAYMENTS_METADATA)
    await client.set_maintenance("payments", "payments-1", True, reason=DRAIN_REASON)
    for instance in ("orders-1", "orders-2"):
        await client.register("orders", instance, {"version": "5.0.1", "zone": "eu-west-1a"})
    await client.register("inventory", "inventory-0", {"version": "1.0.0"})
    for instance in ("notifications-0", "notifications-1", "notifications-2"):
        await client.register("notifications", instance, {"channel": "email"})
    await client.deregister("notifications", "notifications-2")
    await client.register(
        LONG_NAME,
        LONG_ID,
        {"version": "1.4.2", "region": "europe-west-somewhere", "labels": {"tier": "gold"}},
    )
    for service, instance in (("payments", "payments-3"), ("orders", "orders-3")):
        request = {
            "service_name": service,
            "instance_id": instance,
            "metadata": PAYMENTS_METADATA if service == "payments" else {},
            "session_id": f"console-session-{instance}",
        }
        reply = await nats_request(nc, REGISTER_SUBJECT, request)
        assert reply["status"] == 201, reply


async def assert_laid_out(page: Page) -> None:
    """Fail with every problem `LAYOUT_PROBLEMS` finds on `page`, one a line."""
    problems: list[str] = await page.evaluate(LAYOUT_PROBLEMS)
    assert not problems, "\n".join(["the layout is wrong:", *problems])


@pytest.mark.parametrize(
    ("width", "height"),
    [(1280, 800), (390, 844), (1920, 1080)],
    ids=["1280px", "390px-phone", "1920px"],
)
async def test_no_word_or_id_is_broken_and_a_long_value_is_cut_with_its_whole_on_demand(
    browser: Browser,
    fleet_router: Router,
    nats_server: NatsServerProcess,
    nc: NatsClient,
    tmp_path: Path,
    width: int,
    height: int,
) -> None:
    """A fleet with real metadata (a 300-character value, a long URL, a long service name
    and instance id), measured as `LAYOUT_PROBLEMS` says: the text boxes of every word,
    header, name, id, badge, age and date (`Range.getClientRects()`) lie on one line;
    whatever is cut has an ellipsis and its whole text in its button's title; the page is
    no wider than the window. Above phone width neither table scrolls either. The long
    value is then expanded (a click, a tap on the phone) and the URL with the keyboard.

    Screenshots: console-<width>.png, console-<width>-metadata-expanded.png,
    console-<width>-long-names.png."""
    from playwright.async_api import expect

    phone = width < 500
    async with ServiceClient(nats_server.url) as client:
        await register_fleet(client, nc)
        page, watch = await open_console(browser, fleet_router, width, height)
        await enter_token(page)
        # Services and instances are counted apart.
        await expect(page.locator("#totals")).to_have_text(FLEET_SUMMARY, timeout=10_000)
        await page.get_by_role("button", name="payments", exact=True).click()
        rows = page.locator("#instances-body tr")
        await expect(rows).to_have_count(4)
        await expect(page.locator("#detail-totals")).to_have_text(
            "4 instances: 3 online, 1 unhealthy, 0 offline · 1 in maintenance"
        )
        drained = page.locator("tr[data-instance='payments-1']")
        await expect(drained.locator(".badge-maintenance")).to_have_text("MAINTENANCE")
        await expect(drained.locator(".maintenance-why")).to_have_attribute(
            "title", f"by owner: {DRAIN_REASON}"
        )
        await expect(drained.locator(".badge-maintenance")).to_have_attribute(
            "title", re.compile(r"^In maintenance since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\+9 \(UTC .*Z\)$")
        )
        await screenshot(page, tmp_path, f"console-{width}.png")
        await assert_laid_out(page)
        if not phone:
            # The services take the room they need (at 1920 px beside the instances,
            # where a name is cut at 16 rem) and neither table scrolls.
            cut = await page.evaluate(
                """() => Array.from(document.querySelectorAll(".service-button .clip"))
                     .filter((clip) => clip.scrollWidth > clip.clientWidth)
                     .map((clip) => clip.textContent)"""
            )
            assert cut == ([LONG_NAME] if width >= 1700 else [])
            for table in ("table.services", ".table-scroll"):
                overflow = await page.locator(table).evaluate("t => t.scrollWidth - t.clientWidth")
                assert overflow <= 0, f"{table} is {overflow} px too wide"

        row = rows.filter(has=page.locator(".instance-id", has_text="payments-1"))
        build = row.locator("button.chip", has_text="build=")
        clip = build.locator(".clip")
        assert await clip.evaluate("c => c.scrollWidth > c.clientWidth"), "the long value is not cut"
        await expect(build).to_have_attribute("title", f"build={LONG_VALUE}")
        await expect(build).to_have_attribute("aria-expanded", "false")
        if phone:
            await build.tap()
        else:
            await build.click()
        await expect(build).to_have_attribute("aria-expanded", "true")
        assert await clip.evaluate("c => c.scrollWidth <= c.clientWidth"), "still cut once expanded"
        url = row.locator("button.chip", has_text="url=")
        await url.focus()
        await page.keyboard.press("Enter")
        await expect(url).to_have_attribute("aria-expanded", "true")
        await assert_laid_out(page)  # the rest still whole, no sideways scroll
        await build.scroll_into_view_if_needed()
        await screenshot(page, tmp_path, f"console-{width}-metadata-expanded.png")
        await page.keyboard.press("Enter")
        await expect(url).to_have_attribute("aria-expanded", "false")
        await expect(url).to_be_focused()

        # A long service name and instance id, chosen: whole where there is room, cut
        # (with the whole on demand) where there is not, never broken.
        await page.get_by_role("button", name=LONG_NAME).click()
        await expect(page.locator("#detail-title")).to_have_text(f"Instances of {LONG_NAME}")
        await expect(page.locator(f"tr[data-instance='{LONG_ID}'] .instance-id")).to_be_visible()
        await screenshot(page, tmp_path, f"console-{width}-long-names.png")
        await assert_laid_out(page)
    assert watch.errors == []


def local_time(at: datetime, zone: str) -> str:
    """What the console shows for `at` in `zone`: 2026-12-06 23:47:37 UTC+9."""
    local = at.astimezone(ZoneInfo(zone))
    offset = local.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    name = "UTC" if minutes == 0 else f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")
    return f"{local:%Y-%m-%d %H:%M:%S} {name}"


def utc_time(at: datetime) -> str:
    """ISO 8601 in UTC to the millisecond, as JavaScript's toISOString() writes it."""
    utc = at.astimezone(ZoneInfo("UTC"))
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


@pytest.mark.parametrize("zone", [TIME_ZONE, "Asia/Kolkata", "America/New_York", "UTC"])
async def test_times_are_local_with_their_zone_and_exact_utc_on_demand(
    browser: Browser,
    console_router: Router,
    nats_server: NatsServerProcess,
    tmp_path: Path,
    zone: str,
) -> None:
    """In Chromium set to `zone` with the en-US locale (12-hour, month/day/year by
    default), the registration time reads as `local_time` says, to the second, next to
    the API's value; its exact UTC value is in the title and shown by a click.

    Screenshot (Asia/Tokyo): console-utc-on-demand.png."""
    from playwright.async_api import expect

    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1", {"zone": "a"})
        api = f"http://127.0.0.1:{console_router.http_port}/api/v1/admin"
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http,
            http.get(f"{api}/services/orders?status=any") as response,
        ):
            body = await response.json()
        registered_at = datetime.fromisoformat(body["instances"][0]["registered_at"])

        page, watch = await open_console(browser, console_router, 1280, 800, time_zone=zone)
        await enter_token(page)
        await page.get_by_role("button", name="orders", exact=True).click()
        registered = page.locator("tr[data-instance='orders-1'] td.registered button.time")
        await expect(registered.locator(".clip")).to_have_text(local_time(registered_at, zone))
        await expect(registered).to_have_attribute("title", f"UTC {utc_time(registered_at)}")
        heartbeat = page.locator("tr[data-instance='orders-1'] td.heartbeat button.time .clip")
        await expect(heartbeat).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"))
        shown = await page.locator("main").inner_text()
        assert not re.search(r"\b[AP]M\b|\d{1,2}/\d{1,2}/\d{4}", shown), shown

        await registered.click()
        utc = registered.locator(".utc")
        await expect(utc).to_be_visible()
        await expect(utc).to_have_text(f"UTC {utc_time(registered_at)}")
        if zone == TIME_ZONE:
            await screenshot(page, tmp_path, "console-utc-on-demand.png", full_page=False)
        await registered.press("Enter")
        await expect(utc).to_be_hidden()
    assert watch.errors == []

async def test_a_console_without_its_stream_shows_its_data_as_stale_until_it_is_back(
    browser: Browser, routers: InProcessRouters, nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    """The router goes away and comes back on the same port. While it is away the console
    says it is disconnected and its view is visibly stale: dimmed, no badge in its live
    colour, ages stopped at the last word from the router and saying so ("≤ 1 s before
    21:07:12"), and "as of" that time above it. It reconnects by itself, reads the new
    router's snapshot and is live again.

    Screenshots: console-stale.png, console-390-stale.png (scrolled to the instance),
    console-live-again.png."""
    from playwright.async_api import expect

    first = await routers.start(lease_policy=POLICY)
    port = first.http_port
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1", {"zone": "a"})
        for service in ("billing", "inventory", "notifications", "payments"):
            await client.register(service, f"{service}-1")  # a page a phone must scroll
        page, _ = await open_console(browser, first, 1280, 800)
        connection = page.locator("#connection")
        await expect(connection).to_have_attribute("data-state", "live")
        await page.get_by_role("button", name="orders", exact=True).click()
        row = page.locator("tr[data-instance='orders-1']")
        badge = row.locator(".badge")
        await expect(badge).to_have_text("ONLINE")
        await expect(row.locator(".age")).to_have_text(re.compile(r"( ago|just now)$"))
        live_colour = await badge.evaluate("b => getComputedStyle(b).backgroundColor")
        view = page.locator("#console")
        as_of = page.locator("#as-of")
        await expect(as_of).to_be_hidden()
        stale = re.compile(r"\bstale\b")
        await expect(view).not_to_have_class(stale)

        await first.stop()
        routers.started.remove(first)
        await expect(connection).to_have_attribute("data-state", "disconnected")
        await expect(connection).to_contain_text("Disconnected")
        await expect(view).to_have_class(stale)
        await expect(as_of).to_be_visible()
        await expect(as_of).to_contain_text(
            re.compile(r"As of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\+9")
        )
        await expect(row.locator(".age")).to_have_text(re.compile(r"before \d\d:\d\d:\d\d$"))
        # Nobody acts on old news: the operator's buttons are off.
        await expect(row.get_by_role("button", name="Drain…")).to_be_disabled()
        await expect(badge).not_to_have_css("background-color", live_colour)
        opacity = await page.locator("#detail").evaluate("p => getComputedStyle(p).opacity")
        assert float(opacity) < 1
        # Nothing shown is newer than its "as of" (all ISO 8601 in UTC, to the millisecond).
        as_of_at = await as_of.locator("time").get_attribute("datetime")
        shown = await page.locator("#instances time").evaluate_all(
            "times => times.map((time) => time.getAttribute('datetime'))"
        )
        assert as_of_at and shown and max(shown) <= as_of_at, (as_of_at, shown)
        await screenshot(page, tmp_path, "console-stale.png", full_page=False)
        # On a phone, scrolled down to the instance: "as of" is still in sight.
        await page.set_viewport_size({"width": 390, "height": 844})
        await row.scroll_into_view_if_needed()
        await expect(row).to_be_in_viewport()
        assert await page.evaluate("document.scrollingElement.scrollTop") > 0
        await expect(as_of).to_be_in_viewport()
        await screenshot(page, tmp_path, "console-390-stale.png", full_page=False)
        await page.set_viewport_size({"width": 1280, "height": 800})

        await routers.start(lease_policy=POLICY, http_port=port)
        await client.register("orders", "orders-after")
        await expect(connection).to_have_attribute("data-state", "live", timeout=30_000)
        after = page.locator("tr[data-instance='orders-after']")
        await expect(after).to_be_visible(timeout=10_000)
        await expect(view).not_to_have_class(stale)
        await expect(as_of).to_be_hidden()
        await expect(after.locator(".age")).to_have_text(re.compile(r"( ago|just now)$"))
        await expect(after.locator(".badge")).to_have_css("background-color", live_colour)
        await expect(after.get_by_role("button", name="Drain…")).to_be_enabled()
        await expect(page.locator("#detail")).to_have_css("opacity", "1")
        await screenshot(page, tmp_path, "console-live-again.png", full_page=False)

async def test_an_operator_drains_ends_the_drain_and_deregisters_from_the_console(
    browser: Browser, console_router: Router, nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    """With the token: "Drain…" asks for a reason in the row, and the instance is in
    maintenance (by admin, with that reason), out of discovery; "End maintenance" puts it
    back; "Deregister…" asks again, and the instance is OFFLINE, and its client told so
    on its next heartbeat (it does not register it again).

    Screenshots: console-drain-asked.png, console-maintenance.png, console-390-maintenance.png."""
    from playwright.async_api import expect

    removed: list[tuple[str, str]] = []
    async with (
        ServiceClient(nats_server.url, on_removed=lambda *key: removed.append(key)) as owner,
        ServiceClient(nats_server.url) as caller,
    ):
        await owner.register("orders", "orders-1", {"zone": "a"})
        await owner.register("orders", "orders-2", {"zone": "b"})
        page, watch = await open_console(browser, console_router, 1280, 800)
        await enter_token(page)
        await page.get_by_role("button", name="orders", exact=True).click()
        row = page.locator("tr[data-instance='orders-1']")
        await expect(row.locator(".badge-online")).to_have_text("ONLINE")

        await row.get_by_role("button", name="Drain…").click()
        reason = row.get_by_role("textbox", name="Why orders-1 goes into maintenance")
        await reason.fill("bad disk")
        await screenshot(page, tmp_path, "console-drain-asked.png", full_page=False)
        await row.get_by_role("button", name="Drain", exact=True).click()
        await expect(row.locator(".badge-maintenance")).to_have_text("MAINTENANCE")
        await expect(row.locator(".maintenance-why")).to_have_text("by admin: bad disk")
        await expect(page.locator("#action-status")).to_have_text("orders-1 is in maintenance.")
        await expect(page.locator("#detail-totals")).to_have_text(
            "2 instances: 2 online, 0 unhealthy, 0 offline · 1 in maintenance"
        )
        held = [(i.instance_id, i.maintenance) for i in await caller.get_instances("orders", status=None)]
        assert [(name, m.by, m.reason) for name, m in held if m] == [("orders-1", "admin", "bad disk")]
        assert [i.instance_id for i in await caller.get_instances("orders")] == ["orders-2"]
        await screenshot(page, tmp_path, "console-maintenance.png", full_page=False)
        await page.set_viewport_size({"width": 390, "height": 844})
        await assert_laid_out(page)
        await screenshot(page, tmp_path, "console-390-maintenance.png")
        await page.set_viewport_size({"width": 1280, "height": 800})

        await row.get_by_role("button", name="End maintenance").click()
        await expect(row.locator(".badge-maintenance")).to_have_count(0)
        assert [i.instance_id for i in await caller.get_instances("orders")] == ["orders-1", "orders-2"]

        await row.get_by_role("button", name="Deregister…").click()
        await row.get_by_role("button", name="Yes, deregister").click()
        await expect(row.locator(".badge-offline")).to_have_text("OFFLINE")
        await expect(row.get_by_role("button")).not_to_have_count(0)  # (the id, no actions)
        await expect(row.get_by_role("button", name="Drain…")).to_have_count(0)

        async def told() -> bool:
            return removed == [("orders", "orders-1")]

        await eventually(told, timeout=10, what="its client to be told an operator removed it")
        assert owner.registered == [("orders", "orders-2")]
    assert watch.errors == []


async def test_the_console_files_are_served_with_their_types_and_a_strict_policy(
    console_router: Router,
) -> None:
    expected = {
        "/": "text/html",
        "/console/console.js": "text/javascript",
        "/console/console.css": "text/css",
        "/console/favicon.svg": "image/svg+xml",
    }
    async with aiohttp.ClientSession(f"http://127.0.0.1:{console_router.http_port}") as http:
        for path, content_type in expected.items():
            async with http.get(path) as response:  # no token: the files hold no data
                assert response.status == 200, path
                assert response.content_type == content_type, path
                assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                body = await response.read()
                assert len(body) > 100
        async with http.get("/console/nope.js") as response:
            assert response.status == 401  # anything else wants the token, as before
        async with http.get("/") as response:
            page = await response.text()
    assert "<script>" not in page and "style=" not in page  # nothing inline: CSP self only
    assert 'lang="en"' in page and 'name="viewport"' in page
