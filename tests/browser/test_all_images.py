"""The registry-wide table (/images) in Chromium, against a real registry and a Celery worker:
filters combined through the toolbar, "Select all N matching" across three repositories, one
preview with one reclaim total, and "Delete forever" starting a job per repository."""

import re

from playwright.sync_api import expect

from hubmgr.deletion import across
from hubmgr.deletion.models import DeletionJob
from hubmgr.inventory.catalog import wide
from hubmgr.inventory.registries import default_registry

from tests.support.browser import OUTPUT, wait_for_rows
from tests.support.helpers import image, multiarch, sync


def world(client):
    """a/one: an amd64 image and an arm64 one; b/two and c/three: an amd64 image each;
    d/multi: a multi-arch index. Five items, every one tagged (a sync finds no untagged
    image: the registry lists tags)."""
    found = {"a/one": image(client, "a/one", tag="one", seed="one")["digest"]}
    arm = image(client, "a/one", tag="arm", seed="arm", platform="linux/arm64")["digest"]
    found["b/two"] = image(client, "b/two", tag="two", seed="two")["digest"]
    found["c/three"] = image(client, "c/three", tag="three", seed="three")["digest"]
    multiarch(client, "d/multi", tag="1.0")
    sync()
    return found, arm


def test_filters_select_all_matching_preview_and_a_job_per_repository(
        maintainer_page, live_server, registry, registry_client, celery_worker):
    page = maintainer_page
    going, arm = world(registry_client)
    page.goto(f"{live_server.url}/images/?page_size=2")
    wait_for_rows(page, 2)
    expect(page.locator("#table-summary")).to_have_text("1–2 of 5 items")

    # Three filters through the toolbar; the URL keeps them all. (No notification came, so
    # nothing has pull data: "No pull data" keeps every image.)
    page.select_option("#kind", "image")
    expect(page.locator("#table-summary")).to_have_text("1–2 of 4 items")
    page.select_option("#status", "unknown")
    expect(page).to_have_url(re.compile(r"status=unknown"))
    expect(page.locator("#table-summary")).to_have_text("1–2 of 4 items")
    page.fill("#platform", "linux/amd64")
    expect(page.locator("#table-summary")).to_have_text("1–2 of 3 items")
    expect(page).to_have_url(re.compile(r"platform=linux"))
    for part in ("kind=image", "status=unknown", "page_size=2"):
        assert part in page.url
    wait_for_rows(page, 2)

    # The page's two, then every match in three repositories.
    page.check("#select-page")
    expect(page.locator("#selected-count")).to_have_text("2 selected")
    page.click("#select-all-matching")
    expect(page.locator("#selected-count")).to_have_text("All 3 matching selected")

    page.click("#preview-delete")
    page.wait_for_selector("dialog#preview-dialog[open]")
    sections = page.locator("#preview-dialog section.plan-repository")
    expect(sections).to_have_count(3)
    assert sorted(sections.evaluate_all("els => els.map(e => e.dataset.repository)")) == \
        sorted(going)
    expect(page.locator("#plan-summary")).to_contain_text("in 3 repositories")
    expect(page.locator("#reclaim-bytes")).to_have_count(1)  # one total, not one per plan
    shown = int(page.get_attribute("#reclaim-bytes", "data-bytes"))
    state = wide.WideState.from_params({"kind": "image", "status": "unknown",
                                        "platform": "linux/amd64"})
    refs = wide.selection(default_registry(), state, 10)
    assert sorted(refs) == sorted(going.items())
    from django.contrib.auth import get_user_model

    maria = get_user_model().objects.get(username="maria")
    assert shown == across.preview(default_registry(), refs, maria).reclaim_bytes > 0
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "images-preview-across.png"))

    page.click("#delete-forever")
    expect(page.locator("dialog#preview-dialog[open]")).to_have_count(0)
    expect(page.locator("#job-panel section.job-panel")).to_have_count(3)
    assert sorted(DeletionJob.objects.values_list("repository_name", flat=True)) == \
        sorted(going)
    expect(page.locator("#job-panel .toast")).to_have_count(3, timeout=30_000)
    expect(page.locator("#image-table .empty")).to_contain_text("No items match")
    expect(page.locator("#selected-count")).to_have_text("0 selected")
    for name, digest in going.items():
        assert registry_client.head_manifest(name, digest) is None
    assert registry_client.head_manifest("a/one", arm) is not None  # filtered out: kept
    page.screenshot(path=str(OUTPUT / "images-after-delete.png"), full_page=True)
