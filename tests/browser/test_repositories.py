"""The repositories page in Chromium: search as you type, sort and page, without a reload."""

from playwright.sync_api import expect

from tests.support.browser import OUTPUT, login
from tests.support.factories import many


def test_search_sort_and_page_the_repositories(browser, live_server,
                                               transactional_db):
    many(120)
    page = login(browser, live_server, "rita")
    rows = page.locator("#repo-table tbody tr")
    expect(rows).to_have_count(50)
    expect(page.locator("#repo-summary")).to_have_text("1–50 of 120 repositories")
    page.evaluate("window.__marker = 1")

    page.fill("#repo-search", "team3/")
    expect(page.locator("#repo-summary")).to_have_text("1–17 of 17 repositories")
    assert "search=team3" in page.url

    page.click("a.sort[data-sort=size]")  # largest first, the search kept
    expect(page.locator("th[aria-sort=descending]")).to_contain_text("Size")
    sizes = page.eval_on_selector_all("#repo-table tbody tr td:first-child",
                                      "els => els.map(e => e.textContent.trim())")
    from hubmgr.inventory.models import Repository
    assert sizes == [r.name for r in Repository.objects.filter(name__startswith="team3/")
                     .order_by("-total_size", "-name")]
    # The shares and each repository's chart link came with the swapped table.
    expect(page.locator("#repo-table thead")).to_contain_text("Untagged")
    expect(page.locator("#repo-table thead")).to_contain_text("Stale")
    expect(page.locator("#repo-table td a", has_text="Chart")).to_have_count(17)
    page.screenshot(path=str(OUTPUT / "repositories-search-sort.png"), full_page=True)

    page.fill("#repo-search", "")
    expect(page.locator("#repo-summary")).to_have_text("1–50 of 120 repositories")
    page.click("#repo-table a[rel=next]")
    expect(page.locator("#repo-summary")).to_have_text("51–100 of 120 repositories")
    assert page.evaluate("window.__marker") == 1  # every step swapped the table only
    page.context.close()
    assert page.csp_violations == []
