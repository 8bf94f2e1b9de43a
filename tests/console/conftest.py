"""Browser fixtures for the web console: Debian's Chromium driven by Playwright (headless, no
browser download), the API under uvicorn on a loopback port, and a page that fails the test
on any script error and refuses every request that leaves the machine (the console must work
offline). Screenshots go to ``test-output/console/``.

Chromium comes from Debian's package (``apt-get install chromium``; ``.ci/run`` installs it);
``FLEET_CHROMIUM`` points elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Playwright, Request, Route, sync_playwright

from core.app import product_topics
from core.auth.service import create_principal_with_credential
from core.config import Settings
from core.db import make_engine, session_scope
from core.localkafka import ensure_topics
from tests.helpers import stack_settings
from tests.ingestion.conftest import client, db_url  # noqa: F401 - API test fixtures
from tests.ota.harness import serve

CHROMIUM = os.environ.get("FLEET_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "console"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Chromium logs every 4xx answer as a console error; the console shows those to the user
# itself (a 401 before login, a 409 for an action not allowed now), so they are not faults.
_HTTP_STATUS_LOG = re.compile(
    r"Failed to load resource: the server responded with a status of 4\d\d"
)


# Package scope, not session: while Playwright's sync API is open it keeps an event loop
# running on the main thread, which would break every later test that calls asyncio.run().
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: `apt-get install chromium` "
            "(or set FLEET_CHROMIUM to a Chromium binary)"
        )
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
    yield browser
    browser.close()


@pytest.fixture
def settings(tmp_path: Path, kafka_bootstrap: str, db_url: str) -> Settings:  # noqa: F811
    """As ``tests.ingestion.conftest.settings``, but the topics are created on a thread of
    their own: Playwright's sync API keeps an event loop running on the main thread."""
    stack = stack_settings(tmp_path, kafka_bootstrap, db_url, uuid.uuid4().hex[:10])
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, ensure_topics(kafka_bootstrap, product_topics(stack))).result()
    return stack


@pytest.fixture
def console_url(settings: Settings) -> Iterator[str]:  # noqa: F811 - the imported fixture
    """The API (and so the console) under uvicorn on a free loopback port."""
    with serve(settings) as base_url:
        yield base_url


@dataclass
class Watched:
    """A page with what it did wrong: script errors and requests to other hosts."""

    page: Page
    errors: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def log_in(self, token: str) -> None:
        self.page.fill("#login-token", token)
        self.page.click("#login-submit")
        self.page.wait_for_selector(".topbar:not([hidden])")

    def log_out(self) -> None:
        self.page.click("#logout")
        self.page.wait_for_selector("#login:not([hidden])")


@pytest.fixture
def console(browser: Browser, console_url: str) -> Iterator[Watched]:
    context = browser.new_context(base_url=console_url, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    watched = Watched(page)

    def refuse_other_hosts(route: Route, request: Request) -> None:
        host = urlsplit(request.url).hostname
        if request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            route.continue_()
        else:
            watched.external.append(request.url)
            route.abort()

    context.route("**/*", refuse_other_hosts)
    page.on("pageerror", lambda exc: watched.errors.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            watched.errors.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and not _HTTP_STATUS_LOG.search(msg.text)
            else None
        ),
    )
    page.goto("/console")
    yield watched
    context.close()
    assert not watched.external, f"the console reached for other hosts: {watched.external}"
    assert not watched.errors, f"the console had script errors: {watched.errors}"


def new_operator(stack: Settings, role: str = "fleet_operator") -> tuple[str, str]:
    """A principal of ``role`` with a credential: (name, token)."""
    name = f"console-{role}-{uuid.uuid4().hex[:8]}"
    engine = make_engine(stack)
    try:
        with session_scope(engine) as session:
            _principal, token = create_principal_with_credential(session, name, role)
    finally:
        engine.dispose()
    return name, token
