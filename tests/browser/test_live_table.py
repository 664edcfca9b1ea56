"""The open table in Chromium shows pushes and pulls made after it was loaded, without a
reload, and keeps the user's selection."""

import subprocess

from playwright.sync_api import expect

from hubmgr.inventory.models import Manifest
from hubmgr.registry.client import RegistryClient

from tests.support.browser import OUTPUT, login, wait_for_rows
from tests.support.helpers import image, wait_until


def test_the_open_table_shows_a_push_and_a_pull_and_keeps_the_selection(
        browser, live_server, notified_registry, celery_worker):
    client = RegistryClient(notified_registry.url)
    old = image(client, "live/web", tag="1.0", seed="old")["digest"]
    pulled = image(client, "live/web", tag="2.0", seed="pulled")["digest"]
    assert wait_until(lambda: Manifest.objects.filter(repository__name="live/web",
                                                      fetched=True).count() == 2)
    page = login(browser, live_server, "maria", ["delete_images"])
    page.goto(f"{live_server.url}/repositories/live/web")
    wait_for_rows(page, 2)
    page.evaluate("window.__marker = 1")
    page.check(f"tbody.item[data-digest='{old}'] input.select-item")
    page.focus(f"tbody.item[data-digest='{old}'] input.select-item")
    assert page.inner_text("#selected-count") == "1 selected"
    pulled_cell = page.locator(f"tbody.item[data-digest='{pulled}'] td:nth-child(7)")
    expect(pulled_cell).to_have_text("Never")

    new = image(client, "live/web", tag="3.0", seed="new")["digest"]
    subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                    f"docker://{notified_registry.url.removeprefix('http://')}/live/web:2.0"],
                   check=True, capture_output=True)

    expect(page.locator(f"tbody.item[data-digest='{new}']")).to_have_count(1)
    expect(page.locator(f"tbody.item[data-digest='{new}'] .tag")).to_have_text("3.0")
    expect(pulled_cell.locator("time")).to_have_count(1)  # "Never" no more
    assert page.evaluate("window.__marker") == 1  # no reload
    assert page.is_checked(f"tbody.item[data-digest='{old}'] input.select-item")
    assert page.inner_text("#selected-count") == "1 selected"
    # ... and the focus stays on the box it was on (checking it focused it).
    assert page.evaluate("document.activeElement.closest('tbody.item').dataset.digest") == old
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "live-table.png"), full_page=True)

    # The selected item is deleted elsewhere: its row goes, and so does its selection.
    client.delete_manifest("live/web", old)
    wait_for_rows(page, 2)
    expect(page.locator("#live-note")).to_have_text(
        "1 selected item was deleted and left the selection.")
    assert page.inner_text("#selected-count") == "0 selected"

    # Sync now on the repositories page: the panel follows the run to its end.
    page.click("nav.breadcrumbs a")
    page.click("#sync-now")
    expect(page.locator("#sync-status")).to_contain_text("Last sync of the whole registry")
    expect(page.locator("#sync-status")).to_contain_text("no problems")
    page.screenshot(path=str(OUTPUT / "sync-now.png"))
    assert page.csp_violations == []
    page.context.close()
