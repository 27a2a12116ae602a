"""Browser tests: Debian's Chromium, headless, driven by Playwright through the real portal.

The app runs in pytest-django's `live_server` with the DNA simulator (`live`,
re-exported from the provider tests), so a terminal payment is real end to
end. Every page visited is checked with axe-core (WCAG 2.0/2.1 A and AA rules)
and saved as a full-page screenshot under artifacts/screenshots/.

Chromium is Debian's package (/usr/bin/chromium, or CHROMIUM_PATH); Playwright
only drives it and never downloads a browser. No Chromium means a failure that
says how to install it, never a skip. Test modules here mark themselves `browser`:
they run with `make test-browser`, not `make test`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog

from tests.providers.conftest import dna, http, live, sim_terminal  # noqa: F401
from tests.subscriptions.conftest import deliver, gc_api  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "static" / "vendor" / "axe-4.14.1.min.js"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
PASSWORD = "pass-word-123"  # tests.factories.UserFactory's
TIMEOUT_MS = 10_000

log = structlog.get_logger("tests.browser")

_AXE_RUN = """async (tags) => {
  const result = await axe.run(document, {runOnly: {type: 'tag', values: tags}});
  return result.violations.map(v => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.map(n => n.target.join(' ')),
  }));
}"""


def require_chromium(path: str) -> None:
    """Fail (never skip) with the way to install it when there is no Chromium at `path`."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"Chromium is needed for the browser tests and was not found at {path}. "
            "Install Debian's package (`apt-get update && apt-get install -y chromium`) "
            "or set CHROMIUM_PATH.",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def browser_context():
    """One headless Chromium (fresh profile in a temporary directory) per test module."""
    require_chromium(CHROMIUM)
    if not AXE.is_file():
        pytest.fail(f"axe-core is missing: {AXE}", pytrace=False)
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="primoro-chromium-")
    # Playwright's sync API keeps an asyncio loop on this thread while it runs; the ORM
    # calls the tests make between browser steps are ordinary blocking ones. Only here.
    with pytest.MonkeyPatch.context() as env, sync_playwright() as playwright:
        env.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            locale="en-GB",
            timezone_id="UTC",
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


SETTLE_SECONDS = 5.0


@pytest.fixture
def page(browser_context, request):
    """A fresh tab with no session; closed (and cookies cleared) after the test.

    Before the test database is flushed the tab is left quiet: it navigates away (so the
    page's last words, such as the virtual terminal's abandon beacon, are sent now rather
    than while the tables are being truncated), every request it made is waited for, and
    then the live server's database sessions are waited for. A request still inside a
    transaction while TRUNCATE runs deadlocks the flush.
    """
    browser_context.clear_cookies()
    tab = browser_context.new_page()
    in_flight: set = set()

    def sent(sent_request):
        in_flight.add(sent_request)

    def done(answered_request):
        in_flight.discard(answered_request)

    tab.on("request", sent)
    tab.on("requestfinished", done)
    tab.on("requestfailed", done)
    yield tab
    try:
        tab.goto("about:blank")
        deadline = time.monotonic() + SETTLE_SECONDS
        while in_flight and time.monotonic() < deadline:
            tab.wait_for_timeout(20)
    finally:
        tab.close()
        browser_context.clear_cookies()
    if "live_server" in request.fixturenames:
        wait_for_quiet_database()


def wait_for_quiet_database(timeout: float = SETTLE_SECONDS) -> None:
    """Wait until no other session on the test database is running or holding a transaction."""
    from django.db import connection

    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state IS NOT NULL AND state <> 'idle'"
            )
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.02)
    log.warning("database_not_quiet_before_flush", seconds=timeout)


@dataclass
class Violation:
    page: str
    id: str
    impact: str
    help: str
    nodes: list[str]

    def __str__(self):
        targets = "; ".join(self.nodes[:5]) + (" ..." if len(self.nodes) > 5 else "")
        return f"[{self.page}] {self.id} ({self.impact}): {self.help} -> {targets}"


@dataclass
class Accessibility:
    """axe-core on each page visited, a screenshot of each; violations gathered to report."""

    violations: list[Violation] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    def check(self, page, name: str, *, screenshot: bool = True) -> list[Violation]:
        page.wait_for_load_state("load")
        page.add_script_tag(path=str(AXE))
        found = [Violation(page=name, **v) for v in page.evaluate(_AXE_RUN, WCAG_TAGS)]
        if screenshot:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        self.checked.append(name)
        self.violations.extend(found)
        for violation in found:
            log.warning("axe_violation", detail=str(violation))
        return found

    def assert_clean(self) -> None:
        assert self.checked, "no page was checked"
        assert not self.violations, "WCAG 2.1 AA violations (axe-core):\n" + "\n".join(
            str(v) for v in self.violations
        )


@pytest.fixture
def a11y():
    return Accessibility()


def sign_in(page, base_url: str, user) -> None:
    """Sign in through the form (the keyboard-only sign-in has its own test)."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")


def tab_to(page, selector: str, *, limit: int = 80, backwards: bool = False) -> None:
    """Press Tab (or Shift+Tab) until the focused element matches `selector`."""
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
        if page.evaluate(
            "s => document.activeElement && document.activeElement.matches(s)", selector
        ):
            return
    raise AssertionError(f"{selector} could not be reached with Tab in {limit} presses")


def wait_for_text(page, selector: str, text: str, *, timeout: float = 10.0) -> float:
    """Wait until `text` is inside `selector`; the seconds it took."""
    started = time.monotonic()
    page.wait_for_function(
        "([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
        arg=[selector, text],
        timeout=timeout * 1000,
        polling=20,
    )
    return time.monotonic() - started


def assert_focus_kept(page, element_id: str, *, polls: int = 3) -> None:
    """While the page polls (at least `polls` status requests), focus stays on `element_id`.

    Counts the live parts' `part=text` requests, so a page that stopped polling fails here too.
    """
    seen: list[str] = []

    def count(request):
        if "part=text" in request.url:
            seen.append(request.url)

    page.on("request", count)
    try:
        deadline = time.monotonic() + 10
        while len(seen) < polls and time.monotonic() < deadline:
            page.wait_for_timeout(100)
            focused = page.evaluate("document.activeElement && document.activeElement.id")
            assert focused == element_id, f"focus moved from #{element_id} to #{focused}"
    finally:
        page.remove_listener("request", count)
    assert len(seen) >= polls, f"only {len(seen)} status polls in 10 s"
    assert page.evaluate("document.activeElement.id") == element_id
