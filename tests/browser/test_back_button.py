"""Back and Forward on a repository's table in Chromium (issue 24): the toolbar (search box,
filter) says what the URL and the rows say, and the next search keeps the filter."""

from urllib.parse import parse_qsl, urlsplit

from playwright.sync_api import expect

from hubmgr.inventory.catalog.store import refresh

from tests.support.browser import wait_for_rows
from tests.support.factories import digest, make_image, make_repo


def shown(page):
    return page.eval_on_selector_all("tbody.item", "els => els.map(e => e.dataset.digest)")


def url_state(page):
    """The URL's search and filter (empty ones left out)."""
    return {k: v for k, v in parse_qsl(urlsplit(page.url).query) if v and k != "sort"}


def toolbar(page):
    return page.input_value("#filter"), page.input_value("#search")


def test_back_and_forward_after_a_filter_and_a_search_keep_the_toolbar_with_the_rows(
        page, live_server):
    repo = make_repo("team/app")
    for n in range(3):
        make_image(repo, f"tagged{n}", tags=[f"1.{n}"], pushed=n + 1)
    loose = [make_image(repo, f"loose{n}", pushed=n + 10) for n in range(3)]
    refresh(repo)
    wanted = loose[1].digest
    query = wanted[7:19]  # a piece of one untagged item's digest
    page.goto(f"{live_server.url}/repositories/team/app")
    wait_for_rows(page, 6)

    page.select_option("#filter", "untagged")
    wait_for_rows(page, 3)
    assert url_state(page) == {"filter": "untagged"}
    page.fill("#search", query)
    wait_for_rows(page, 1)
    assert shown(page) == [wanted]
    assert url_state(page) == {"filter": "untagged", "search": query}

    # Back: the untagged items, and the toolbar says so (it said "All" and empty before).
    page.go_back()
    wait_for_rows(page, 3)
    assert url_state(page) == {"filter": "untagged"}
    assert sorted(shown(page)) == sorted(m.digest for m in loose)
    assert toolbar(page) == ("untagged", "")

    # Back again: everything, no filter.
    page.go_back()
    wait_for_rows(page, 6)
    assert url_state(page) == {}
    assert toolbar(page) == ("", "")

    # Forward twice: the filter, then the search, each with its rows.
    page.go_forward()
    wait_for_rows(page, 3)
    assert toolbar(page) == ("untagged", "")
    page.go_forward()
    wait_for_rows(page, 1)
    assert shown(page) == [wanted]
    assert toolbar(page) == ("untagged", query)

    # Back, and the next search keeps the filter: a tagged item's digest matches nothing.
    page.go_back()
    wait_for_rows(page, 3)
    page.fill("#search", digest("tagged1")[7:19])
    expect(page.locator("#image-table p.empty")).to_contain_text("Untagged")
    assert url_state(page)["filter"] == "untagged"
    page.fill("#search", loose[2].digest[7:19])
    wait_for_rows(page, 1)
    assert shown(page) == [loose[2].digest]
    assert url_state(page) == {"filter": "untagged", "search": loose[2].digest[7:19]}
