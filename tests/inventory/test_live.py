"""A page that stays current: every writer moves the repository's version, the open table's
cheap check (ETag, 304), what became of a selection, and Sync now with its progress panel."""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from hubmgr import devstack
from hubmgr.deletion import jobs
from hubmgr.deletion.actions import plan_data
from hubmgr.deletion.graph import load_graph
from hubmgr.deletion.planner import plan
from hubmgr.inventory.catalog.store import refresh_counts, writing
from hubmgr.inventory.models import Manifest, Repository, SyncRun
from hubmgr.inventory.registries import client_for, default_registry

from tests.support.helpers import image, repo, sync
from tests.support.notifications import DIGEST, deliver, event, pull

OTHER = "sha256:" + "b" * 64


def version(name="hook/app"):
    return Repository.objects.get(name=name).version


# ---- every writer moves the version ---------------------------------------------------------
@pytest.mark.django_db
def test_push_pull_and_delete_events_move_the_version_once_per_batch(client):
    deliver(client, [event()])
    pushed = version()
    assert pushed >= 1
    # Three pulls of two manifests in one delivery: one move, not three.
    deliver(client, [event(id="e2", digest=OTHER, tag="v2", ts="2026-11-01T10:00:01Z")])
    before = version()
    deliver(client, [pull("p1", "2026-11-03T00:00:00Z"), pull("p2", "2026-11-03T00:00:01Z"),
                     pull("p3", "2026-11-03T00:00:02Z", digest=OTHER)])
    assert version() == before + 1
    # A pull delivered late (older than the one shown) changes nothing: no move.
    deliver(client, [pull("p4", "2026-11-02T00:00:00Z")])
    assert version() == before + 1
    # A delete of a digest we hold moves it; one we never had does not.
    deliver(client, [event(action="delete", id="d1", digest=OTHER, tag="")])
    assert version() == before + 2
    assert not Manifest.objects.filter(digest=OTHER).exists()
    deliver(client, [event(action="delete", id="d2", digest="sha256:" + "c" * 64, tag="")])
    assert version() == before + 2


@pytest.mark.django_db
def test_the_pull_path_adds_one_statement_per_repository_not_per_event(client):
    deliver(client, [event()])
    events = [pull(f"p{n}", f"2026-11-03T00:00:{n:02d}Z") for n in range(40)]
    with CaptureQueriesContext(connection) as ctx:
        deliver(client, events)
    bumps = [q["sql"] for q in ctx.captured_queries if '"version"' in q["sql"]
             and q["sql"].startswith("UPDATE")]
    assert len(bumps) == 1


@pytest.mark.django_db
def test_a_recount_moves_the_version_only_when_it_corrects_a_count(client):
    deliver(client, [event()])
    before = version()
    refresh_counts(repo("hook/app"))
    assert version() == before
    Repository.objects.filter(name="hook/app").update(item_count=7)
    refresh_counts(repo("hook/app"))
    assert version() == before + 1 and repo("hook/app").item_count == 1


@pytest.mark.django_db
def test_a_manifest_found_missing_again_moves_nothing(client):
    deliver(client, [event()])  # a placeholder: the push event's manifest is not read yet
    with writing(repo("hook/app")) as batch:
        batch.store_fetched({}, {}, missing={DIGEST})
    marked = version()
    assert Manifest.objects.get(digest=DIGEST).error.startswith("the registry has no such")
    with writing(repo("hook/app")) as batch:  # the next sync finds it missing again
        batch.store_fetched({}, {}, missing={DIGEST})
    assert version() == marked


@pytest.mark.django_db(transaction=True)
def test_a_sync_moves_the_version_only_when_it_changed_something(registry, registry_client):
    first = image(registry_client, "sync/app", tag="1.0", seed="one")
    sync()
    synced = version("sync/app")
    assert synced >= 1
    sync()  # nothing changed in the registry
    assert version("sync/app") == synced
    image(registry_client, "sync/app", tag="2.0", seed="two")
    sync()
    assert version("sync/app") > synced

    # A deletion job removes its rows in one write: one more move.
    before = version("sync/app")
    r = repo("sync/app")
    graph, selected = load_graph(r, [first["digest"]])
    job = jobs.create_job(r, plan_data(plan(graph, selected)))
    jobs.process_job(job.pk, client_for(default_registry()), wait=True)
    assert not Manifest.objects.filter(digest=first["digest"]).exists()
    assert version("sync/app") == before + 1


# ---- the cheap version check ----------------------------------------------------------------
@pytest.mark.django_db
def test_the_version_check_answers_304_until_a_pull_moves_it(client, logged_in):
    deliver(client, [event()])
    url = "/repositories/hook/app/-/version"
    resp = logged_in.get(url)
    assert resp.status_code == 200 and resp.json() == {"version": version()}
    etag = resp["ETag"]
    assert etag == f'"{version()}"' and "no-cache" in resp["Cache-Control"]

    with CaptureQueriesContext(connection) as ctx:
        resp = logged_in.get(url, HTTP_IF_NONE_MATCH=etag)
    assert resp.status_code == 304 and resp.content == b"" and resp["ETag"] == etag
    ours = [q["sql"] for q in ctx.captured_queries if "inventory_repository" in q["sql"]]
    assert len(ours) == 1 and len(ctx.captured_queries) <= 3  # + the session and the user

    deliver(client, [pull("p1", "2026-11-03T00:00:00Z")])
    resp = logged_in.get(url, HTTP_IF_NONE_MATCH=etag)
    assert resp.status_code == 200 and resp["ETag"] != etag
    assert resp.json() == {"version": version()}


@pytest.mark.django_db
def test_the_version_check_refuses_what_the_pages_refuse(client, logged_in):
    deliver(client, [event()])
    assert Client().get("/repositories/hook/app/-/version").status_code == 302  # to login
    assert logged_in.get("/repositories/no/such/-/version").status_code == 404
    assert logged_in.get("/repositories/Bad..Name/-/version").status_code == 404
    assert logged_in.post("/repositories/hook/app/-/version").status_code == 405


@pytest.mark.django_db
def test_the_table_carries_its_version_and_where_to_check_it(client, logged_in):
    deliver(client, [event()])
    page = logged_in.get("/repositories/hook/app").content.decode()
    assert f'data-version="{version()}"' in page
    assert 'data-version-url="/repositories/hook/app/-/version"' in page
    assert "hubmgr:changed" in page and "live.js" in page
    swap = logged_in.get("/repositories/hook/app?sort=size", HTTP_HX_REQUEST="true",
                         HTTP_HX_TARGET="image-table").content.decode()
    assert swap.startswith('\n<div id="image-table"') or '<div id="image-table"' in swap[:80]
    assert f'data-version="{version()}"' in swap and "sort=size" in swap


@pytest.mark.django_db
def test_the_selection_check_names_the_items_that_are_gone(client, logged_in):
    deliver(client, [event()])
    resp = logged_in.post("/repositories/hook/app/-/selection", {"digest": [DIGEST, OTHER]})
    assert resp.status_code == 200 and resp.json() == {"gone": [OTHER]}
    assert logged_in.get("/repositories/hook/app/-/selection").status_code == 405


# ---- Sync now ---------------------------------------------------------------------------------
@pytest.mark.django_db
def test_sync_now_is_for_maintainers_with_a_csrf_token(client, user, maintainer):
    deliver(client, [event()])
    viewer = Client()
    viewer.force_login(user)
    page = viewer.get("/repositories/hook/app").content.decode()
    assert 'id="sync-panel"' in page and 'id="sync-now"' not in page
    assert viewer.post("/repositories/hook/app/-/sync").status_code == 403
    assert viewer.post("/sync/").status_code == 403
    assert Client().post("/sync/").status_code == 302  # to login
    assert not SyncRun.objects.exists()

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(maintainer)
    assert 'id="sync-now"' in strict.get("/repositories/hook/app").content.decode()
    assert 'id="sync-now"' in strict.get("/repositories/").content.decode()
    assert strict.post("/repositories/hook/app/-/sync").status_code == 403  # no token
    assert not SyncRun.objects.exists()
    assert viewer.delete("/sync/").status_code == 405


@pytest.mark.django_db
def test_sync_now_without_a_registry_or_a_broker_says_so(client, maintainer, redis_service,
                                                         settings):
    deliver(client, [event()])
    client.force_login(maintainer)
    resp = client.post("/repositories/hook/app/-/sync")
    assert resp.status_code == 200
    assert "could not start" in resp.content.decode() and "HUBMGR_REGISTRY_URL" in \
        resp.content.decode()

    settings.REGISTRY_URL = "http://127.0.0.1:9"  # a repository run reads no catalog
    redis_service.stop()
    try:
        resp = client.post("/repositories/hook/app/-/sync")
    finally:
        redis_service.start()
    assert resp.status_code == 200
    assert "task queue (Redis) is not answering" in resp.content.decode()
    run = SyncRun.objects.get()
    assert run.finished_at is not None and run.error.startswith("not queued")
    # The closed run holds nothing back, and the panel shows why it stopped.
    assert "It stopped: not queued" in client.get("/repositories/hook/app/-/sync") \
        .content.decode()


@pytest.mark.django_db(transaction=True)
def test_sync_now_runs_on_a_worker_with_progress_and_no_second_run(
        registry, registry_client, celery_worker, maintainer, client):
    for name in ("now/a", "now/b"):
        image(registry_client, name, tag="t", seed=name)
    client.force_login(maintainer)
    resp = client.post("/sync/", HTTP_HX_REQUEST="true")
    assert resp.status_code == 200
    run = SyncRun.objects.get()
    panel = resp.content.decode()
    assert 'id="sync-panel"' in panel
    if run.finished_at is None:  # a quick worker may be done already
        assert "Syncing the whole registry" in panel and f"watching={run.pk}" in panel
        again = client.post("/sync/").content.decode()
        assert "already running" in again and SyncRun.objects.count() == 1
    devstack.wait_for(lambda: SyncRun.objects.filter(finished_at__isnull=False).exists(),
                      "the sync run", timeout=60)
    done = client.get(f"/sync/?watching={run.pk}", HTTP_HX_REQUEST="true")
    assert "hubmgr:synced" in done["HX-Trigger"]
    text = done.content.decode()
    assert "Last sync of the whole registry" in text and "2 repositories" in text
    assert "no problems" in text and "every 1s" not in text
    assert set(Repository.objects.values_list("name", flat=True)) == {"now/a", "now/b"}

    # One repository: its page shows its last run, and only the problems about it.
    client.post("/repositories/now/a/-/sync")
    devstack.wait_for(lambda: not SyncRun.objects.filter(finished_at__isnull=True).exists(),
                      "the repository's run", timeout=60)
    last = SyncRun.objects.order_by("-pk").first()
    assert last.pk != run.pk and last.whole_catalog is False
    SyncRun.objects.filter(pk=last.pk).update(problems=[
        {"reference": "now/a:t", "error": "manifest unknown"},
        {"reference": "now/ab", "error": "someone else's"}])
    page = client.get("/repositories/now/a").content.decode()
    assert "Last sync:" in page and "1 repository" in page
    assert "1 problem in the last sync" in page and "manifest unknown" in page
    assert "someone else" not in page


@pytest.mark.django_db
def test_a_second_click_shows_the_running_sync_and_its_progress(client, maintainer):
    deliver(client, [event()])
    client.force_login(maintainer)
    registry = default_registry()
    mine = SyncRun.objects.create(registry=registry, repositories=0, remaining=1)
    mine.repository_syncs.create(name="hook/app")
    panel = client.post("/repositories/hook/app/-/sync").content.decode()
    assert "already running" in panel and "Syncing hook/app: 0 of 1 repository done" in panel
    assert SyncRun.objects.count() == 1

    reading = SyncRun.objects.create(registry=registry)  # reading the catalog: no list yet
    panel = client.post("/sync/").content.decode()
    assert "Syncing the whole registry: reading the catalog" in panel
    assert SyncRun.objects.count() == 2
    reading.delete()
    whole = SyncRun.objects.create(registry=registry, whole_catalog=True, repositories=1,
                                   remaining=2, tags=5)
    for url in ("/sync/", "/repositories/hook/app/-/sync"):
        panel = client.post(url).content.decode()
        assert "already running" in panel and SyncRun.objects.count() == 2
        assert "Syncing the whole registry: 1 of 3 repositories done, 5 tags read" in panel
        assert f'hx-get="{url}?watching={whole.pk}"' in panel and "every 1s" in panel
        assert 'id="sync-now" disabled' in panel
