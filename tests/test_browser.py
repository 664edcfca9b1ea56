"""The real page in Chromium (Debian's /usr/bin/chromium driven by Playwright)."""

import os
import shutil
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from .factories import digest, sample_repo

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OUTPUT = Path(__file__).resolve().parent.parent / "test-output"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (make test installs it)")
# Playwright's sync API runs an event loop in this thread; the Django calls here are sync.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server, transactional_db):
    get_user_model().objects.create_user("alice", password="pw-alice-123")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.goto(f"{live_server.url}/repositories/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice-123")
    page.click("button[type=submit]")
    page.wait_for_url("**/repositories/")
    yield page
    context.close()


def digests(page):
    return page.eval_on_selector_all("tbody.item", "els => els.map(e => e.dataset.digest)")


def test_search_filter_sort_and_expand_on_the_real_page(page, live_server):
    repo, index, images, loose = sample_repo()
    page.goto(f"{live_server.url}/repositories/")
    page.click("text=team/app")
    page.wait_for_selector("table.images")
    assert len(digests(page)) == 5

    # Search as you type: only the table is swapped, and the URL carries the state.
    page.evaluate("window.__marker = 1")
    page.fill("#search", "1.2")
    page.wait_for_function("document.querySelectorAll('tbody.item').length === 1")
    assert digests(page) == [digest("img2")]
    assert "search=1.2" in page.url
    assert page.evaluate("window.__marker") == 1  # no full reload

    page.fill("#search", "")
    page.wait_for_function("document.querySelectorAll('tbody.item').length === 5")
    page.select_option("#filter", "untagged")
    page.wait_for_function("document.querySelectorAll('tbody.item').length === 1")
    assert digests(page) == [loose.digest] and "filter=untagged" in page.url

    page.select_option("#filter", "image")
    page.wait_for_function("document.querySelectorAll('tbody.item').length === 4")
    page.click("a.sort[data-sort=size]")  # first click: largest first
    page.wait_for_function("location.search.includes('sort=-size')")
    assert digests(page) == [digest(s) for s in ("img2", "img1", "img0", "loose")]
    page.click("a.sort[data-sort=size]")  # second click reverses
    page.wait_for_function("location.search.includes('sort=size')")
    assert digests(page) == [digest(s) for s in ("loose", "img0", "img1", "img2")]
    assert "filter=image" in page.url

    # The link reopens the same view.
    page.goto(page.url)
    assert digests(page) == [digest(s) for s in ("loose", "img0", "img1", "img2")]
    assert page.input_value("#filter") == "image"

    # Expand an index: its children appear indented, with platforms.
    page.select_option("#filter", "index")
    page.wait_for_function("document.querySelectorAll('tbody.item').length === 1")
    page.click("button.expand")
    page.wait_for_selector(f"#children-{index.id} tr.child")
    assert page.locator(f"#children-{index.id} tr.child").count() == 2
    assert page.get_attribute("button.expand", "aria-expanded") == "true"
    assert "linux/arm64" in page.inner_text(f"#children-{index.id}")
    page.click("button.expand")
    assert page.get_attribute("button.expand", "aria-expanded") == "false"
    assert page.locator(f"#children-{index.id}").is_hidden()

    # Selecting enables "Preview and delete".
    assert page.is_disabled("#preview-delete")
    page.check("input.select-item")
    assert page.inner_text("#selected-count") == "1 selected"
    assert page.is_enabled("#preview-delete")
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "image-management.png"), full_page=True)
