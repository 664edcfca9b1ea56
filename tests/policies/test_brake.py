"""Confirming what the brake stopped: once, while the plan is fresh and the policy unchanged."""

import time
from datetime import timedelta

import pytest
from django.core.management import CommandError
from django.utils import timezone

from hubmgr.policies import runs, service
from hubmgr.policies.models import PolicyRun

from tests.support.policies import braked_run, cleanup, policy


def test_a_maintainer_confirms_what_the_brake_stopped_once_while_the_plan_is_fresh(
        builds_repo, maintainer):
    from hubmgr.deletion.models import DeletionJob

    p = service.save_policy(policy(name="everything", remove_tag_regex=".", remove_tag_days=0,
                                   mode="delete"))
    dry = runs.record_dry_run(p)
    with pytest.raises(runs.CannotConfirm, match="delete mode"):
        runs.confirm_brake(dry, maintainer)
    out = cleanup("everything")
    run = PolicyRun.objects.get(dry_run=False)
    assert f"To delete them anyway: cleanup --confirm-brake {run.pk}" in out
    assert not DeletionJob.objects.exists()
    with pytest.raises(runs.CannotConfirm, match="too old"):
        runs.confirm_brake(run, maintainer, now=timezone.now() + timedelta(hours=2))

    [job_id] = runs.confirm_brake(run, maintainer)
    job = DeletionJob.objects.get()
    assert (job.pk, job.created_by, list(run.jobs.all())) == (job_id, maintainer, [job])
    run.refresh_from_db()
    entry = run.report["repositories"][0]
    assert (entry["job"], entry["brake_confirmed_by"]) == (job.pk, "maria")
    assert job.items.count() == len(entry["going"]) == 16  # 14 tagged items and 2 children
    with pytest.raises(CommandError, match="Already confirmed"):
        cleanup("--confirm-brake", str(run.pk))
    with pytest.raises(CommandError, match="No policy run 999"):
        cleanup("--confirm-brake", "999")


@pytest.mark.django_db(transaction=True)
def test_two_confirmations_at_once_start_the_jobs_once(builds_repo, maintainer, monkeypatch):
    import threading

    from django.db import connection

    from hubmgr.deletion import jobs
    from hubmgr.deletion.models import DeletionJob

    run = braked_run()
    create_job = jobs.create_job

    def slow_create_job(*args, **kwargs):
        time.sleep(0.5)  # the other confirmation arrives meanwhile
        return create_job(*args, **kwargs)

    monkeypatch.setattr(jobs, "create_job", slow_create_job)
    both, outcomes = threading.Barrier(2), []

    def confirm():
        try:
            loaded = PolicyRun.objects.get(pk=run.pk)  # both see it unconfirmed
            both.wait()
            outcomes.append(runs.confirm_brake(loaded, maintainer))
        except runs.CannotConfirm as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=confirm) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    job = DeletionJob.objects.get()
    refused = [o for o in outcomes if isinstance(o, str)]
    assert [job.pk] in outcomes and len(refused) == 1, outcomes
    assert refused[0].startswith("Already confirmed by maria at ")
    run.refresh_from_db()
    assert (run.brake_confirmed_by, list(run.jobs.all())) == (maintainer, [job])


def test_a_run_whose_policy_changed_since_cannot_be_confirmed(builds_repo, maintainer):
    run = braked_run()
    assert runs.cannot_confirm(run) is None
    p = run.policy
    p.keep_last = 10
    service.save_policy(p, maintainer)
    with pytest.raises(runs.CannotConfirm, match="The policy changed after this run started "
                                                 r"\(.* by maria\); run it again"):
        runs.confirm_brake(run, maintainer)
    run.refresh_from_db()
    assert run.brake_confirmed_at is None and not run.jobs.exists()


def test_only_a_finished_braked_run_can_be_confirmed(builds_repo, maintainer):
    p = service.save_policy(policy(name="builds", remove_untagged_days=7, mode="delete",
                                   brake_share=1.0))
    running = PolicyRun.objects.create(policy=p, dry_run=False)
    assert "still running" in runs.cannot_confirm(running)
    running.delete()
    done = runs.record_run(p, delete=True)
    assert done.status == "done"
    with pytest.raises(runs.CannotConfirm, match="stopped nothing"):
        runs.confirm_brake(done, maintainer)
