"""Runs of cleanup policies: reports planned over the inventory, the brake, the cleanup command,
runs in delete mode against the registry, one run at a time, a run's claim, its sign of life
and time limit, and the set-wise preview's work tables."""

import json
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import CommandError
from django.utils import timezone

from hubmgr.deletion.planner import CHILD, SELECTED
from hubmgr.inventory.catalog.store import refresh
from hubmgr.inventory.models import Manifest, Repository
from hubmgr.inventory.registries import default_registry
from hubmgr.policies import runs, service
from hubmgr.policies.models import CleanupPolicy, PolicyRun

from tests.support.factories import (
    days_ago, digest, make_artifact, make_image, make_index, make_repo, observe_pulls)
from tests.support.policies import (
    NOW, RELEASE, braked_run, cleanup, delete_builds, keep_ten_builds, policy, work_tables)


def test_a_dry_run_reports_each_item_with_its_rule_and_the_reclaim(builds_repo):
    report = runs.plan_every_item(keep_ten_builds())
    assert report["totals"]["repositories"] == 1  # other/x is not covered
    [repo] = report["repositories"]
    going = {i["digest"]: i["rule"] for i in repo["going"]}
    assert going == {digest("build0"): "tag", digest("build1"): "tag",
                     digest("loose1"): "untagged", digest("loose2"): "untagged"}
    assert {i["digest"]: i["keep"] for i in repo["protected"]} == {
        digest("rel"): ["tag"], digest("idx"): ["tag"],
        **{digest(f"build{n}"): ["last"] for n in range(2, 12)}}
    assert repo["reclaim_bytes"] == 4 * 1000  # one layer each; no manifest sizes
    assert repo["brake"] is None and report["note"].startswith("Index children")
    assert not PolicyRun.objects.exists()  # a dry run records nothing by itself


def test_the_brake_stops_a_repository_that_would_lose_too_much(builds_repo):
    p = keep_ten_builds()
    p.remove_tag_regex, p.keep_last, p.keep_tag_regex = ".", None, ""
    [repo] = runs.plan_every_item(p)["repositories"]
    assert "more than the limit of 50%" in repo["brake"]  # 16 of 17 items
    p.brake_share, p.brake_count = 1.0, 3
    report = runs.plan_every_item(p)
    assert "more than the limit of 3" in report["repositories"][0]["brake"]
    assert report["totals"]["braked"] == 1 and report["totals"]["reclaim_bytes"] == 0
    assert report["totals"]["braked_reclaim_bytes"] > 0
    p.brake_count = None
    assert runs.plan_every_item(p)["repositories"][0]["brake"] is None


def test_only_stale_on_evidence_is_removed(db):
    repo = make_repo("team/s")
    make_image(repo, "old", tags=["a"], pushed=settings.STALE_DAYS + 5)
    make_image(repo, "fresh", tags=["b"], pushed=1)
    make_image(repo, "other", tags=["c"], pushed=settings.STALE_DAYS + 5)
    refresh(repo)
    p = policy(remove_stale=True, brake_share=1.0)
    assert runs.plan_every_item(p)["repositories"] == []  # no window: Stale is unknown
    observe_pulls(settings.STALE_DAYS + 10)
    [r] = runs.plan_every_item(p)["repositories"]
    assert {i["digest"] for i in r["going"]} == {digest("old"), digest("other")}


def test_an_index_child_goes_only_with_its_index_and_a_shared_one_stays(db):
    repo = make_repo("team/m")
    amd, arm = make_image(repo, "amd"), make_image(repo, "arm")
    make_index(repo, "old", [amd, arm], tags=["build-1"], pushed=50)
    make_index(repo, "new", [arm], tags=["build-2"], pushed=1)
    refresh(repo)
    Manifest.objects.filter(repository=repo).update(first_seen=days_ago(60))
    p = policy(remove_tag_regex="^build-", remove_tag_days=30, remove_untagged_days=0,
               brake_share=1.0)
    [r] = runs.plan_every_item(p)["repositories"]
    assert [(i["digest"], i["reason"]) for i in r["going"]] == [
        (digest("old"), SELECTED), (digest("amd"), CHILD)]
    assert [(i["digest"], i["reason"]) for i in r["kept"]] == [
        (digest("arm"), f"also referenced by index {digest('new')[:19]} (build-2)")]


def test_the_command_prints_each_repository_and_item_with_its_rule(builds_repo):
    keep_ten_builds()
    out = cleanup("builds", "--dry-run")
    assert "team/app: 4 of 17 items to delete" in out
    assert f"delete   {digest('build0')}  image  build-0  (rule tag)" in out
    assert f"protect  {digest('build2')}  build-2  (rule tag, kept by last)" in out
    assert "Total: 4 items to delete in 1 of 1 repository covered; 4.0 kB (4000 bytes)" in out
    run = PolicyRun.objects.get()
    assert (run.status, run.dry_run, run.finished_at is not None) == ("done", True, True)
    report = json.loads(cleanup("builds", "--dry-run", "--json"))
    assert report["totals"]["going"] == 4


@pytest.mark.django_db
def test_the_command_says_what_is_missing():
    assert "There are no cleanup policies" in cleanup("--dry-run")
    with pytest.raises(CommandError, match="No cleanup policy named 'nope'"):
        cleanup("nope", "--dry-run")
    assert "There are no cleanup policies" in cleanup()


def test_repositories_nothing_can_match_cost_no_query_of_their_own(
        db, django_assert_max_num_queries):
    for n in range(5):
        repo = make_repo(f"team/fresh{n}")
        make_image(repo, f"f{n}", tags=["build-1"], pushed=1)
        make_image(repo, f"u{n}", pushed=1)
        refresh(repo)
    p = policy(remove_tag_regex="^build-", remove_tag_days=30, remove_untagged_days=7,
               remove_stale=True, keep_last=3)
    registry = default_registry()
    with django_assert_max_num_queries(2):  # the repositories, then their candidates
        assert runs.plan_every_item(p, registry=registry)["repositories"] == []


def test_each_going_item_carries_what_a_deletion_job_needs(builds_repo):
    from hubmgr.deletion import jobs

    [repo] = runs.plan_every_item(keep_ten_builds())["repositories"]
    job = jobs.create_job(builds_repo, {"items": repo["going"], "kept": repo["kept"],
                                        "reclaim_bytes": repo["reclaim_bytes"]})
    assert list(job.items.order_by("position").values_list("digest", "reason")) == [
        (i["digest"], i["reason"]) for i in repo["going"]]


def test_a_failed_dry_run_is_recorded_as_failed_with_its_reason(builds_repo, monkeypatch):
    p = keep_ten_builds()

    def broken(*args, **kwargs):
        raise RuntimeError("the inventory went away")

    monkeypatch.setattr(runs, "load_graphs", broken)
    run = runs.record_dry_run(p)
    assert (run.status, run.error, run.report) == (
        "failed", "RuntimeError: the inventory went away", {})
    assert run.finished_at is not None
    with pytest.raises(CommandError, match="Failed: builds"):
        cleanup("--dry-run")


def test_the_command_runs_every_policy_and_shows_the_brake(builds_repo):
    keep_ten_builds()
    service.save_policy(policy(name="everything", remove_tag_regex=".", remove_tag_days=0))
    out = cleanup("--dry-run")
    assert "Policy builds (nothing is deleted; mode: report)" in out
    assert "Policy everything (nothing is deleted; mode: report)" in out
    assert "STOPPED BY THE BRAKE: the plan removes 14 of 17 items (82%)" in out
    assert ("The brake stopped 1 repository, holding back 14 items, with their 2 child images "
            "(15.0 kB, 15000 bytes).") in out
    assert dict(PolicyRun.objects.values_list("policy__name", "status")) == {
        "builds": "done", "everything": "braked"}
    reports = json.loads(cleanup("--dry-run", "--json"))
    assert [r["policy"] for r in reports] == ["builds", "everything"]


def test_a_policy_in_report_mode_deletes_nothing_and_one_in_delete_mode_starts_jobs(
        builds_repo):
    from hubmgr.deletion.models import DeletionJob

    p = keep_ten_builds()
    service.save_policy(policy(name="everything", include="**", remove_tag_regex=".",
                               remove_tag_days=0, mode="delete"))
    out = cleanup("builds")
    assert "Policy builds (nothing is deleted; mode: report)" in out
    assert not DeletionJob.objects.exists()
    assert "Deletion job" not in cleanup("--dry-run")  # delete mode, but a dry run

    p.mode = "delete"
    service.save_policy(p)
    out = cleanup("builds")
    job = DeletionJob.objects.get()
    assert f"Deletion job {job.pk} started" in out and "(deleting; mode: delete)" in out
    run = PolicyRun.objects.filter(policy=p).first()
    assert (run.dry_run, list(run.jobs.all()), run.report["repositories"][0]["job"]) == (
        False, [job], job.pk)
    going = run.report["repositories"][0]["going"]
    assert list(job.items.order_by("position").values_list("digest", flat=True)) == [
        i["digest"] for i in going]
    assert job.reclaim_bytes == run.report["repositories"][0]["reclaim_bytes"] == 4000

    cleanup("everything")  # the brake stops team/app: no job
    run = PolicyRun.objects.filter(policy__name="everything", dry_run=False).get()
    assert run.status == "braked" and not run.jobs.exists()
    assert DeletionJob.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_against_the_registry_report_mode_deletes_nothing_and_delete_mode_exactly_the_report(
        registry, registry_client):
    from hubmgr import devstack

    from tests.support.helpers import image, multiarch, process, sync

    c = registry_client
    d = {tag: image(c, "pol/app", tag=tag, seed=tag)["digest"]
         for tag in ("build-1", "build-2", "build-3", "v1.0.0")}
    d["loose"] = image(c, "pol/app", seed="loose")["digest"]
    index, kids = multiarch(c, "pol/app", tag="build-0", seed="m")
    d["index"], d["kids"] = index, [k["digest"] for k in kids]
    image(c, "pol/other", tag="build-1", seed="other")
    sync()
    # An untagged image is known from its push event; the catalog cannot list it.
    Manifest.objects.create(repository=Repository.objects.get(name="pol/app"),
                            digest=d["loose"])
    sync()
    # Pushes seen 40 days ago (as notifications would have told), build-3 35 days ago.
    Manifest.objects.update(last_pushed=days_ago(40), last_pushed_source="push_event")
    Manifest.objects.filter(digest=d["build-3"]).update(last_pushed=days_ago(35))
    p = service.save_policy(policy(
        name="pol", include="pol/app", remove_tag_regex="^build-", remove_tag_days=30,
        remove_untagged_days=7, keep_last=1, keep_tag_regex=RELEASE, brake_share=1.0))
    expected = {d["build-1"], d["build-2"], d["loose"], d["index"], *d["kids"]}

    cleanup("pol")
    [repo] = PolicyRun.objects.get().report["repositories"]
    assert {i["digest"] for i in repo["going"]} == expected
    assert {i["digest"]: i["keep"] for i in repo["protected"]} == {d["build-3"]: ["last"]}
    for digest_ in d.values():
        for one in ([digest_] if isinstance(digest_, str) else digest_):
            assert c.head_manifest("pol/app", one) is not None

    p.mode = "delete"
    service.save_policy(p)
    cleanup("pol")
    run = PolicyRun.objects.filter(dry_run=False).get()
    [job] = run.jobs.all()
    assert process(job) == "done"
    assert run.report["repositories"][0]["reclaim_bytes"] == job.reclaim_bytes > 0
    for one in expected:
        assert c.head_manifest("pol/app", one) is None
    for tag in ("build-3", "v1.0.0"):
        assert c.head_manifest("pol/app", d[tag]) is not None
    assert c.head_manifest("pol/other", "build-1") is not None
    registry.stop()  # the collector runs offline, and frees exactly the reported bytes
    before = devstack.blob_bytes(registry.root)
    devstack.garbage_collect(registry.config_path)
    assert before - devstack.blob_bytes(registry.root) == job.reclaim_bytes


def test_the_admin_pages_show_policies_runs_and_changes(admin_client, builds_repo):
    p = keep_ten_builds()
    runs.record_dry_run(p)
    for path in ("/admin/policies/cleanuppolicy/", "/admin/policies/cleanuppolicy/add/",
                 f"/admin/policies/cleanuppolicy/{p.pk}/change/", "/admin/policies/policyrun/",
                 "/admin/policies/policyaudit/"):
        assert admin_client.get(path).status_code == 200, path
    response = admin_client.post("/admin/policies/cleanuppolicy/add/", {
        "name": "bad", "include": "**", "mode": "report", "schedule": "off",
        "keep_tag_regex": "(a)\\1", "remove_untagged_days": "7", "brake_share": "0.5"})
    assert response.status_code == 200 and "backreferences" in response.content.decode()
    assert not CleanupPolicy.objects.filter(name="bad").exists()


def test_one_run_of_a_policy_at_a_time_and_an_interrupted_one_is_marked_failed(builds_repo):
    p = keep_ten_builds()
    running = PolicyRun.objects.create(policy=p)
    with pytest.raises(runs.AlreadyRunning):
        runs.record_dry_run(p)
    with pytest.raises(CommandError, match="Failed: builds"):
        cleanup("builds", "--dry-run")
    PolicyRun.objects.filter(pk=running.pk).update(
        heartbeat_at=timezone.now() - runs.ABANDONED_AFTER - timedelta(seconds=1))
    assert runs.record_dry_run(p).status == "done"
    running.refresh_from_db()
    assert (running.status, running.error) == (
        "failed", "Interrupted: the process running it stopped (no sign of life for 5 minutes).")
    assert running.finished_at is not None


def test_a_run_declared_dead_while_it_works_deletes_nothing_and_stays_failed(
        builds_repo, monkeypatch):
    """The zombie: a run still selecting is marked failed by another process (its heartbeat
    looked old), a second run of the policy starts, and then the first one finishes."""
    from hubmgr.deletion.models import DeletionJob

    p = delete_builds()
    second = []
    real_plan = runs.plan_every_item

    def slow_dry_run(policy, **kwargs):
        report = real_plan(policy, **kwargs)
        later = timezone.now() + runs.ABANDONED_AFTER + timedelta(minutes=1)
        assert runs.fail_abandoned(policy, now=later) == 1  # what run_due would do then
        second.append(runs.claim_run(policy))
        return report

    monkeypatch.setattr(runs, "plan_every_item", slow_dry_run)
    first = runs.record_run(p, delete=True)
    assert first.status == "failed" and first.error.startswith("Interrupted")
    assert not first.jobs.exists() and not DeletionJob.objects.exists()
    assert PolicyRun.objects.get(pk=second[0].pk).status == "running"


def test_only_a_run_holding_a_live_claim_creates_deletion_jobs(builds_repo):
    from hubmgr.deletion.models import DeletionJob

    p = delete_builds()
    run = runs.claim_run(p)
    report = runs.plan_every_item(p)
    PolicyRun.objects.filter(pk=run.pk).update(
        heartbeat_at=timezone.now() - runs.ABANDONED_AFTER - timedelta(seconds=1))
    with pytest.raises(runs.ClaimLost):
        runs.start_jobs(run, report)  # not marked failed yet, but its claim is not live
    assert not DeletionJob.objects.exists()
    PolicyRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
    runs.start_jobs(run, report)
    assert DeletionJob.objects.count() == 1


def test_a_run_writes_its_sign_of_life_while_one_long_step_runs(
        builds_repo, transactional_db, monkeypatch):
    monkeypatch.setattr(runs, "HEARTBEAT_SECONDS", 0.05)
    p = keep_ten_builds()
    seen = []
    real_plan = runs.plan_every_item

    def long_selection(policy, **kwargs):  # one long query: no per-repository callback
        run = PolicyRun.objects.get(status="running")
        PolicyRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(
            minutes=4))
        time.sleep(0.6)
        seen.append(timezone.now() - PolicyRun.objects.get(pk=run.pk).heartbeat_at)
        return real_plan(policy, **kwargs)

    monkeypatch.setattr(runs, "plan_every_item", long_selection)
    assert runs.record_dry_run(p).status == "done"
    assert seen[0] < timedelta(seconds=1)


def test_a_run_past_its_time_limit_stops_and_starts_no_deletion(builds_repo, settings):
    from hubmgr.deletion.models import DeletionJob

    settings.POLICY_RUN_SECONDS = 0
    run = runs.record_run(delete_builds(), delete=True)
    assert run.status == "failed" and "HUBMGR_POLICY_RUN_SECONDS" in run.error
    assert not DeletionJob.objects.exists()


def test_run_totals_are_read_without_the_report(builds_repo):
    run = braked_run()
    [listed] = runs.with_totals(PolicyRun.objects.filter(pk=run.pk))
    assert "report" in listed.get_deferred_fields()
    assert listed.totals == run.report["totals"] and listed.totals["braked"] == 1


def test_a_dry_run_loads_repositories_in_chunks(builds_repo, monkeypatch):
    for n in range(4):
        repo = make_repo(f"team/more{n}")
        make_image(repo, f"more{n}", pushed=30)
        refresh(repo)
    p = keep_ten_builds()
    whole = runs.plan_every_item(p, now=NOW)
    monkeypatch.setattr(runs, "CHUNK", 2)
    assert runs.plan_every_item(p, now=NOW) == whole
    assert [r["repository"] for r in whole["repositories"]] == [
        "team/app", "team/more0", "team/more1", "team/more2", "team/more3"]


def test_an_index_whose_child_was_pulled_counts_as_pulled(db):
    observe_pulls(settings.STALE_DAYS + 10)
    repo = make_repo("team/pulled")
    amd, arm = make_image(repo, "amd", pulled=2), make_image(repo, "arm")
    make_index(repo, "idx", [amd, arm], tags=["build-1"], pushed=300)
    make_index(repo, "idle", [make_image(repo, "s390x")], tags=["build-2"], pushed=300)
    refresh(repo)
    p = policy(remove_stale=True, brake_share=1.0)
    [r] = runs.plan_every_item(p)["repositories"]
    assert {i["digest"] for i in r["going"]} == {digest("idle"), digest("s390x")}
    p = policy(remove_tag_regex="^build-", remove_tag_days=30, keep_pulled_days=7,
               brake_share=1.0)
    [r] = runs.plan_every_item(p)["repositories"]
    assert [(i["digest"], i["keep"]) for i in r["protected"]] == [(digest("idx"), ["pulled"])]


def test_a_failed_setwise_dry_run_leaves_nothing_behind_for_the_next(builds_repo, monkeypatch):
    from hubmgr.policies import setwise

    p = keep_ten_builds()
    good = runs.preview(p, 5, now=NOW)
    real = setwise.cascade

    def failing(cursor, *args):
        real(cursor, *args)
        cursor.execute("SELECT no_such_column FROM no_such_table")

    monkeypatch.setattr(setwise, "cascade", failing)
    with pytest.raises(Exception, match="no_such_(column|table)"):
        runs.preview(p, 5, now=NOW)
    monkeypatch.setattr(setwise, "cascade", real)
    assert runs.preview(p, 5, now=NOW) == good
    assert work_tables() == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres  # SQLite's transactions are IMMEDIATE here (settings): dry runs take turns
def test_two_dry_runs_at_once_neither_waits_for_the_other(builds_repo, monkeypatch):
    """Each dry run's work tables are its own (on PostgreSQL, regular tables named for it and
    never committed): a second dry run while the first holds its tables finishes, and both
    answer alike."""
    import threading

    from django.db import connection

    from hubmgr.policies import setwise

    p = keep_ten_builds()
    good = runs.preview(p, 5, now=NOW)
    real, holding, release, answers = setwise.cascade, threading.Event(), threading.Event(), {}

    def held(cursor, *args):
        real(cursor, *args)
        if threading.current_thread().name == "first":
            holding.set()
            release.wait(30)

    def dry_run(name):
        try:
            answers[name] = runs.preview(p, 5, now=NOW)
        finally:
            connection.close()

    monkeypatch.setattr(setwise, "cascade", held)
    first = threading.Thread(target=dry_run, args=["first"], name="first")
    first.start()
    try:
        assert holding.wait(30)
        second = threading.Thread(target=dry_run, args=["second"], name="second")
        second.start()
        second.join(30)
        assert "second" in answers, "the second dry run waited for the first"
    finally:
        release.set()
        first.join(30)
    assert answers == {"first": good, "second": good}
    assert work_tables() == []


@pytest.mark.parametrize("limit", [None, 0, 100])
def test_what_goes_is_counted_apart_top_level_items_children_and_attached(db, limit):
    """The issue's case: one index with its two child images goes, two items stay; the report
    said "3 of 3 items". Both engines count the one item apart from its two children (and an
    attestation attached to the index apart from both)."""
    repo = make_repo("library/alpine")
    amd, arm = make_image(repo, "amd"), make_image(repo, "arm")
    index = make_index(repo, "idx", [amd, arm], pushed=30)
    make_artifact(repo, "att", subject=index, kind="attestation", pushed=30)
    make_image(repo, "keep1", tags=["3.19"], pushed=1)
    make_image(repo, "keep2", tags=["3.20"], pushed=1)
    refresh(repo)
    p = policy(include="library/*", remove_untagged_days=7, brake_share=1.0)
    report = runs.plan_every_item(p, now=NOW) if limit is None else runs.preview(p, limit,
                                                                                 now=NOW)
    [entry] = report["repositories"]
    assert (entry["items"], entry["going_count"], entry["going_items"],
            entry["going_children"], entry["going_attached"]) == (3, 4, 1, 2, 1)
    totals = report["totals"]
    assert (totals["going"], totals["going_items"], totals["going_children"],
            totals["going_attached"]) == (4, 1, 2, 1)
