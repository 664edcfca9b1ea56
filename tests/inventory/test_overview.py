"""The registry overview: storage figures (distinct blobs, untagged-only and stale-only bytes)
kept as daily snapshots, the overview page and each repository's storage page, and the
repositories page's untagged and stale shares."""

import re
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hubmgr.inventory import tasks
from hubmgr.inventory.catalog.store import refresh
from hubmgr.inventory.models import (
    Blob, Manifest, ManifestBlob, Registry, Repository, StorageSnapshot,
)
from hubmgr.inventory.registries import default_registry
from hubmgr.inventory.storage import snapshots
from hubmgr.policies.models import CleanupPolicy, PolicyRun

from tests.support.factories import (
    days_ago, digest, make_image, make_index, make_repo, observe_pulls, sample_repo,
)
from tests.support.helpers import image, sync
from tests.support.notifications import deliver, drain, event, post

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "repo-table"}


def share_layer(manifest, blob):
    ManifestBlob.objects.create(manifest=manifest, blob=blob)


def base_layer(size=10_000):
    return Blob.objects.create(registry=default_registry(), digest="sha256:" + "b" * 64,
                               size=size)


def figures():
    return snapshots.compute(default_registry())


# ---- the figures ------------------------------------------------------------------------

def test_a_layer_shared_across_repositories_counts_once_for_the_registry():
    base = base_layer()
    a, b = make_repo("team/a"), make_repo("team/b")
    share_layer(make_image(a, "a1", tags=["1"], size=100), base)
    share_layer(make_image(a, "a2", tags=["2"], size=200), base)
    share_layer(make_image(b, "b1", tags=["1"], size=300), base)
    refresh(a), refresh(b)
    whole, repos = figures()
    assert whole.bytes == 10_000 + 100 + 200 + 300
    assert repos[a.pk].bytes == 10_300 == Repository.objects.get(pk=a.pk).total_size
    assert repos[b.pk].bytes == 10_300
    assert (whole.items, repos[a.pk].items, repos[b.pk].items) == (3, 2, 1)


def test_untagged_bytes_are_only_what_no_tagged_item_uses():
    base = base_layer()
    repo = make_repo("team/app")
    share_layer(make_image(repo, "tagged", tags=["1"], size=100), base)
    share_layer(make_image(repo, "loose", size=200), base)  # shares the base: only 200 its own
    kept = [make_image(repo, "k1", size=30), make_image(repo, "k2", size=40)]
    make_index(repo, "tagged-index", kept, tags=["multi"])  # its images are not untagged
    gone = [make_image(repo, "g1", size=5), make_image(repo, "g2", size=6)]
    make_index(repo, "loose-index", gone)  # an untagged index: its images go with it
    refresh(repo)
    whole, repos = figures()
    assert whole.untagged_items == repos[repo.pk].untagged_items == 2  # loose, loose-index
    assert whole.untagged_bytes == repos[repo.pk].untagged_bytes == 200 + 5 + 6
    assert whole.items == 4 and whole.bytes == 10_000 + 100 + 200 + 30 + 40 + 5 + 6


def test_an_image_tagged_in_another_repository_keeps_a_shared_layer_registry_wide():
    base = base_layer()
    a, b = make_repo("team/a"), make_repo("team/b")
    share_layer(make_image(a, "a-loose", size=100), base)
    share_layer(make_image(b, "b-tagged", tags=["1"], size=300), base)
    refresh(a), refresh(b)
    whole, repos = figures()
    assert whole.untagged_bytes == 100  # deleting a's untagged image frees its own blob only
    assert repos[a.pk].untagged_bytes == 10_100  # within team/a, only untagged items use both


def test_stale_is_unknown_until_the_window_covers_the_stale_period():
    sample_repo()
    whole, repos = figures()
    assert whole.stale_items is None and whole.stale_bytes is None
    assert all(r.stale_items is None and r.stale_bytes is None for r in repos.values())
    observe_pulls(30)  # too short for 183 days
    assert figures()[0].stale_bytes is None


def test_stale_figures_count_only_what_evidence_says_nobody_uses():
    observe_pulls(400)
    base = base_layer()
    a, b = make_repo("team/a"), make_repo("team/b")
    share_layer(make_image(a, "old", tags=["old"], size=100, pushed=300), base)
    make_image(a, "old-untagged", size=7, pushed=250, pulled=200)
    make_image(a, "fresh", tags=["new"], size=50, pushed=300, pulled=2)  # pulled lately
    # An index nobody pulled, whose image someone pulled by digest: that image's blob is used.
    pulled_child = make_image(a, "child-pulled", size=11, pushed=300, pulled=1)
    idle_child = make_image(a, "child-idle", size=13, pushed=300)
    make_index(a, "idx", [pulled_child, idle_child], tags=["multi"], pushed=300)
    share_layer(make_image(b, "b-fresh", tags=["1"], size=900, pushed=3), base)
    refresh(a), refresh(b)
    whole, repos = figures()
    assert repos[a.pk].stale_items == 3  # old, old-untagged, idx (the table's Stale filter)
    assert repos[b.pk].stale_items == 0 and whole.stale_items == 3
    assert whole.stale_bytes == 100 + 7 + 13  # the base layer is used by team/b's fresh image
    assert repos[a.pk].stale_bytes == 10_000 + 100 + 7 + 13
    assert repos[b.pk].stale_bytes == 0


def test_a_snapshot_replaces_the_days_earlier_one_and_keeps_other_days():
    repo, *_ = sample_repo()
    registry = default_registry()
    yesterday = timezone.now() - timedelta(days=1)
    snapshots.take(registry, now=yesterday)
    first = snapshots.take(registry)
    make_image(repo, "later", size=5)
    refresh(repo)
    second = snapshots.take(registry)
    rows = StorageSnapshot.objects.filter(repository=None)
    assert rows.count() == 2  # yesterday's and today's
    assert StorageSnapshot.objects.filter(repository=repo).count() == 2
    today = rows.get(date=timezone.now().date())
    assert today.pk == second.pk and today.items == first.items + 1
    assert today.bytes == first.bytes + 5 and today.untagged_items == first.untagged_items + 1
    assert snapshots.latest(registry).pk == second.pk
    assert [r.date for r in snapshots.history(registry, repository=repo, days=30)] == \
        [yesterday.date(), timezone.now().date()]


def test_the_snapshot_command_and_the_beat_task_write_todays_figures(settings):
    sample_repo()
    out = StringIO()
    call_command("snapshot", stdout=out)
    assert "5 items, 7,650 bytes in distinct blobs" in out.getvalue()
    assert "stale unknown" in out.getvalue()
    assert settings.CELERY_BEAT_SCHEDULE["storage-snapshot"]["task"] == \
        "hubmgr.inventory.tasks.snapshot"
    tasks.snapshot()
    assert StorageSnapshot.objects.filter(repository=None).count() == 1


def test_repositories_rows_are_pruned_after_their_retention_the_registrys_kept(settings):
    repo, *_ = sample_repo()
    registry = default_registry()
    for days in (0, 10, 400):
        snapshots.take(registry, now=timezone.now() - timedelta(days=days))
    settings.SNAPSHOT_RETENTION_DAYS = 365
    assert snapshots.prune() == 1
    assert StorageSnapshot.objects.filter(repository=repo).count() == 2
    assert StorageSnapshot.objects.filter(repository=None).count() == 3
    settings.SNAPSHOT_RETENTION_DAYS = 0  # keep
    assert snapshots.prune(days=None) == 0


# ---- the pages ----------------------------------------------------------------------------

def test_home_is_the_overview_with_its_figures(logged_in):
    observe_pulls(400)
    sample_repo()
    snapshots.take(default_registry())
    body = logged_in.get("/").content.decode()
    assert re.search(r'<a href="/"[^>]*>Overview</a>', body)
    assert re.search(r'<a href="/repositories/"[^>]*>Repositories</a>', body)
    assert "Storage figures as of" in body and "minutes ago" in body
    for figure, text in (("storage", "7.7 kB"), ("items", "5"), ("untagged", "50 B"),
                         ("stale", "50 B")):
        section = body.split(f'id="figure-{figure}"')[1].split("</div>")[0]
        assert f'<dd class="big">{text}</dd>' in section, figure
    assert "in 1 repository" in body
    assert "Deleted, waiting for garbage collection" in body  # (tests/test_reclaim.py)
    biggest = body.split('id="biggest"')[1].split("</table>")[0]
    assert "team/app" in biggest and "/repositories/team/app/-/storage" in biggest


def test_each_chart_is_an_image_with_a_name_and_a_table_behind_it(logged_in):
    sample_repo()
    registry = default_registry()
    for days in (2, 1, 0):
        snapshots.take(registry, now=timezone.now() - timedelta(days=days))
    body = logged_in.get("/").content.decode()
    svgs = re.findall(r'<svg class="chart"[^>]*role="img" aria-labelledby="([^"]+)" '
                      r'aria-describedby="([^"]+)"', body)
    assert len(svgs) == 2
    for ids in svgs:
        for ref in ids:
            assert f'id="{ref}"' in body
    assert body.count('<path class="line s1"') == 2
    tables = re.findall(r"<details>\s*<summary>(.*?)</summary>(.*?)</details>", body, re.S)
    assert [t[0] for t in tables] == ["Storage figures as a table", "Item counts as a table"]
    assert tables[0][1].count("<tr><th scope=\"row\">") == 3
    assert timezone.now().date().isoformat() in tables[0][1]


def test_an_empty_registry_has_an_overview_that_says_so(logged_in):
    response = logged_in.get("/")
    body = response.content.decode()
    assert response.status_code == 200
    assert "No storage figures yet" in body and "manage.py snapshot" in body
    assert "No repositories yet" in body and "No cleanup policies yet" in body
    assert "No daily figures in the last 90 days yet" in body
    snapshots.take(default_registry())  # figures of nothing
    body = logged_in.get("/").content.decode()
    assert '<dd class="big">0 B</dd>' in body and "<svg" in body


def test_the_overview_shows_what_each_policys_last_run_said_without_running_one(logged_in):
    make_repo("team/app")
    policy = CleanupPolicy.objects.create(name="untagged", include="**",
                                          remove_untagged_days=7)
    idle = CleanupPolicy.objects.create(name="idle", include="team/*", remove_stale=True)
    run = PolicyRun.objects.create(policy=policy, status=PolicyRun.Status.DONE,
                                   finished_at=timezone.now(),
                                   report={"totals": {"reclaim_bytes": 2_500_000}})
    body = logged_in.get("/").content.decode()
    table = body.split('id="policy-figures"')[1].split("</table>")[0]
    assert f'href="/policies/runs/{run.pk}/"' in table and "2.5 MB" in table
    assert "idle" in table and "Never run" in table
    assert PolicyRun.objects.count() == 1 and not idle.runs.exists()


def test_the_overview_and_storage_pages_need_a_login(client):
    make_repo("team/app")
    for url in ("/", "/repositories/team/app/-/storage"):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith("/login/")


def test_the_overview_refuses_to_be_posted_to(logged_in):
    assert logged_in.post("/").status_code == 405
    assert logged_in.post("/repositories/team/app/-/storage").status_code == 405


@pytest.mark.parametrize("days", ["abc", "-1", "100000", "9" * 40, ""])
def test_a_period_outside_the_choices_falls_back_to_90_days(logged_in, days):
    response = logged_in.get(f"/?days={days}")
    assert response.status_code == 200
    assert 'aria-current="true">90 days' in response.content.decode()


def test_a_repositorys_storage_page_charts_its_days(logged_in):
    observe_pulls(400)
    repo, *_ = sample_repo()
    registry = default_registry()
    for days in (40, 1):
        snapshots.take(registry, now=timezone.now() - timedelta(days=days))
    body = logged_in.get("/repositories/team/app/-/storage").content.decode()
    assert "Storage of team/app" in body and body.count('<svg class="chart"') == 2
    assert body.count('<tr><th scope="row">') == 4  # two days in each table (90 days)
    body = logged_in.get("/repositories/team/app/-/storage?days=30").content.decode()
    assert body.count('<tr><th scope="row">') == 2
    assert "1 item" in body.split('id="figure-stale"')[1].split("</div>")[0]
    assert logged_in.get("/repositories/team/nope/-/storage").status_code == 404
    assert logged_in.get("/repositories/BAD..name/-/storage").status_code == 404
    page = logged_in.get("/repositories/team/app").content.decode()
    assert 'href="/repositories/team/app/-/storage"' in page


def test_the_repositories_page_shows_untagged_and_stale_shares(logged_in):
    observe_pulls(400)
    sample_repo()  # 5 items: 1 untagged, 1 stale
    other = make_repo("team/other")
    make_image(other, "o1", tags=["1"], pulled=1)
    refresh(other)
    body = logged_in.get("/repositories/").content.decode()
    assert re.search(r'class="num stale-share"><span class="muted" title="Not in the storage '
                     r'figures yet">', body)
    snapshots.take(default_registry())
    body = logged_in.get("/repositories/", **HTMX).content.decode()
    rows = {name: row for name, row in re.findall(r'<tr>\s*<td><a href="/repositories/([^"]+)"'
                                                  r'(.*?)</tr>', body, re.S)}
    assert 'untagged-share">20%' in rows["team/app"]
    assert "1 of 5 items" in rows["team/app"] and ">20%</span>" in rows["team/app"]
    assert 'untagged-share">0%' in rows["team/other"] and ">0%</span>" in rows["team/other"]
    assert 'href="/repositories/team/other/-/storage"' in rows["team/other"]


def test_the_repositories_page_costs_the_same_queries_with_figures_at_any_size(logged_in):
    def fill(n):
        Repository.objects.all().delete()
        Repository.objects.bulk_create([Repository(registry=default_registry(),
                                                   name=f"r/app{i:04d}", item_count=i % 7,
                                                   tagged_count=i % 3) for i in range(n)])
        snapshots.take(default_registry())

    fill(30)
    logged_in.get("/repositories/")
    with CaptureQueriesContext(connection) as small:
        assert logged_in.get("/repositories/?sort=-size").status_code == 200
    fill(300)
    with CaptureQueriesContext(connection) as big:
        assert logged_in.get("/repositories/?sort=-size").status_code == 200
    assert len(big.captured_queries) == len(small.captured_queries)


def test_shares_follow_pushes_retags_and_deletes_in_the_registry(registry, registry_client,
                                                                 logged_in):
    """The untagged share reads the counters the inventory keeps; the storage figures follow
    a sync of the whole registry."""
    image(registry_client, "team/app", tag="1", seed="one")
    image(registry_client, "team/app", tag="2", seed="two")
    old = image(registry_client, "team/app", tag="3", seed="three")
    call_command("sync", "--no-progress", stdout=StringIO())
    assert 'untagged-share">0%' in logged_in.get("/repositories/").content.decode()
    image(registry_client, "team/app", tag="3", seed="three-again")  # "3" moves: old untagged
    call_command("sync", "--no-progress", stdout=StringIO())
    body = logged_in.get("/repositories/").content.decode()
    assert 'untagged-share">25%' in body
    latest = snapshots.latest(default_registry())
    assert (latest.items, latest.untagged_items) == (4, 1)
    assert latest.untagged_bytes > 0
    registry_client.delete_manifest("team/app", old["digest"])
    sync()
    assert 'untagged-share">0%' in logged_in.get("/repositories/").content.decode()
    call_command("snapshot", stdout=StringIO())
    latest = snapshots.latest(default_registry())
    assert (latest.items, latest.untagged_items, latest.untagged_bytes) == (3, 0, 0)
    assert latest.bytes == Repository.objects.get(name="team/app").total_size
    assert latest.computed_at >= days_ago(0) - timedelta(minutes=1)


# ---- the charts ---------------------------------------------------------------------------

def test_a_chart_places_days_by_date_and_breaks_where_a_figure_is_unknown():
    from types import SimpleNamespace

    from hubmgr.web import charts

    today = timezone.now().date()
    points = [SimpleNamespace(date=today - timedelta(days=d), v=v) for d, v in
              ((10, 3), (9, None), (8, 5), (0, 7))]
    svg = charts.line_chart("c", "A <chart>", points, [charts.Series("v", "V", "s1")],
                            "{:,.0f}".format, integer=True)
    path = re.search(r'<path class="line s1" d="([^"]+)"', svg).group(1)
    assert path.startswith("M78.0,") and path.count("M") == 2 and path.count("L") == 1
    xs = [float(p[1:].split(",")[0]) for p in path.split()]
    assert xs[1] - xs[0] == pytest.approx((xs[2] - xs[0]) / 5)  # 2 days of 10
    assert "<title id=\"c-title\">A &lt;chart&gt;</title>" in svg
    assert ">8</text>" in svg  # the axis: 0, 2, 4, 6, 8
    assert "V: from 3 to 7" in svg


@pytest.mark.parametrize("highest,integer,top", [
    (0, True, 4), (3, True, 4), (7, True, 8), (9, True, 20), (13, True, 20), (45, True, 80),
    (7_650, False, 8_000), (36_007_650, False, 40_000_000)])
def test_the_value_axis_ends_on_a_round_number(highest, integer, top):
    from hubmgr.web.charts import _axis_top

    assert _axis_top(highest, integer) == top


@pytest.mark.django_db(transaction=True)
def test_a_sync_of_the_whole_catalog_on_the_workers_is_followed_by_a_snapshot(
        registry, registry_client, celery_worker):
    from hubmgr import devstack
    from hubmgr.inventory.models import SyncRun

    image(registry_client, "team/a", tag="1", seed="a")
    image(registry_client, "team/b", tag="1", seed="b")
    tasks.fan_out(default_registry())
    devstack.wait_for(lambda: StorageSnapshot.objects.filter(repository=None).exists(),
                      "the snapshot after the sync", timeout=60)
    assert SyncRun.objects.get().finished_at is not None
    latest = snapshots.latest(default_registry())
    assert latest.items == 2 and latest.bytes == sum(
        Repository.objects.values_list("total_size", flat=True))
    # A sync of one repository is not followed by one.
    StorageSnapshot.objects.all().delete()
    tasks.sync_now(default_registry(), "team/a")
    devstack.wait_for(lambda: not SyncRun.objects.filter(finished_at__isnull=True).exists(),
                      "the repository's sync", timeout=60)
    time.sleep(2)  # time for a snapshot task, had one been queued
    assert not StorageSnapshot.objects.exists()


def test_stale_is_unknown_on_the_pages_until_the_window_covers_the_period(logged_in):
    sample_repo()
    snapshots.take(default_registry())
    stale = logged_in.get("/").content.decode().split('id="figure-stale"')[1].split("</div>")[0]
    assert '<dd class="big">Unknown</dd>' in stale and "no notification" in stale
    observe_pulls(20)
    snapshots.take(default_registry())
    stale = logged_in.get("/").content.decode().split('id="figure-stale"')[1].split("</div>")[0]
    assert "pulls have been observed since" in stale and "183 days" in stale
    body = logged_in.get("/repositories/").content.decode()
    assert 'title="Unknown: the observation window is too short to tell">—' in body
    page = logged_in.get("/repositories/team/app/-/storage").content.decode()
    assert "<span class=\"muted\">unknown</span>" in page  # in the tables behind the charts


# ---- live and snapshot figures ------------------------------------------------------------
# The inventory's writers mark the registry changed after they commit (snapshots.note_change);
# the periodic task recomputes the figures when they changed, at most once per interval.

def push(n, repository="team/app", tag=None, action="push"):
    return event(action=action, id=f"{action}-{repository}-{n}", digest=digest(f"pushed-{n}"),
                 tag=tag if tag is not None else f"p{n}", repository=repository,
                 ts=f"2026-12-06T10:{n // 60:02d}:{n % 60:02d}Z")


def marks(queries):
    """The registry's marks among these queries."""
    return [q for q in queries.captured_queries
            if q["sql"].startswith("UPDATE") and "inventory_changed_at" in q["sql"]]


def an_interval_passes():
    """An interval goes by: the marks on the database's clock move back by one (how a test
    waits for it)."""
    from django.conf import settings

    interval = timedelta(minutes=settings.SNAPSHOT_INTERVAL_MINUTES, seconds=1)
    Registry.objects.update(snapshot_started_at=F("snapshot_started_at") - interval,
                            inventory_changed_at=F("inventory_changed_at") - interval)


def live_figures():
    """The figures the inventory's counters say now (what the pages call live)."""
    repos = Repository.objects.order_by("name")
    return {"items": sum(r.item_count for r in repos),
            "untagged_items": sum(r.item_count - r.tagged_count for r in repos),
            "sizes": {r.name: r.total_size for r in repos}}


def snapshot_figures():
    latest = snapshots.latest(default_registry())
    rows = StorageSnapshot.objects.filter(date=latest.date, repository__isnull=False) \
        .select_related("repository").order_by("repository__name")
    return {"items": latest.items, "untagged_items": latest.untagged_items,
            "sizes": {r.repository.name: r.bytes for r in rows}}


def computations(caplog):
    return sum("snapshot registry=" in r.getMessage() for r in caplog.records)


@pytest.mark.django_db(transaction=True)
def test_pushes_mark_the_snapshot_changed_and_the_background_task_brings_it_level(
        logged_in):
    repo, index, images, loose = sample_repo()
    snapshots.take(default_registry())
    body = logged_in.get("/").content.decode()
    assert "changed since" not in body and "No push, delete or sync has changed" in body
    assert live_figures() == snapshot_figures()

    # Three pushes (two tagged, one untagged), a tag moved onto a new push, a delete.
    deliver(logged_in, [push(1), push(2), push(3, tag=""), push(4, tag="1.1"),
                      event(action="delete", id="d1", digest=loose.digest, tag="",
                            repository="team/app")])
    registry = default_registry()
    assert snapshots.changed_since(registry)
    body = logged_in.get("/").content.decode()
    assert '<strong id="changed-since">The inventory has changed since</strong>' in body
    figure = body.split('id="figure-storage"')[1].split("</div>")[0]
    assert "Snapshot <time" in figure and ">changed since</span>" in figure
    items = body.split('id="figure-items"')[1].split("</div>")[0]
    assert '<dd class="big">8</dd>' in items and ">Live</span>" in items  # 5 + 4 - 1
    assert "changed since" not in items
    assert "5 items at the snapshot" in figure
    page = logged_in.get("/repositories/team/app/-/storage").content.decode()
    assert "The inventory has changed since" in page
    assert live_figures() != snapshot_figures()

    assert tasks.snapshot() is None  # within the interval of the last computation
    an_interval_passes()
    assert tasks.snapshot() is not None  # beat's check, an interval on
    assert live_figures() == snapshot_figures()
    assert snapshots.latest(default_registry()).items == 8
    body = logged_in.get("/").content.decode()
    assert "changed since" not in body and "8 items at the snapshot" in body


@pytest.mark.django_db(transaction=True)
def test_nothing_is_recomputed_when_nothing_changed(logged_in, caplog,
                                                    ):
    caplog.set_level("INFO", logger="hubmgr.snapshots")
    sample_repo()
    deliver(logged_in, [push(1)])
    snapshots.take(default_registry())
    first = snapshots.latest(default_registry()).computed_at
    an_interval_passes()
    # Pulls move times, not items, tags or bytes: no change for the figures.
    deliver(logged_in, [event(action="pull", id="pull-1", digest=digest("pushed-1"), tag="",
                              repository="team/app", ts="2026-12-06T11:00:00Z",
                              method="GET")])
    assert Manifest.objects.get(digest=digest("pushed-1")).last_pulled is not None
    for _ in range(3):
        assert tasks.snapshot() is None
    assert computations(caplog) == 1
    assert snapshots.latest(default_registry()).computed_at == first
    assert not snapshots.changed_since(default_registry())
    # A day with no row yet is computed (Stale moves with time alone), once.
    StorageSnapshot.objects.update(date=F("date") - timedelta(days=1))
    assert tasks.snapshot() is not None and tasks.snapshot() is None
    assert computations(caplog) == 2


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_100_notifications_marks_once_and_computes_once_per_interval(
        logged_in, caplog):
    caplog.set_level("INFO", logger="hubmgr.snapshots")
    sample_repo()
    snapshots.take(default_registry())
    for n in range(100):  # one envelope each, as the registry sends them
        post(logged_in, [push(n, repository=f"team/burst-{n % 7}")])
    with CaptureQueriesContext(connection) as queries:
        drain()
    assert len(marks(queries)) == 1  # one batch (one transaction), seven repositories
    assert Repository.objects.count() == 8 and live_figures()["items"] == 105

    for round in range(5):  # a stream: every check finds the figures changed
        deliver(logged_in, [push(1000 + round)])
        tasks.snapshot()
        if round == 2:
            an_interval_passes()
    assert computations(caplog) == 2  # the first take, and one after the interval
    assert snapshots.changed_since(default_registry())  # rounds 3 and 4 came after it
    assert snapshots.latest(default_registry()).items == 105 + 4  # rounds 0 to 3


@pytest.mark.django_db(transaction=True)
def test_batches_mark_once_each_however_many_repositories_they_write(client):
    for n in range(30):
        post(client, [push(n, repository=f"team/r{n % 5}")])
    with CaptureQueriesContext(connection) as queries:
        drain(limit=10)  # three transactions
    assert len(marks(queries)) == 3
    assert snapshots.changed_since(default_registry())


@pytest.mark.django_db(transaction=True)
def test_a_committed_write_marks_the_registry_and_a_rolled_back_one_does_not():
    from django.db import transaction

    from hubmgr.inventory.catalog.store import writing

    repo = make_repo("team/app")
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            with writing(repo) as batch:
                batch.set_tags({"1": make_image(repo, "a").pk})
            raise RuntimeError("rolled back")
    assert default_registry().inventory_changed_at is None
    with writing(repo) as batch:
        batch.set_tags({"1": make_image(repo, "b").pk})
    registry = default_registry()
    assert registry.inventory_changed_at is not None and snapshots.changed_since(registry)
    assert snapshots.refresh(registry) is not None  # the first figures: no wait
    assert not snapshots.changed_since(default_registry())


def test_the_beat_checks_every_minute_and_the_interval_is_the_spacing(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["storage-snapshot"]
    assert entry["schedule"] == 60.0 and entry["options"]["expires"] == 60.0


@pytest.mark.django_db(transaction=True)
def test_forgetting_a_repository_marks_the_snapshot_changed():
    from hubmgr.inventory.catalog.store import forget_repositories

    repo, *_ = sample_repo()
    snapshots.take(default_registry())
    assert not snapshots.changed_since(default_registry())
    forget_repositories([repo])
    assert snapshots.changed_since(default_registry())


@pytest.mark.django_db(transaction=True)
def test_a_computation_that_fails_leaves_the_figures_due(monkeypatch):
    sample_repo()
    snapshots.take(default_registry())
    an_interval_passes()
    StorageSnapshot.objects.update(date=F("date") - timedelta(days=1))  # due: no row today

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(snapshots, "compute", broken)
    with pytest.raises(RuntimeError):
        tasks.snapshot()
    assert snapshots.changed_since(default_registry())  # due again, an interval on
    monkeypatch.undo()
    assert tasks.snapshot() is None  # not before the interval
    an_interval_passes()
    assert tasks.snapshot() is not None and not snapshots.changed_since(default_registry())
