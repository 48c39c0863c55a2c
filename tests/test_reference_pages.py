"""The API reference page (/docs) works on a network without internet.

A real coordinator process over TLS; Debian's Chromium, headless, may reach nothing but
the coordinator: every other request is aborted (and recorded).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from tests.e2e_support import Pool, pool
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    with pool(tmp_path_factory.mktemp("reference") / "pool") as p:
        yield p


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def offline_page(browser: Browser, coordinator: Pool) -> Iterator[tuple[Page, list[str]]]:
    """A page that can reach the coordinator only, and the other URLs it tried."""
    context = browser.new_context(ignore_https_errors=True)
    blocked: list[str] = []

    def only_the_coordinator(route: Route) -> None:
        url = route.request.url
        if url == coordinator.url or url.startswith(coordinator.url + "/"):
            route.continue_()
        else:
            blocked.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", only_the_coordinator)
    opened = context.new_page()
    yield opened, blocked
    context.close()


def test_swagger_ui_lists_the_operations_offline(
    offline_page: tuple[Page, list[str]], coordinator: Pool
) -> None:
    view, blocked = offline_page
    view.goto(coordinator.url + "/docs")
    exchange = view.locator(".opblock", has_text="/api/v1/workers/{worker_id}/exchange")
    exchange.wait_for()
    assert view.locator(".opblock").count() >= 25
    assert view.locator(".opblock-post", has_text="/api/v1/jobs").count() >= 1
    assert blocked == []


def test_there_is_no_redoc_page(offline_page: tuple[Page, list[str]], coordinator: Pool) -> None:
    # ReDoc fetches its vendor's logo from a CDN whatever it is told; it is not served.
    view, _ = offline_page
    response = view.goto(coordinator.url + "/redoc")
    assert response is not None and response.status == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_the_dashboards_api_link_leads_to_the_offline_reference(
    offline_page: tuple[Page, list[str]], coordinator: Pool
) -> None:
    view, blocked = offline_page
    view.goto(coordinator.url + "/")
    view.click("a[href='/docs']")
    view.locator(".opblock").first.wait_for()
    assert view.url == coordinator.url + "/docs"
    assert blocked == []
