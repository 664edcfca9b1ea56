"""A logged-in Chromium page for the browser tests (the browser itself: tests/conftest.py)."""

import pytest

from tests.support.browser import login


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
