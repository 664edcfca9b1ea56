"""Tables that grow with use are pruned: old notification event ids, old sync runs and old
finished deletion jobs go, in batches; newer rows, the newest sync run and unfinished jobs
stay."""

from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hubmgr.deletion import tasks as deletion_tasks
from hubmgr.deletion.models import DeletionItem, DeletionJob
from hubmgr.deletion.retention import prune_jobs
from hubmgr.inventory import tasks as inventory_tasks
from hubmgr.inventory.catalog.batches import delete_in_batches
from hubmgr.inventory.models import ProcessedEvent, SyncRun
from hubmgr.inventory.registries import default_registry
from hubmgr.inventory.storage.retention import prune_events, prune_sync_runs

from tests.support.factories import days_ago

pytestmark = pytest.mark.django_db


def events(*ages):
    for n, age in enumerate(ages):
        event = ProcessedEvent.objects.create(event_id=f"e{n}-{age}")
        ProcessedEvent.objects.filter(pk=event.pk).update(received_at=days_ago(age))


def sync_runs(*ages):
    registry = default_registry()
    for age in ages:
        run = SyncRun.objects.create(registry=registry, finished_at=days_ago(age))
        SyncRun.objects.filter(pk=run.pk).update(started_at=days_ago(age))


def job(status, finished_days_ago, items=2):
    job = DeletionJob.objects.create(repository_name="team/app", deadline=days_ago(0),
                                     status=status, finished_at=days_ago(finished_days_ago))
    DeletionItem.objects.bulk_create([
        DeletionItem(job=job, position=n, digest=f"sha256:{job.pk}-{n}", kind="image",
                     reason="selected", status="done") for n in range(items)])
    return job


def test_event_ids_older_than_the_retention_go_and_newer_stay():
    events(30, 8, 6, 0)
    assert prune_events(days=7) == 2
    assert sorted(ProcessedEvent.objects.values_list("event_id", flat=True)) == ["e2-6", "e3-0"]


def test_old_sync_runs_go_but_the_newest_always_stays():
    sync_runs(400, 200, 100, 10)
    assert prune_sync_runs(days=90) == 3
    assert SyncRun.objects.count() == 1
    SyncRun.objects.all().delete()
    sync_runs(300, 200)  # no sync for months: the last one still says how it went
    assert prune_sync_runs(days=90) == 1
    assert SyncRun.objects.get().started_at < days_ago(199)


def test_finished_jobs_past_the_retention_go_with_their_items():
    old, recent = job("done", 400), job("partial", 100)
    stuck = job("retrying", None)
    DeletionJob.objects.filter(pk=stuck.pk).update(created_at=days_ago(500))
    assert prune_jobs(days=365) == 1
    assert set(DeletionJob.objects.values_list("pk", flat=True)) == {recent.pk, stuck.pk}
    assert not DeletionItem.objects.filter(job_id=old.pk).exists()
    assert DeletionItem.objects.count() == 4
    assert prune_jobs(days=0) == 0  # 0 keeps them for ever


def test_previews_go_a_day_after_they_expire():
    from hubmgr.deletion.models import DeletionPreview
    from hubmgr.deletion.retention import prune_previews

    from tests.support.factories import make_repo

    repo = make_repo("team/app")
    for hours in (-30, -2, 1):
        DeletionPreview.objects.create(repository=repo, plan={}, expires_at=days_ago(0) +
                                       timedelta(hours=hours))
    assert prune_previews() == 1 and DeletionPreview.objects.count() == 2


def test_rows_are_deleted_a_batch_at_a_time():
    events(*[10] * 25)
    with CaptureQueriesContext(connection) as ctx:
        assert delete_in_batches(ProcessedEvent.objects.all(), batch_size=10) == 25
    deletes = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3
    assert ProcessedEvent.objects.count() == 0


def test_the_prune_command_prints_what_it_deleted(settings):
    settings.EVENT_RETENTION_DAYS = 7
    settings.SYNC_RUN_RETENTION_DAYS = 90
    settings.DELETION_JOB_RETENTION_DAYS = 365
    events(10, 9, 1)
    sync_runs(100, 1)
    job("failed", 500)
    out = StringIO()
    call_command("prune", stdout=out)
    assert out.getvalue().strip() == (
        "Pruned 2 notification events, 1 sync runs, 0 storage snapshots, 1 deletion jobs, "
        "0 deletion previews.")
    call_command("prune", stdout=out)
    assert out.getvalue().strip().endswith(
        "Pruned 0 notification events, 0 sync runs, 0 storage snapshots, 0 deletion jobs, "
        "0 deletion previews.")


def test_beat_prunes_every_hour_with_the_configured_retention():
    events(8)
    job("done", 366)
    assert inventory_tasks.prune() == {"notification events": 1, "sync runs": 0,
                                      "storage snapshots": 0}
    assert deletion_tasks.prune() == {"deletion jobs": 1, "deletion previews": 0}
    scheduled = {e["task"]: e["schedule"] for e in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled["hubmgr.inventory.tasks.prune"] == 3600
    assert scheduled["hubmgr.deletion.tasks.prune"] == 3600
