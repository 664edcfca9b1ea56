"""The real page in Chromium (Debian's /usr/bin/chromium driven by Playwright)."""

import re

from playwright.sync_api import expect

from hubmgr.deletion.graph import load_graph
from hubmgr.deletion.planner import plan

from tests.support.browser import OUTPUT, wait_for_rows
from tests.support.factories import digest, sample_repo
from tests.support.helpers import image, multiarch, repo, sync

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
    wait_for_rows(page, 1)
    assert digests(page) == [digest("img2")]
    assert "search=1.2" in page.url
    assert page.evaluate("window.__marker") == 1  # no full reload

    page.fill("#search", "")
    wait_for_rows(page, 5)
    page.select_option("#filter", "untagged")
    wait_for_rows(page, 1)
    assert digests(page) == [loose.digest] and "filter=untagged" in page.url

    page.select_option("#filter", "image")
    wait_for_rows(page, 4)
    page.click("a.sort[data-sort=size]")  # first click: largest first
    expect(page).to_have_url(re.compile("sort=-size"))
    assert digests(page) == [digest(s) for s in ("img2", "img1", "img0", "loose")]
    page.click("a.sort[data-sort=size]")  # second click reverses
    expect(page).to_have_url(re.compile("sort=size"))
    assert digests(page) == [digest(s) for s in ("loose", "img0", "img1", "img2")]
    assert "filter=image" in page.url

    # The link reopens the same view.
    page.goto(page.url)
    assert digests(page) == [digest(s) for s in ("loose", "img0", "img1", "img2")]
    assert page.input_value("#filter") == "image"

    # Expand an index: its children appear indented, with platforms.
    page.select_option("#filter", "index")
    wait_for_rows(page, 1)
    page.click("button.expand")
    page.wait_for_selector(f"#children-{index.id} tr.child")
    assert page.locator(f"#children-{index.id} tr.child").count() == 2
    expect(page.locator("button.expand")).to_have_attribute("aria-expanded", "true")
    assert "linux/arm64" in page.inner_text(f"#children-{index.id}")
    page.click("button.expand")
    expect(page.locator("button.expand")).to_have_attribute("aria-expanded", "false")
    assert page.locator(f"#children-{index.id}").is_hidden()

    # A viewer has nothing to select: no checkboxes, no "Preview and delete", and a note.
    expect(page.locator("input[type=checkbox]")).to_have_count(0)
    expect(page.locator("#preview-delete")).to_have_count(0)
    expect(page.locator("#viewer-note")).to_contain_text("can browse this repository but not "
                                                         "delete from it")
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "image-management.png"), full_page=True)


def test_page_size_and_jump_to_page_keep_the_search_and_sort(page, live_server):
    from hubmgr.inventory.catalog.store import refresh

    from tests.support.factories import make_image, make_repo

    repo = make_repo("many/app")
    for n in range(60):
        make_image(repo, f"many{n}", tags=[f"v{n}"], size=1000 + n)
    refresh(repo)
    page.goto(f"{live_server.url}/repositories/many/app?sort=size")
    wait_for_rows(page, 50)
    page.select_option("#page-size", "25")
    wait_for_rows(page, 25)
    expect(page).to_have_url(re.compile(r"page_size=25"))
    assert "sort=size" in page.url
    assert page.inner_text("#table-summary") == "1–25 of 60 items"
    page.fill("#jump-page", "3")
    page.press("#jump-page", "Enter")
    wait_for_rows(page, 10)
    assert digests(page)[0] == digest("many50")  # smallest first: the 51st
    expect(page.locator(".pager nav")).to_contain_text("Page 3 of 3")
    # A search keeps the page size (and starts again at page 1).
    page.fill("#search", "v1")
    wait_for_rows(page, 11)  # v1, v10..v19
    expect(page).to_have_url(re.compile(r"page_size=25"))
    assert page.inner_text("#table-summary") == "11 items"


def test_select_an_index_preview_and_delete_forever(maintainer_page, live_server, registry,
                                                   registry_client, celery_worker):
    page = maintainer_page
    index, kids = multiarch(registry_client, "web/app", tag="1.0")
    keep = image(registry_client, "web/app", tag="keep", seed="keep")
    sync()
    page.goto(f"{live_server.url}/repositories/web/app")
    assert len(digests(page)) == 2
    page.check(f"tbody.item[data-digest='{index}'] input.select-item")
    assert page.inner_text("#selected-count") == "1 selected"
    page.click("#preview-delete")
    page.wait_for_selector("dialog#preview-dialog[open]")
    modal = page.inner_text("#preview-dialog")
    assert "Selected (1)" in modal and "Also removed (not referenced elsewhere) (2)" in modal
    reclaim = int(page.get_attribute("#reclaim-bytes", "data-bytes"))
    graph, selected = load_graph(repo("web/app"), [index])
    assert reclaim == plan(graph, selected).reclaim_bytes > 0
    page.screenshot(path=str(OUTPUT / "preview-and-delete.png"))
    page.click("#delete-forever")
    expect(page.locator("dialog#preview-dialog[open]")).to_have_count(0)
    page.wait_for_selector(".job-panel .toast", timeout=30_000)
    assert "3 of 3 finished" in page.inner_text(".job-panel")
    wait_for_rows(page, 1)
    assert digests(page) == [keep["digest"]]
    assert page.inner_text("#selected-count") == "0 selected"
    for gone in [index] + [k["digest"] for k in kids]:
        assert registry_client.head_manifest("web/app", gone) is None


LABELLED = """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, button, a'))
  .filter(el => el.offsetParent !== null || el.closest('dialog[open]'))
  .filter(el => {
    const label = el.getAttribute('aria-label') || el.getAttribute('title') ||
      (el.labels && el.labels.length && el.labels[0].textContent.trim()) || el.textContent.trim();
    return !label;
  }).map(el => el.outerHTML.slice(0, 120))"""

def test_the_whole_flow_from_the_keyboard_with_every_control_labelled(
        maintainer_page, live_server, registry, registry_client, celery_worker):
    page = maintainer_page
    index, kids = multiarch(registry_client, "kb/app", tag="1.0")
    for n in range(3):
        image(registry_client, "kb/app", tag=f"v{n}", seed=f"kb{n}")
    sync()
    page.goto(f"{live_server.url}/repositories/kb/app")
    assert page.evaluate(LABELLED) == []

    # Search from the keyboard: the search box is the first control after the header links.
    page.focus("#search")
    page.keyboard.type("1.0")
    wait_for_rows(page, 1)
    # Expand the index with Enter on its toggle, select it with Space.
    page.focus("button.expand")
    page.keyboard.press("Enter")
    page.wait_for_selector("tr.child")
    assert page.evaluate(LABELLED) == []
    page.focus("input.select-item")
    page.keyboard.press("Space")
    assert page.inner_text("#selected-count") == "1 selected"
    page.focus("#preview-delete")
    page.keyboard.press("Enter")
    page.wait_for_selector("dialog#preview-dialog[open]")
    assert page.evaluate(LABELLED) == []
    page.screenshot(path=str(OUTPUT / "modal-keyboard.png"))
    # The dialog traps focus; Escape closes it and Enter on "Delete forever" confirms.
    page.keyboard.press("Escape")
    assert not page.evaluate("document.getElementById('preview-dialog').open")
    page.focus("#preview-delete")
    page.keyboard.press("Enter")
    page.wait_for_selector("dialog#preview-dialog[open]")
    page.focus("#delete-forever")
    page.keyboard.press("Enter")
    page.wait_for_selector(".job-panel .toast", timeout=30_000)
    wait_for_rows(page, 0)
    page.fill("#search", "")
    wait_for_rows(page, 3)
    page.screenshot(path=str(OUTPUT / "table-after-delete.png"), full_page=True)
