"""When a scheduled policy runs: its last scheduled time, once per time in a worker, never for
a time before it existed or before its schedule was set."""

from datetime import timedelta

import pytest
from django.utils import timezone

from hubmgr.policies import runs, service
from hubmgr.policies.models import CleanupPolicy, PolicyRun

from tests.support.policies import keep_ten_builds, policy, utc


@pytest.mark.parametrize("schedule, weekday, now, due", [
    ("off", None, "2026-11-28 10:00", None),
    ("daily", None, "2026-11-28 10:00", "2026-11-28 03:30"),
    ("daily", None, "2026-11-28 03:30", "2026-11-28 03:30"),
    ("daily", None, "2026-11-28 03:29", "2026-11-27 03:30"),
    ("weekly", 5, "2026-11-28 10:00", "2026-11-28 03:30"),  # a Saturday
    ("weekly", 5, "2026-11-28 01:00", "2026-11-21 03:30"),
    ("weekly", 0, "2026-11-28 10:00", "2026-11-23 03:30"),  # the Monday before
    ("weekly", 6, "2026-11-28 10:00", "2026-11-22 03:30"),
])
def test_the_last_scheduled_time(schedule, weekday, now, due):
    from datetime import time as clock

    from hubmgr.policies.schedule import last_due

    p = policy(schedule=schedule, run_at=clock(3, 30), weekday=weekday)
    assert last_due(p, utc(now)) == (utc(due) if due else None)


def test_a_scheduled_policy_runs_once_per_time_in_a_worker(builds_repo, monkeypatch):
    from datetime import time as clock

    from hubmgr.deletion.models import DeletionJob
    from hubmgr.policies import tasks

    p = keep_ten_builds()
    p.schedule, p.run_at, p.mode = "daily", clock(3, 30), "delete"
    service.save_policy(p)
    now = timezone.now()
    CleanupPolicy.objects.filter(pk=p.pk).update(created_at=now - timedelta(days=3),
                                                  schedule_from=now - timedelta(days=3))
    queued = []
    monkeypatch.setattr(tasks.run_policy, "delay", queued.append)
    runs.record_dry_run(p)  # a person's run does not stand in for the scheduled one
    assert tasks.run_due() == [p.pk] and queued == [p.pk]
    assert tasks.run_policy(p.pk) is not None
    run = PolicyRun.objects.get(scheduled=True)
    assert (run.status, run.dry_run, run.jobs.count()) == ("done", False, 1)
    assert DeletionJob.objects.count() == 1
    assert tasks.run_policy(p.pk) is None  # a second delivery: already run
    assert tasks.run_due() == []
    assert tasks.run_policy(12345) is None  # deleted since


def test_a_new_policy_does_not_run_for_a_time_before_it_existed(db):
    from hubmgr.policies import schedule

    p = service.save_policy(policy(remove_untagged_days=7, schedule="daily",
                                   run_at=(timezone.now() - timedelta(hours=1)).time()))
    assert not schedule.is_due(p, timezone.now())
    assert schedule.is_due(p, timezone.now() + timedelta(days=1))


def test_a_schedule_set_after_its_time_today_first_runs_at_its_next_time(db):
    """PATCH {"schedule": "daily", "run_at": "00:30"} at 00:33 once started a run at 00:34."""
    from datetime import time as clock

    import time_machine

    from hubmgr.policies import schedule

    made = utc("2026-11-20 12:00")
    with time_machine.travel(made, tick=False):
        p = service.save_policy(policy(remove_untagged_days=7, mode="delete"))
    with time_machine.travel(utc("2026-11-28 00:33"), tick=False):
        p.schedule, p.run_at = "daily", clock(0, 30)
        service.save_policy(p)
    assert not schedule.is_due(p, utc("2026-11-28 00:34"))
    assert not schedule.is_due(p, utc("2026-11-29 00:29"))
    assert schedule.is_due(p, utc("2026-11-29 00:30"))
    with time_machine.travel(utc("2026-11-28 00:40"), tick=False):
        p.name = "renamed"  # not a schedule change: its next time stays
        service.save_policy(p)
    assert schedule.is_due(p, utc("2026-11-29 00:31"))
    with time_machine.travel(utc("2026-11-29 00:35"), tick=False):
        p.run_at = clock(0, 20)  # moved to a time already passed today
        service.save_policy(p)
    assert not schedule.is_due(p, utc("2026-11-29 00:36"))
    assert schedule.is_due(p, utc("2026-11-30 00:20"))
