"""The admin console (`GET /`) in a real browser: Debian's headless Chromium, driven by
Playwright, against a router in this process (admin token set, short leases) and a
service instance in a subprocess that is SIGKILLed.

Needs /usr/bin/chromium (`apt-get install -y chromium`; `.ci/run` installs it when apt
is available) and the `playwright` package (the `test` extra; its own browser
download is never used). Without either the tests are skipped, saying which is
missing. Screenshots are kept in the test's tmp dir and copied to `test-artifacts/`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from actors.http_gateway import CONTENT_SECURITY_POLICY
from protocol import LeasePolicy
from sdk import ServiceClient
from tests.support.processes import REPO, ServiceLauncher
from tests.support.routers import InProcessRouters

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


async def open_console(browser: Browser, router: Router, width: int, height: int) -> tuple[Page, PageWatch]:
    page = await browser.new_page(viewport={"width": width, "height": height})
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
        shot = tmp_path / "console.png"
        await page.screenshot(path=str(shot))
        keep_artifact(shot, "console.png")
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

        shot = tmp_path / "console-offline.png"
        await page.screenshot(path=str(shot), full_page=True)
        keep_artifact(shot, "console-offline.png")

    assert await page.evaluate("window.loadedOnce === true"), "the page was reloaded"
    assert watch.errors == []

    # The token stays for the tab: a reload goes straight to the console.
    await page.reload()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    await expect(page.locator("#token-form")).to_be_hidden()


async def test_the_console_at_phone_width_has_no_horizontal_overflow(
    browser: Browser, console_router: Router, nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    async with ServiceClient(nats_server.url) as client:
        await client.register(
            "a-service-with-a-rather-long-name-for-a-phone",
            "instance-with-a-long-identifier-0123456789",
            {"version": "1.4.2", "region": "europe-west-somewhere", "labels": {"tier": "gold"}},
        )
        page, watch = await open_console(browser, console_router, 390, 844)
        await enter_token(page)
        button = page.get_by_role("button", name="a-service-with-a-rather-long-name-for-a-phone")
        await button.click()
        await expect(page.locator("#instances-body tr")).to_have_count(1)
        widths = await page.evaluate(
            "() => [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
        )
        assert max(widths[:2]) <= widths[2], f"horizontal overflow at 390 px: {widths}"
        shot = tmp_path / "console-phone.png"
        await page.screenshot(path=str(shot), full_page=True)
        keep_artifact(shot, "console-phone.png")
    assert watch.errors == []


async def test_the_console_shows_a_lost_stream_and_comes_back_by_itself(
    browser: Browser, routers: InProcessRouters, nats_server: NatsServerProcess
) -> None:
    """The router goes away and comes back on the same port: the console says it is
    disconnected, reconnects, reads the new router's snapshot and goes on live."""
    from playwright.async_api import expect

    first = await routers.start(lease_policy=POLICY)
    port = first.http_port
    page, _ = await open_console(browser, first, 1280, 800)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    await first.stop()
    routers.started.remove(first)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "disconnected")
    await expect(page.locator("#connection")).to_contain_text("Disconnected")
    await routers.start(lease_policy=POLICY, http_port=port)
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-after")
        await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=30_000)
        await expect(page.locator("#services-body tr[data-service='orders']")).to_be_visible(timeout=10_000)


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
