"""A run that plans first ("Run now" on the page in delete mode): nothing is deleted until a
maintainer confirms what it showed, once, while the plan is fresh and the policy unchanged;
the brake's repositories stay braked. The API, the CLI and the schedule delete at once."""

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from hubmgr.policies import runs, service
from hubmgr.policies.models import PolicyRun

from tests.support.policies import awaiting_run, cleanup, policy


def untagged(**fields):
    """team/app loses loose1 and loose2, other/x its x0 (builds_repo)."""
    return service.save_policy(policy(**{"name": "untagged", "remove_untagged_days": 7,
                                         "mode": "delete", "brake_share": 1.0, **fields}))


def going(run):
    return {e["repository"]: sorted(i["digest"] for i in e["going"])
            for e in run.report["repositories"]}


def test_it_plans_deletes_nothing_and_confirming_starts_exactly_the_plans_shown(
        builds_repo, maintainer):
    from hubmgr.deletion.models import DeletionJob

    run = awaiting_run(untagged(), maintainer)
    assert (run.status, run.dry_run, run.confirm_first) == ("awaiting", False, True)
    assert not DeletionJob.objects.exists() and not run.jobs.exists()
    shown = going(run)
    assert {repo: len(d) for repo, d in shown.items()} == {"team/app": 2, "other/x": 1}
    assert "Delete forever" in runs.cannot_confirm(run)  # not the brake's turn

    job_ids = runs.confirm_run(run, maintainer)
    run.refresh_from_db()
    assert (run.status, run.answered_by) == ("done", maintainer)
    assert sorted(job_ids) == sorted(j.pk for j in run.jobs.all()) and len(job_ids) == 2
    for job in DeletionJob.objects.all():
        assert sorted(job.items.values_list("digest", flat=True)) == shown[job.repository_name]
        assert job.created_by == maintainer
    assert {e["repository"]: e["job"] for e in run.report["repositories"]} == {
        j.repository_name: j.pk for j in DeletionJob.objects.all()}
    for answer in (runs.confirm_run, runs.cancel_run):  # a double click, a late Cancel
        with pytest.raises(runs.CannotConfirm, match="Already confirmed by maria at "):
            answer(run, maintainer)
    assert DeletionJob.objects.count() == 2


def test_what_the_brake_stops_stays_braked_and_is_confirmed_on_its_own(builds_repo,
                                                                       maintainer):
    from hubmgr.deletion.models import DeletionJob

    run = awaiting_run(untagged(brake_count=1), maintainer)  # team/app would lose 2 > 1
    assert run.status == "awaiting" and run.report["totals"]["braked"] == 1
    [job_id] = runs.confirm_run(run, maintainer)
    assert DeletionJob.objects.get(pk=job_id).repository_name == "other/x"
    run.refresh_from_db()
    assert run.status == "braked" and runs.cannot_confirm(run) is None
    [braked_job] = runs.confirm_brake(run, maintainer)
    assert DeletionJob.objects.get(pk=braked_job).repository_name == "team/app"


def test_a_run_with_nothing_unbraked_to_delete_does_not_wait(builds_repo, maintainer):
    nothing = awaiting_run(untagged(include="nobody/*"), maintainer)
    assert nothing.status == "done" and runs.cannot_confirm_run(nothing) == (
        "This run does not wait for a confirmation: nothing to confirm.")
    braked_only = awaiting_run(untagged(name="u2", include="team/*", brake_count=1),
                               maintainer)
    assert braked_only.status == "braked"  # the brake's own confirmation shows its figures


def test_a_plan_too_old_is_refused_and_marked_not_confirmed(builds_repo, maintainer):
    run = awaiting_run(untagged(), maintainer)
    later = timezone.now() + timedelta(hours=2)
    with pytest.raises(runs.CannotConfirm, match="not confirmed within 60 minutes and deleted "
                                                 "nothing; run the policy again"):
        runs.confirm_run(run, maintainer, now=later)
    run.refresh_from_db()
    assert (run.status, run.answered_at) == ("unconfirmed", None) and not run.jobs.exists()


def test_waiting_runs_past_their_time_are_marked_by_the_minute_task(builds_repo, maintainer):
    from hubmgr.policies import tasks

    fresh = awaiting_run(untagged(), maintainer)
    old = awaiting_run(untagged(name="u2"), maintainer)
    PolicyRun.objects.filter(pk=old.pk).update(
        finished_at=timezone.now() - timedelta(minutes=61))
    assert runs.cannot_confirm_run(PolicyRun.objects.get(pk=old.pk)).startswith(
        "This run's plan is too old to confirm")
    tasks.run_due()
    assert dict(PolicyRun.objects.values_list("pk", "status")) == {
        fresh.pk: "awaiting", old.pk: "unconfirmed"}


def test_a_changed_policy_cannot_be_confirmed(builds_repo, maintainer):
    run = awaiting_run(untagged(), maintainer)
    service.save_policy(run.policy, maintainer)  # saved unchanged: no audit, still confirmable
    assert runs.cannot_confirm_run(run) is None
    run.policy.remove_untagged_days = 20
    service.save_policy(run.policy, maintainer)
    with pytest.raises(runs.CannotConfirm, match=r"The policy changed after this run started "
                                                 r"\(.* by maria\); run it again"):
        runs.confirm_run(run, maintainer)
    run.refresh_from_db()
    assert run.status == "awaiting" and run.answered_at is None and not run.jobs.exists()


def test_cancel_deletes_nothing_ever_and_says_who(builds_repo, maintainer):
    run = awaiting_run(untagged(), maintainer)
    runs.cancel_run(run, maintainer)
    run.refresh_from_db()
    assert (run.status, run.answered_by) == ("unconfirmed", maintainer)
    with pytest.raises(runs.CannotConfirm, match="cancelled by maria at .* deleted nothing"):
        runs.confirm_run(run, maintainer)
    assert not run.jobs.exists()


def test_a_running_run_cannot_be_answered(builds_repo, maintainer):
    run = runs.claim_run(untagged(), maintainer, confirm_first=True)
    with pytest.raises(runs.CannotConfirm, match="still planning"):
        runs.confirm_run(run, maintainer)


def test_only_a_delete_mode_run_from_the_page_waits(builds_repo, maintainer):
    """Report mode deletes nothing anyway; the CLI and the schedule are the policy's explicit
    setting (the API's run too: a dry run first, a run without it is the confirmation)."""
    report = runs.claim_run(untagged(name="r", mode="report"), maintainer, confirm_first=True)
    assert (report.dry_run, report.confirm_first) == (True, False)
    untagged()
    cleanup("untagged")
    run = PolicyRun.objects.get(policy__name="untagged")
    assert (run.status, run.confirm_first, run.jobs.count()) == ("done", False, 2)


@pytest.mark.django_db(transaction=True)
def test_two_confirmations_at_once_start_one_set_of_jobs(builds_repo, maintainer,
                                                         monkeypatch):
    from django.db import connection

    from hubmgr.deletion import jobs
    from hubmgr.deletion.models import DeletionJob

    run = awaiting_run(untagged(), maintainer)
    create_job = jobs.create_job

    def slow_create_job(*args, **kwargs):
        time.sleep(0.3)  # the other confirmation arrives meanwhile
        return create_job(*args, **kwargs)

    monkeypatch.setattr(jobs, "create_job", slow_create_job)
    both, outcomes = threading.Barrier(2), []

    def confirm():
        try:
            loaded = PolicyRun.objects.get(pk=run.pk)  # both see it waiting
            both.wait()
            outcomes.append(runs.confirm_run(loaded, maintainer))
        except runs.CannotConfirm as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=confirm) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    started = [o for o in outcomes if isinstance(o, list)]
    refused = [o for o in outcomes if isinstance(o, str)]
    assert len(started) == 1 and len(refused) == 1, outcomes
    assert refused[0].startswith("Already confirmed by maria at ")
    assert sorted(started[0]) == sorted(DeletionJob.objects.values_list("pk", flat=True))
    assert len(started[0]) == 2
    run.refresh_from_db()
    assert run.status == "done" and sorted(j.pk for j in run.jobs.all()) == sorted(started[0])


@pytest.mark.django_db(transaction=True)
def test_against_the_registry_run_now_shows_first_and_delete_forever_deletes_what_it_showed(
        registry, registry_client, maint, monkeypatch):
    """The page's Run now deletes nothing and shows the figures; Delete forever deletes
    exactly the items shown, and the job's recheck keeps one tagged again since."""
    from hubmgr.deletion.models import DeletionJob
    from hubmgr.inventory.models import Manifest
    from hubmgr.policies import tasks

    from tests.support.factories import days_ago
    from tests.support.helpers import image, process, sync

    c = registry_client
    old = [image(c, "conf/app", tag=f"build-{n}", seed=f"b{n}")["digest"] for n in range(3)]
    new = image(c, "conf/app", tag="build-9", seed="b9")["digest"]
    sync()
    Manifest.objects.update(last_pushed=days_ago(40), last_pushed_source="push_event")
    Manifest.objects.filter(digest=new).update(last_pushed=days_ago(1))
    p = service.save_policy(policy(name="builds", include="conf/*", remove_tag_regex="^build-",
                                   remove_tag_days=30, mode="delete", brake_share=1.0))
    monkeypatch.setattr(tasks.execute_run, "delay", tasks.execute_run)  # no worker needed
    resp = maint.post(f"/policies/{p.pk}/run")
    run = PolicyRun.objects.get()
    html = maint.get(resp.url).content.decode()
    assert "The run would delete 3 items in 1 of 1 covered repository" in html
    assert all(d[7:19] in html for d in old) and new[7:19] not in html
    assert not DeletionJob.objects.exists()
    assert all(c.head_manifest("conf/app", d) for d in [*old, new])

    fetched = c.get_manifest("conf/app", old[2])  # tagged again after the figures were shown
    c.put_manifest("conf/app", "keep-me", fetched.body, fetched.media_type)
    assert maint.post(f"/policies/runs/{run.pk}/confirm").status_code == 302
    [job] = run.jobs.all()
    assert sorted(job.items.values_list("digest", flat=True)) == sorted(old)
    process(job)
    assert dict(job.items.values_list("digest", "status")) == {
        old[0]: "done", old[1]: "done", old[2]: "skipped"}
    assert c.head_manifest("conf/app", old[0]) is None
    assert c.head_manifest("conf/app", old[1]) is None
    assert c.head_manifest("conf/app", old[2]) and c.head_manifest("conf/app", new)
