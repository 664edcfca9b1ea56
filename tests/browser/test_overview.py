"""The overview in Chromium, in the light and the dark theme: figures, charts that follow the
theme (colours from the stylesheet, nothing inline for the Content-Security-Policy to block),
and the table behind each chart."""

import re
from datetime import timedelta

from django.utils import timezone
from playwright.sync_api import expect

from hubmgr.inventory.catalog.store import writing
from hubmgr.inventory.models import Repository, StorageSnapshot
from hubmgr.inventory.registries import default_registry
from hubmgr.inventory.storage import snapshots
from hubmgr.policies.models import CleanupPolicy, PolicyRun

from hubmgr.inventory.catalog.store import refresh

from tests.support.browser import OUTPUT, login
from tests.support.factories import make_image, make_repo, observe_pulls, sample_repo

DAYS = 60


def history():
    """Sixty days of a growing registry (and of team/app), then today's real figures."""
    observe_pulls(400)
    repo, *_ = sample_repo()
    for n in range(8):
        other = make_repo(f"team/service-{n}")
        make_image(other, f"s{n}", tags=["1"], size=(n + 1) * 1_000_000, pulled=1)
        refresh(other)
    registry, today = default_registry(), timezone.now().date()
    rows = []
    for age in range(DAYS, 0, -1):
        grow = DAYS - age
        rows.append(StorageSnapshot(
            registry=registry, date=today - timedelta(days=age), computed_at=timezone.now(),
            bytes=20_000_000 + 300_000 * grow, items=20 + grow // 3,
            untagged_bytes=2_000_000 + 90_000 * (grow % 20), untagged_items=2 + grow % 7,
            stale_bytes=None if age > 40 else 1_000_000 + 20_000 * grow,
            stale_items=None if age > 40 else 3 + grow // 10))
        rows.append(StorageSnapshot(
            registry=registry, repository=repo, date=today - timedelta(days=age),
            computed_at=timezone.now(), bytes=5_000 + 40 * grow, items=3 + grow // 20,
            untagged_bytes=50, untagged_items=1, stale_bytes=50, stale_items=1))
    StorageSnapshot.objects.bulk_create(rows)
    snapshots.take(registry)
    policy = CleanupPolicy.objects.create(name="untagged after 7 days", include="**",
                                          remove_untagged_days=7)
    PolicyRun.objects.create(policy=policy, status=PolicyRun.Status.DONE,
                             finished_at=timezone.now(),
                             report={"totals": {"reclaim_bytes": 2_100_000}})


def stroke(page, selector):
    return page.eval_on_selector(selector, "el => getComputedStyle(el).stroke")


def test_the_overview_and_its_charts_in_light_and_dark(browser, live_server,
                                                       transactional_db):
    history()
    page = login(browser, live_server, "olga")
    page.goto(f"{live_server.url}/")
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator("nav[aria-label=Main] a").first).to_have_text("Overview")
    expect(page.locator("#figure-items dd.big")).to_have_text("13")
    expect(page.locator("#policy-figures")).to_contain_text("2.1 MB")

    storage = page.get_by_role("img", name="Registry: storage by day", exact=True)
    expect(storage).to_be_visible()
    expect(storage).to_have_accessible_description(re.compile(r"^\d{4}-\d\d-\d\d to .*Stored: "
                                                              r"from 20.0 MB to 36.0 MB"))
    assert storage.evaluate("el => el.getBoundingClientRect().height") > 150
    # Sixty days and today: the storage line has a point for each.
    assert page.eval_on_selector("#storage-figure path.s1",
                                 "el => el.getAttribute('d').split('L').length") == DAYS + 1
    light = stroke(page, "#storage-figure path.s1")
    page.click("#storage-figure summary")
    expect(page.locator("#storage-figure details table tbody tr")).to_have_count(DAYS + 1)
    page.screenshot(path=str(OUTPUT / "overview-light.png"), full_page=True)

    page.emulate_media(color_scheme="dark")
    dark = stroke(page, "#storage-figure path.s1")
    assert light != dark  # the line follows the theme
    background = page.eval_on_selector("body", "el => getComputedStyle(el).backgroundColor")
    assert background == "rgb(18, 23, 29)"
    page.screenshot(path=str(OUTPUT / "overview-dark.png"), full_page=True)

    # A repository's chart, from the biggest repositories.
    page.emulate_media(color_scheme="light")
    page.click("#biggest a[aria-label='Storage chart of team/app']")
    expect(page.locator("h1")).to_have_text("Storage of team/app")
    expect(page.get_by_role("img", name="team/app: storage by day", exact=True)) \
        .to_be_visible()
    page.click("text=30 days")
    expect(page.locator("#storage-figure details table tbody tr")).to_have_count(30)
    page.screenshot(path=str(OUTPUT / "repository-storage.png"), full_page=True)

    # Each figure says where it comes from; a push after the snapshot shows at once.
    page.goto(f"{live_server.url}/")
    expect(page.locator("#figure-items .source")).to_have_text("Live")
    expect(page.locator("#figure-storage .source")).to_have_text(
        re.compile(r"^Snapshot \d\d:\d\d\s*$"))
    expect(page.locator("#changed-since")).to_have_count(0)
    repo = Repository.objects.get(name="team/app")
    with writing(repo) as batch:  # as a push's notification writes it
        pushed = make_image(repo, "pushed-later")
        batch.added([pushed.pk])
        batch.set_tags({"pushed-later": pushed.pk})
    page.reload()
    expect(page.locator("#changed-since")).to_have_text("The inventory has changed since")
    expect(page.locator("#figure-storage .source")).to_contain_text("changed since")
    expect(page.locator("#figure-items dd.big")).to_have_text("14")
    page.locator("#figures-heading").locator("..").screenshot(
        path=str(OUTPUT / "overview-changed-since.png"))
    page.context.close()
    assert page.csp_violations == []
