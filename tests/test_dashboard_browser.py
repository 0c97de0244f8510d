"""End to end in headless Chromium (Debian's `chromium`, driven by Playwright): `reserves serve`
on the real Redis, the dashboard opened with the admin token, reserves topped up and locked
through the API, and the utilization bar seen changing colour as the page polls.

The screenshot is saved under the test's tmp_path; with RESERVES_UPDATE_SCREENSHOT=1 it also
replaces docs/dashboard.png (the one the README shows)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_server import ADMIN, ADMIN_TOKEN, SERVICE, Server, api_server
from tests.services import delete_prefix_at, unavailable

pytestmark = pytest.mark.real

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"
WAIT_MS = 20_000  # a poll is 1.5 s and a monitor check 1 s: this is only a bound for a hang
COLOURS = {"healthy": "rgb(46, 157, 82)", "warning": "rgb(240, 138, 36)",
           "critical": "rgb(217, 54, 54)"}


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium): "
                    "skipping the dashboard browser test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def server(tmp_path: Path, redis_url: str, key_prefix: str) -> Iterator[Server]:
    env = {"RESERVES_REDIS_URL": redis_url, "RESERVES_KEY_PREFIX": key_prefix,
           "RESERVES_PERSIST_IN_PROCESS": "1"}
    with api_server(tmp_path, env=env) as started:
        yield started
    delete_prefix_at(redis_url, key_prefix)


def _post(server: Server, path: str, headers: dict[str, str], body: dict[str, Any]) -> None:
    response = httpx.post(server.url + path, headers=headers, json=body, timeout=10.0)
    assert response.status_code == 200, response.text


def _top_up(server: Server, currency: str, account_type: str, amount: str, ref: str) -> None:
    _post(server, f"/wallet/reserves/{currency}/{account_type}/topup", ADMIN,
          {"amount": amount, "source_reference": ref})


def _lock(server: Server, currency: str, account_type: str, amount: str, ref: str) -> None:
    _post(server, f"/wallet/reserves/{currency}/{account_type}/reserve", SERVICE,
          {"amount": amount, "reference_id": ref, "operation_type": "swap"})


def test_the_bar_changes_colour_as_reserves_are_locked(browser: Any, server: Server,
                                                       tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 980})
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(server.url + "/dashboard")
    page.fill("#token", "not-the-token")
    page.click("#login button[type=submit]")
    page.wait_for_selector("#login-error:has-text('not an admin token')")

    page.fill("#token", ADMIN_TOKEN)
    page.click("#login button[type=submit]")
    card = '.card[data-label="RESERVE_USDT_CRYPTO"]'
    page.wait_for_selector(card)

    _top_up(server, "USDT", "crypto", "10000", "treasury-1")
    _top_up(server, "UGX", "fiat", "50000000", "treasury-2")
    _top_up(server, "KES", "fiat", "250000", "treasury-3")
    page.wait_for_selector(f"{card} .total:text-is('10000.0')")
    fill = page.locator(f"{card} .bar .fill")
    assert "status-healthy" in (fill.get_attribute("class") or "")
    assert fill.evaluate("e => getComputedStyle(e).backgroundColor") == COLOURS["healthy"]

    _lock(server, "KES", "fiat", "140000", "kes-swap-1")  # 56 %: moderate
    _lock(server, "USDT", "crypto", "8000", "swap-1")  # 80 %: warning
    page.wait_for_selector(f"{card} .bar .fill.status-warning")
    assert fill.evaluate("e => getComputedStyle(e).backgroundColor") == COLOURS["warning"]
    assert page.get_attribute(card, "data-status") == "warning"

    _lock(server, "USDT", "crypto", "1200", "swap-2")  # 92 %: critical
    page.wait_for_selector(f"{card} .bar .fill.status-critical")
    assert fill.evaluate("e => getComputedStyle(e).backgroundColor") == COLOURS["critical"]
    assert page.inner_text(f"{card} .locked") == "9200.0"
    assert page.inner_text(f"{card} .available") == "800.0"
    assert page.get_attribute(f"{card} .bar", "aria-valuenow") == "92.0"

    # The monitor raises the alert, the page shows it and the lock among recent transactions.
    page.wait_for_selector("#alerts li.level-critical:has-text('USDT reserve utilization 92')")
    page.wait_for_selector("#recent td:text-is('swap-2')")
    page.wait_for_function(
        f"document.querySelector('{card} canvas').dataset.points >= 2")  # a line on the chart
    assert errors == []

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("RESERVES_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)
    assert "Traceback" not in server.log()
