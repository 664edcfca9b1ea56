"""Protected tags in Chromium: an administrator adds a rule on its page (a bad one first,
answered with its error), and the image table shows the lock; the preview keeps the item."""

import pytest
from playwright.sync_api import expect

from tests.support.browser import OUTPUT, login
from tests.support.factories import sample_repo


@pytest.fixture
def admin_page(browser, live_server, transactional_db):
    """An administrator who may change protected tags (and delete)."""
    page = login(browser, live_server, "ada", ["manage_protected_tags", "delete_images"])
    yield page
    page.context.close()
    assert page.csp_violations == []


def test_an_administrator_protects_latest_and_the_table_shows_the_lock(admin_page,
                                                                     live_server):
    page = admin_page
    repo, index, images, loose = sample_repo()
    page.goto(f"{live_server.url}/protected-tags/")
    page.fill("#id_tag_regex", "(latest")
    page.click("#save-rule")
    expect(page.locator("#tag_regex-error")).to_contain_text("not a valid regular expression")
    page.fill("#id_tag_regex", "^latest$")
    page.fill("#id_repositories", "team/*")
    page.click("#save-rule")
    expect(page.locator("table.protected-tags tbody tr")).to_have_count(1)
    expect(page.locator("table.audit")).to_contain_text("Added")
    page.goto(f"{live_server.url}/repositories/team/app")
    lock = page.locator("td.name .lock")
    expect(lock).to_have_count(1)
    expect(lock).to_have_attribute("title", "Protected: protected tag latest (rule "
                                            "'^latest$' on team/*)")
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "protected-tag-lock.png"), full_page=True)
