"""Keeping the inventory's bookkeeping tables bounded: old notification event ids, old sync runs
and old storage snapshots of repositories are deleted on a schedule (Celery beat, or
`manage.py prune`)."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from ..catalog.batches import delete_in_batches
from ..models import ProcessedEvent, SyncRun
from . import snapshots


def prune_events(days=None) -> int:
    """Forget event ids received more than ``days`` ago (HUBMGR_EVENT_RETENTION_DAYS). They
    only guard against a registry delivering an event twice, which happens within minutes or
    hours of the first delivery."""
    days = settings.EVENT_RETENTION_DAYS if days is None else days
    cutoff = timezone.now() - timedelta(days=days)
    return delete_in_batches(ProcessedEvent.objects.filter(received_at__lt=cutoff))


def prune_sync_runs(days=None) -> int:
    """Delete sync runs (with the problems they recorded) started more than ``days`` ago
    (HUBMGR_SYNC_RUN_RETENTION_DAYS). The newest run of each registry always stays."""
    days = settings.SYNC_RUN_RETENTION_DAYS if days is None else days
    cutoff = timezone.now() - timedelta(days=days)
    newest = list(SyncRun.objects.values("registry").annotate(last=Max("pk"))
                  .values_list("last", flat=True))
    return delete_in_batches(SyncRun.objects.filter(started_at__lt=cutoff).exclude(pk__in=newest))


def prune() -> dict:
    """Prune these tables with the configured retention. Returns {table: rows deleted}."""
    return {"notification events": prune_events(), "sync runs": prune_sync_runs(),
            "storage snapshots": snapshots.prune()}
