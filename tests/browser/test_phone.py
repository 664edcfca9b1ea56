"""The Image Management table on a phone (390 x 844) in Chromium: nothing scrolls sideways, and
the preview's reclaim figure and "Delete forever" stay on screen however long the list is;
a viewer's table; copying a pull command with and without the Clipboard API. Every other page
at 390 px, and tap targets of at least 24 x 24 px."""

import pytest
from playwright.sync_api import expect

from hubmgr.inventory.catalog.store import refresh

from tests.support.browser import OUTPUT, login, wait_for_rows
from tests.support.factories import make_image, sample_repo
from tests.support.pages import LOGIN, PERMISSIONS, every_page

PHONE = (390, 844)
# Wider than the viewport: the page, not a scrolling box inside it.
SIDEWAYS = "document.documentElement.scrollWidth - window.innerWidth"


def inside_viewport(page, selector):
    """The element's box lies within the viewport (nothing of it needs a scroll to be seen)."""
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return (box is not None and box["x"] >= 0 and box["y"] >= 0
            and box["x"] + box["width"] <= size["width"]
            and box["y"] + box["height"] <= size["height"]), box


def long_repo():
    """team/app (an index with two children, four images) and 60 images with long tags."""
    repo, *_ = sample_repo()
    for n in range(60):
        make_image(repo, f"long{n}", tags=[f"release-candidate-build-{n:03}-linux-amd64",
                                           f"nightly-{n}"], size=1000 + n, pushed=20 + n)
    refresh(repo)
    return repo


@pytest.fixture
def phone(browser, live_server, transactional_db):
    page = login(browser, live_server, "maria", PERMISSIONS, viewport=PHONE)
    yield page
    page.context.close()
    assert page.csp_violations == []


def test_the_table_at_390_px_scrolls_nothing_sideways_and_the_modal_keeps_its_buttons(
        phone, live_server):
    page = phone
    long_repo()
    OUTPUT.mkdir(exist_ok=True)
    page.goto(f"{live_server.url}/repositories/team/app")
    wait_for_rows(page, 50)
    assert page.evaluate(SIDEWAYS) <= 0
    # An expanded index and an open pull command still fit.
    page.click("button.expand")
    page.wait_for_selector("tr.child")
    page.locator("details.pull summary").first.click()
    expect(page.locator("details.pull[open] input").first).to_be_visible()
    assert page.evaluate(SIDEWAYS) <= 0
    page.screenshot(path=str(OUTPUT / "phone-table.png"), full_page=True)
    page.screenshot(path=str(OUTPUT / "phone-table-top.png"))

    # Select all 65 items: a long preview.
    page.check("#select-page")
    page.click("#select-all-matching")
    expect(page.locator("#selected-count")).to_have_text("All 65 matching selected")
    page.click("#preview-delete")
    page.wait_for_selector("dialog#preview-dialog[open]")
    expect(page.locator("#plan-selected li")).to_have_count(65)
    assert page.evaluate(SIDEWAYS) <= 0
    scroll = page.locator(".modal-scroll")
    assert scroll.evaluate("el => el.scrollHeight > el.clientHeight")  # the list is long
    assert scroll.evaluate("el => el.scrollTop") == 0  # and was not scrolled
    for selector in ("#delete-forever", "#reclaim-bytes", "dialog .modal-cancel"):
        fits, box = inside_viewport(page, selector)
        assert fits, f"{selector} at {box} is not inside {PHONE}"
    page.screenshot(path=str(OUTPUT / "phone-preview.png"))

    # The same on a laptop screen: the footer stays in view, the list scrolls.
    page.set_viewport_size({"width": 1280, "height": 700})
    for selector in ("#delete-forever", "#reclaim-bytes"):
        fits, box = inside_viewport(page, selector)
        assert fits, f"{selector} at {box} is not inside 1280 x 700"
    page.screenshot(path=str(OUTPUT / "laptop-preview.png"))

    # Confirmed: the job's panel, and the jobs list, fit the phone too.
    page.set_viewport_size({"width": PHONE[0], "height": PHONE[1]})
    page.click("#delete-forever")
    expect(page.locator("#job-panel .job-panel")).to_have_count(1)
    assert page.evaluate(SIDEWAYS) <= 0
    page.goto(f"{live_server.url}/jobs/")
    expect(page.locator("td.item-counts")).to_have_text("0 of 67 deleted")
    assert page.evaluate(SIDEWAYS) <= 0
    page.screenshot(path=str(OUTPUT / "phone-jobs.png"), full_page=True)


def test_a_viewers_table_has_no_checkboxes_and_says_why(browser, live_server,
                                                       transactional_db):
    sample_repo()
    page = login(browser, live_server, "victor", viewport=PHONE)
    page.goto(f"{live_server.url}/repositories/team/app")
    wait_for_rows(page, 5)
    expect(page.locator("input[type=checkbox]")).to_have_count(0)
    expect(page.locator("#viewer-note")).to_have_text(
        "You can browse this repository but not delete from it. To delete images, ask an "
        "administrator for the delete permission.")
    assert page.evaluate(SIDEWAYS) <= 0
    page.screenshot(path=str(OUTPUT / "viewer-table.png"), full_page=True)
    page.context.close()
    assert page.csp_violations == []


def test_copy_writes_the_pull_command_or_selects_it_without_the_clipboard_api(
        browser, live_server, transactional_db, settings):
    settings.REGISTRY_PUBLIC_HOST = "hub.example.org"
    repo, index, images, loose = sample_repo()
    granted = login(browser, live_server, "clara", ["delete_images"])
    granted.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                      origin=live_server.url)
    granted.goto(f"{live_server.url}/repositories/team/app?search=1.1")
    wait_for_rows(granted, 1)
    granted.click("details.pull summary")
    button = granted.locator("details.pull button.copy").first
    command = button.get_attribute("data-copy")
    assert command == "docker pull hub.example.org/team/app:1.1"
    button.click()
    expect(button).to_have_text("Copied")
    assert granted.evaluate("navigator.clipboard.readText()") == command
    granted.context.close()

    # No Clipboard API (a page over plain http): the text is selected in a field instead.
    bare = login(browser, live_server, "cyril", ["delete_images"])
    bare.context.add_init_script("Object.defineProperty(navigator, 'clipboard', "
                                 "{value: undefined})")
    bare.goto(f"{live_server.url}/repositories/team/app?search=1.1")
    wait_for_rows(bare, 1)
    bare.click("span.digest button.copy")
    field = bare.locator("span.digest input.copy-fallback")
    expect(field).to_have_value(images[1].digest)
    expect(field).to_be_focused()
    assert bare.evaluate("[document.activeElement.selectionStart, "
                         "document.activeElement.selectionEnd]") == [0, len(images[1].digest)]
    expect(bare.locator("span.digest button.copy")).to_have_text("Press Ctrl+C")
    bare.context.close()
    assert bare.csp_violations == []


def test_every_page_at_390_px_scrolls_nothing_sideways(phone, live_server):
    """The repositories page was 879-887 px wide, the overview 493-500, the policies list 602,
    a policy's runs 568 (issue 24): each table is a list of cards on a phone now."""
    page = phone
    OUTPUT.mkdir(exist_ok=True)
    wide = {}
    for name, path in every_page():
        page.goto(f"{live_server.url}{path}")
        expect(page.locator("main h1")).to_be_visible()
        page.screenshot(path=str(OUTPUT / f"phone-{name}.png"), full_page=True)
        if page.evaluate(SIDEWAYS) > 0:
            wide[name] = page.evaluate("document.documentElement.scrollWidth")
    page.context.clear_cookies()
    page.goto(f"{live_server.url}{LOGIN[1]}")
    if page.evaluate(SIDEWAYS) > 0:
        wide["login"] = page.evaluate("document.documentElement.scrollWidth")
    assert wide == {}, f"wider than {PHONE[0]} px: {wide}"


def test_row_checkboxes_and_the_navigation_are_tap_targets_of_24_px(phone, live_server):
    """A row's checkbox was a 13 x 13 px target; its label around it takes the tap now."""
    page = phone
    sample_repo()
    page.goto(f"{live_server.url}/repositories/team/app")
    wait_for_rows(page, 5)
    hits = page.locator("label.hit")
    assert hits.count() == 6  # the page's and each row's
    for n in range(hits.count()):
        box = hits.nth(n).bounding_box()
        assert box["width"] >= 24 and box["height"] >= 24, box
    # A tap on the label's corner, off the box itself, checks the row.
    box = hits.nth(1).bounding_box()
    page.mouse.click(box["x"] + 1, box["y"] + 1)
    expect(page.locator("input.select-item").first).to_be_checked()
    expect(page.locator("#selected-count")).to_have_text("1 selected")
    for link in page.locator("nav.main-nav a").all():
        box = link.bounding_box()
        assert box["height"] >= 24, (link.text_content(), box)
