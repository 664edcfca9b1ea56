"""Pending reclaim: what a deletion frees waits on disk for the registry's garbage collector;
hubmgr notices that it ran (a freed blob answers 404) and calls the bytes reclaimed. Against
the real registry and its real garbage collector."""

import math

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum
from django.utils import timezone

from hubmgr import celery_app, devstack
from hubmgr.deletion import actions, jobs, reclaim, retention, tasks
from hubmgr.deletion.graph import load_graph
from hubmgr.deletion.models import DeletionJob, ItemStatus, JobStatus, ReclaimBlob, ReclaimState
from hubmgr.deletion.planner import plan
from hubmgr.inventory.models import Manifest, Tag
from hubmgr.inventory.registries import client_for, default_registry
from hubmgr.registry.client import RegistryClient
from hubmgr.registry.errors import InvalidReference
from hubmgr.registry.manifests import sha256_digest

from tests.support.browser import OUTPUT, login
from tests.support.factories import make_image, make_index, make_repo
from tests.support.helpers import image, process, repo, sync

pytestmark = pytest.mark.django_db(transaction=True)
Pending, Reclaimed = ReclaimState.PENDING, ReclaimState.RECLAIMED


def world(client):
    """gc/app: an index of two images over a base layer that gc/other shares (so it stays),
    each with a layer of its own (the amd64 one, `big`, is the largest thing freed); an
    index `j` over a tagged image; a tagged image `solo`."""
    base = devstack.make_layer("base", 20_000)
    big = devstack.make_layer("big", 6000)
    a = devstack.push_image(client, "gc/app", [base, big], platform="linux/amd64")
    b = devstack.push_image(client, "gc/app", [base, devstack.make_layer("b", 3000)],
                            platform="linux/arm64")
    index = devstack.push_index(client, "gc/app", [a, b], tag="1.0")
    c = devstack.push_image(client, "gc/app", [devstack.make_layer("c", 2000)], tag="c")
    j = devstack.push_index(client, "gc/app", [c], tag="2.0")
    solo = image(client, "gc/app", tag="solo", seed="solo")
    devstack.push_image(client, "gc/other", [base, devstack.make_layer("o", 900)], tag="x")
    sync()
    return {"index": index, "a": a["digest"], "b": b["digest"], "j": j, "c": c["digest"],
            "solo": solo["digest"], "big": big}


def delete(digests, user=None, name="gc/app"):
    """Preview, confirm ("Delete forever") and run a deletion, as the page does."""
    r = repo(name)
    preview = actions.preview(r, digests, user)
    job = actions.confirm(r, preview.pk, user)
    process(job)
    job.refresh_from_db()
    return preview.plan, job


def check():
    client = client_for(default_registry())
    try:
        return reclaim.check(client)
    finally:
        client.close()


# ---- the proof ---------------------------------------------------------------------------------
def test_a_deletion_waits_for_the_garbage_collector_then_is_reclaimed_with_the_same_bytes(
        registry, collect, maintainer, client, capsys):
    d = world(RegistryClient(registry.url))
    shown, job = delete([d["index"]], maintainer)
    assert job.status == JobStatus.DONE
    assert job.reclaim_state == Pending and job.freed_bytes == shown["reclaim_bytes"] > 0
    summary = reclaim.summary(default_registry())
    assert (summary["pending_bytes"], summary["pending_jobs"]) == (shown["reclaim_bytes"], 1)
    assert summary["last_reclaimed_at"] is None and summary["reclaimed_bytes"] == 0
    client.force_login(maintainer)
    page = client.get(f"/jobs/{job.pk}").content.decode()
    assert "Deleted, waiting for garbage collection:" in page
    assert f"({shown['reclaim_bytes']} bytes)" in page

    # Until the collector runs, the freed layers are still served: nothing changes.
    result = check()
    assert (result["reclaimed"], result["probed"], result["error"]) == ([], 1, "")
    job.refresh_from_db()
    assert job.reclaim_state == Pending and job.reclaim_checked_at is not None

    assert collect() == shown["reclaim_bytes"]  # the estimate is what the collector frees
    call_command("check_reclaim")
    assert "reclaimed" in capsys.readouterr().out
    job.refresh_from_db()
    assert job.reclaim_state == Reclaimed and job.reclaimed_bytes == shown["reclaim_bytes"]
    assert job.reclaimed_at is not None and job.reclaimed_at >= job.finished_at
    assert not ReclaimBlob.objects.filter(job=job).exists()  # the table stays small

    summary = reclaim.summary(default_registry())
    assert (summary["pending_bytes"], summary["pending_jobs"]) == (0, 0)
    assert summary["last_reclaimed_bytes"] == summary["reclaimed_bytes"] == shown["reclaim_bytes"]
    assert summary["last_reclaimed_at"] == job.reclaimed_at
    assert [r["pk"] for r in summary["recent"]] == [job.pk]
    page = client.get(f"/jobs/{job.pk}").content.decode()
    assert "Reclaimed <strong>" in page and f"({shown['reclaim_bytes']} bytes) on" in page
    assert job.reclaimed_at.strftime("%Y-%m-%d %H:%M") in page
    state = client.get(f"/api/v1/deletions/{job.pk}").json()["reclaim"]
    assert state == {"state": "reclaimed", "freed_bytes": shown["reclaim_bytes"],
                     "reclaimed_bytes": shown["reclaim_bytes"],
                     "reclaimed_at": job.reclaimed_at.isoformat(),
                     "last_checked_at": job.reclaim_checked_at.isoformat(),
                     "last_check_error": None}
    # A second check changes nothing.
    assert check()["reclaimed"] == []


def test_a_partial_job_waits_only_for_what_its_deleted_items_free(registry, collect):
    d = world(RegistryClient(registry.url))
    r = repo("gc/app")
    graph, selected = load_graph(r, [d["index"], d["solo"]])
    p = plan(graph, selected)
    job = jobs.create_job(r, actions.plan_data(p, freed=True))
    assert ReclaimBlob.objects.filter(job=job).aggregate(n=Sum("size"))["n"] == p.reclaim_bytes
    solo = Manifest.objects.get(repository=r, digest=d["solo"])
    Tag.objects.create(repository=r, name="pinned", manifest=solo)  # as a push event would
    jobs.process_job(job.pk, client_for(default_registry()), wait=True)
    job.refresh_from_db()
    assert job.status == JobStatus.PARTIAL
    assert job.items.get(digest=d["solo"]).status == ItemStatus.SKIPPED
    assert job.reclaim_state == Pending and 0 < job.freed_bytes < p.reclaim_bytes
    assert collect() == job.freed_bytes  # exactly what the deleted items freed, no bound
    check()
    job.refresh_from_db()
    assert job.reclaim_state == Reclaimed and job.reclaimed_bytes == job.freed_bytes


def test_jobs_finished_before_the_collector_ran_are_reclaimed_and_later_ones_wait(
        registry, collect):
    d = world(RegistryClient(registry.url))
    # Its image keeps its own tag: it frees one manifest, which no blob HEAD can ask about.
    _, manifests_only = delete([d["j"]])
    assert manifests_only.reclaim_state == Pending and manifests_only.freed_bytes > 0
    assert not ReclaimBlob.objects.filter(job=manifests_only, manifest=False).exists()
    alone = check()
    assert (alone["reclaimed"], alone["probed"], alone["pending"]) == ([], 0, 1)
    _, second = delete([d["index"]])
    collect()
    _, later = delete([d["solo"]])
    result = check()
    # The collector ran after `second` finished, so after the job before it too.
    assert sorted(result["reclaimed"]) == [manifests_only.pk, second.pk]
    assert result["pending"] == 1 and result["pending_bytes"] == later.freed_bytes
    for job, state in ((manifests_only, Reclaimed), (second, Reclaimed), (later, Pending)):
        job.refresh_from_db()
        assert job.reclaim_state == state
    assert manifests_only.reclaimed_bytes == manifests_only.freed_bytes


@pytest.mark.parametrize("known", [True, False], ids=["in-the-inventory", "not-synced-yet"])
def test_a_layer_pushed_again_is_not_counted_as_reclaimed(registry, collect, known):
    push = RegistryClient(registry.url)
    d = world(push)
    shown, job = delete([d["index"]])
    big = sha256_digest(d["big"])
    assert ReclaimBlob.objects.filter(job=job).order_by("-size").first().digest == big
    devstack.push_image(push, "gc/again", [d["big"]], tag="back")  # the same layer, again
    if known:
        sync()
    freed = collect()
    assert freed == shown["reclaim_bytes"] - len(d["big"])  # the collector keeps it
    result = check()
    # Known: never asked about, and left out of the sum. Not known yet: asked, it answered
    # 200 while the other freed blobs answered 404: the collector ran, and it is left out.
    assert result["reclaimed"] == [job.pk] and result["reclaimed_bytes"] == freed
    job.refresh_from_db()
    assert job.reclaimed_bytes == freed and job.freed_bytes == shown["reclaim_bytes"]


def test_a_registry_that_does_not_answer_leaves_it_pending(registry, maintainer, client):
    d = world(RegistryClient(registry.url))
    _, job = delete([d["index"]])
    registry.stop()
    result = tasks.check_reclaim()  # the beat task
    assert "Cannot connect to the registry" in result["error"] and result["reclaimed"] == 0
    job.refresh_from_db()
    assert job.reclaim_state == Pending and "Cannot connect" in job.reclaim_error
    with pytest.raises(CommandError, match="Could not check: Cannot connect"):
        call_command("check_reclaim")
    client.force_login(maintainer)
    page = client.get("/jobs/")
    assert page.status_code == 200
    assert "The last check could not ask the registry" in page.content.decode()
    assert client.get(f"/jobs/{job.pk}").status_code == 200


def test_a_check_asks_about_three_blobs_and_an_error_answer_leaves_it_pending(
        registry, fault_proxy):
    d = world(RegistryClient(registry.url))
    _, job = delete([d["index"]])  # through the proxy, as every later request
    before = fault_proxy.count("HEAD", r"/blobs/")
    assert check()["probed"] == 1
    assert fault_proxy.count("HEAD", r"/blobs/") - before == reclaim.SAMPLE == 3
    fault_proxy.add("HEAD", r"/blobs/", "status", 503)
    result = check()
    assert "HTTP 503" in result["error"] and result["reclaimed"] == []
    job.refresh_from_db()
    assert job.reclaim_state == Pending and "HTTP 503" in job.reclaim_error


def test_refused_credentials_leave_it_pending(basic_registry, settings):
    settings.REGISTRY_URL = basic_registry.url
    settings.REGISTRY_USERNAME, settings.REGISTRY_PASSWORD = "robot", "s3cret"
    d = world(RegistryClient(basic_registry.url, "robot", "s3cret"))
    _, job = delete([d["index"]])
    assert job.reclaim_state == Pending
    settings.REGISTRY_PASSWORD = "wrong"
    result = tasks.check_reclaim()
    assert "refused hubmgr's credentials" in result["error"]
    job.refresh_from_db()
    assert job.reclaim_state == Pending and "credentials" in job.reclaim_error
    settings.REGISTRY_PASSWORD = "s3cret"
    assert tasks.check_reclaim()["error"] == ""  # still there, and the error is cleared
    job.refresh_from_db()
    assert job.reclaim_state == Pending and job.reclaim_error == ""


def test_a_job_whose_worker_stopped_before_settling_is_settled_by_the_check(registry):
    d = world(RegistryClient(registry.url))
    _, job = delete([d["index"]])
    freed = job.freed_bytes
    DeletionJob.objects.filter(pk=job.pk).update(reclaim_state=ReclaimState.OPEN, freed_bytes=0)
    check()
    job.refresh_from_db()
    assert job.reclaim_state == Pending and job.freed_bytes == freed


def test_the_client_heads_blobs_in_a_repository(registry):
    client = RegistryClient(registry.url)
    layer = devstack.make_layer("x", 100)
    desc = devstack.push_image(client, "head/me", [layer])
    assert client.blob_exists("head/me", sha256_digest(layer)) is True
    assert client.blob_exists("head/me", desc["digest"]) is False  # a manifest is no blob
    assert client.blob_exists("head/me", sha256_digest(b"never pushed")) is False
    with pytest.raises(InvalidReference):
        client.blob_exists("head/me", "sha256:not-a-digest")


# ---- without a registry ------------------------------------------------------------------------
def _plan_job(repo, digests):
    return jobs.create_job(repo, actions.plan_data(actions.make_plan(repo, digests), freed=True))


def _finish(job, status):
    job.items.update(status=status)
    jobs.update_status(job)
    job.refresh_from_db()
    return job


def test_a_job_that_deleted_nothing_freed_nothing(db):
    r = make_repo("team/app")
    loose = make_image(r, "loose", size=50)
    job = _finish(_plan_job(r, [loose.digest]), ItemStatus.FAILED)
    assert job.status == JobStatus.FAILED
    assert job.reclaim_state == ReclaimState.NOTHING and job.freed_bytes == 0
    assert not ReclaimBlob.objects.exists()
    assert reclaim.job_state(job)["freed_bytes"] == 0


def test_a_job_without_the_freed_set_records_it_from_the_inventory(db):
    """A cleanup policy's report keeps only totals: its jobs count what they free at start."""
    r = make_repo("team/app")
    kids = [make_image(r, f"k{n}", size=100 * (n + 1)) for n in range(2)]
    index = make_index(r, "idx", kids, tags=["1.0"])
    snap = actions.plan_data(actions.make_plan(r, [index.digest]), freed=True)
    job = jobs.create_job(r, {key: snap[key] for key in ("items", "kept", "reclaim_bytes")})
    rows = {(b.digest, b.size, b.manifest) for b in ReclaimBlob.objects.filter(job=job)}
    assert rows == {(d, s, True) for d, s in snap["freed"]["manifests"]} | {
        (d, s, False) for d, s in snap["freed"]["blobs"]}
    assert sum(s for _, s, _ in rows) == snap["reclaim_bytes"] == 300


def test_bisection_finds_the_last_job_the_collector_ran_after_in_few_probes():
    for n in (1, 2, 7, 64, 1000):
        for boundary in sorted({0, 1, n // 3, n - 1, n}):
            asked = []

            def ran_after(i, boundary=boundary, asked=asked):
                asked.append(i)
                return i < boundary

            assert reclaim.collected_prefix(list(range(n)), ran_after) == boundary
            assert len(set(asked)) <= math.ceil(math.log2(n + 1)) + 1
            assert asked[0] == n - 1  # the newest first: one probe when everything ran
    # A job that cannot be asked about is reclaimed when a job after it is; between one the
    # collector ran after and one it did not, it stays pending (it may have run in between).
    answers = [True, None, None, True, None, False, None]
    assert reclaim.collected_prefix(list(range(7)), lambda i: answers[i]) == 4
    answers = [None, None, True, False]
    assert reclaim.collected_prefix(list(range(4)), lambda i: answers[i]) == 3
    assert reclaim.collected_prefix(list(range(3)), lambda i: None) == 0


def test_untracked_and_running_jobs_are_not_in_the_summary_and_pages_show_it(db, logged_in):
    r = make_repo("team/app")
    make_image(r, "loose", size=50)
    old = DeletionJob.objects.create(repository=r, repository_name=r.name,
                                     deadline=timezone.now(), status="done",
                                     reclaim_state=ReclaimState.UNTRACKED, reclaim_bytes=999)
    running = _plan_job(r, [Manifest.objects.get().digest])
    summary = reclaim.summary(default_registry())
    assert (summary["pending_bytes"], summary["pending_jobs"], summary["reclaimed_jobs"]) == (
        0, 0, 0)
    assert reclaim.job_state(running) == {
        "state": "open", "freed_bytes": None, "reclaimed_bytes": None, "reclaimed_at": None,
        "last_checked_at": None, "last_check_error": None}
    page = logged_in.get("/jobs/").content.decode()
    assert "Deleted, waiting for garbage collection" in page and "nothing yet" in page
    assert "Reclaimed <strong>" not in logged_in.get(f"/jobs/{old.pk}").content.decode()
    resp = logged_in.get(f"/api/v1/deletions/{running.pk}")
    assert resp.json()["reclaim"]["state"] == "open"


def test_the_summary_counts_pending_and_the_last_detection(db, logged_in):
    r = make_repo("team/app")
    a, b, c = (_plan_job(r, [make_image(r, s, size=n).digest]) for s, n in
               (("a", 1000), ("b", 2000), ("c", 4000)))
    DeletionJob.objects.filter(pk=a.pk).update(status="done", reclaim_state=Pending,
                                               freed_bytes=1000)
    when = a.created_at
    DeletionJob.objects.filter(pk__in=[b.pk, c.pk]).update(
        status="done", reclaim_state=Reclaimed, freed_bytes=3000, reclaimed_bytes=3000,
        reclaimed_at=when)
    summary = reclaim.summary(default_registry())
    assert (summary["pending_bytes"], summary["pending_jobs"]) == (1000, 1)
    assert (summary["last_reclaimed_bytes"], summary["last_reclaimed_jobs"]) == (6000, 2)
    assert summary["last_reclaimed_at"] == when and len(summary["recent"]) == 2
    for url in ("/jobs/", "/"):  # the jobs page and the overview
        page = logged_in.get(url).content.decode()
        assert "Deleted, waiting for garbage collection" in page
        assert "1.0 kB" in page and "from 1 deletion" in page and "6.0 kB" in page
        assert when.strftime("%Y-%m-%d %H:%M") in page


def test_pruning_an_old_job_removes_what_it_waited_on(db):
    r = make_repo("team/app")
    job = _plan_job(r, [make_image(r, "old", size=10).digest])
    assert ReclaimBlob.objects.filter(job=job).exists()
    DeletionJob.objects.filter(pk=job.pk).update(
        status="done", reclaim_state=Pending, finished_at=job.created_at.replace(year=2000))
    assert retention.prune_jobs(days=30) == 1
    assert not ReclaimBlob.objects.exists()


def test_beat_asks_every_few_minutes(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["reclaim-check"]
    assert entry["task"] == tasks.check_reclaim.name in celery_app.tasks
    assert entry["schedule"] == settings.RECLAIM_CHECK_MINUTES * 60 > 0


def test_the_jobs_page_shows_the_space_in_chromium(browser, live_server):
    r = make_repo("team/app")
    pending, done = (_plan_job(r, [make_image(r, s, size=n).digest]) for s, n in
                     (("a", 1_250_000), ("b", 3_400_000)))
    DeletionJob.objects.filter(pk=pending.pk).update(status="done", reclaim_state=Pending,
                                                     freed_bytes=1_250_000,
                                                     finished_at=timezone.now())
    DeletionJob.objects.filter(pk=done.pk).update(
        status="done", finished_at=timezone.now(), reclaim_state=Reclaimed, freed_bytes=3_400_000,
        reclaimed_bytes=3_400_000, reclaimed_at=timezone.now())
    page = login(browser, live_server, "viewer")
    page.goto(f"{live_server.url}/jobs/")
    summary = page.get_by_role("region", name="Disk space from deletions")
    assert "Deleted, waiting for garbage collection" in summary.inner_text()
    assert "1.2 MB" in summary.inner_text() and "3.4 MB" in summary.inner_text()
    summary.get_by_text("Recently reclaimed").click()
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "reclaim-summary.png"), full_page=True)
    page.goto(f"{live_server.url}/jobs/{pending.pk}")
    assert "Deleted, waiting for garbage collection: 1.2 MB" in page.inner_text("main")
    assert page.csp_violations == []
    page.context.close()
