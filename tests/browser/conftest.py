"""A logged-in Chromium page for the browser tests (the browser itself: tests/conftest.py)."""

import threading
import time

import pytest

from tests.support.browser import login


@pytest.fixture(autouse=True)
def server_idle_before_flush(request):
    """After a test with the live server, wait until it answers no request (at most 15 s)
    before the database is flushed: a request the page sent as it closed (the policy form's
    live preview fires on change) went on running in the server and deadlocked with the
    flush's TRUNCATE on PostgreSQL, failing the next test too. (Set up after live_server, so
    torn down before it and before the flush.)"""
    if "live_server" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("live_server")
    yield
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(
            "process_request_thread" in thread.name for thread in threading.enumerate()):
        time.sleep(0.05)


@pytest.fixture
def page(browser, live_server, transactional_db):
    """A viewer's page (alice); it must see no Content-Security-Policy violation."""
    page = login(browser, live_server, "alice")
    yield page
    page.context.close()
    assert page.csp_violations == []


@pytest.fixture
def maintainer_page(browser, live_server, transactional_db):
    """A maintainer's page (maria, who may delete)."""
    page = login(browser, live_server, "maria", ["delete_images"])
    yield page
    page.context.close()
    assert page.csp_violations == []
