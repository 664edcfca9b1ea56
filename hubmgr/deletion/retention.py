"""Finished deletion jobs are the audit record of what was deleted, by whom and why; they are
kept for HUBMGR_DELETION_JOB_RETENTION_DAYS (365 by default, 0 keeps them for ever). Previews
go a day after they expire."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from hubmgr.inventory.catalog.batches import delete_in_batches

from .models import DeletionItem, DeletionJob, DeletionPreview, ReclaimBlob


def prune_jobs(days=None) -> int:
    """Delete jobs that finished more than ``days`` ago, and their items. Unfinished jobs are
    never touched. The items and the blobs a pending job waits on go first, in batches (a job
    may have thousands), so deleting a job is one small cascade. Returns the number of jobs
    deleted."""
    days = settings.DELETION_JOB_RETENTION_DAYS if days is None else days
    if days <= 0:
        return 0
    old = DeletionJob.objects.finished().filter(
        finished_at__lt=timezone.now() - timedelta(days=days))
    delete_in_batches(DeletionItem.objects.filter(job__in=old))
    delete_in_batches(ReclaimBlob.objects.filter(job__in=old))
    return delete_in_batches(old)


def prune_previews() -> int:
    """Delete previews that expired more than a day ago, confirmed or not: a job keeps its
    own copy of what it ran, and an expired preview can no longer be confirmed."""
    cutoff = timezone.now() - timedelta(days=1)
    return delete_in_batches(DeletionPreview.objects.filter(expires_at__lt=cutoff),
                             batch_size=100)  # a preview holds its whole plan


def prune() -> dict:
    return {"deletion jobs": prune_jobs(), "deletion previews": prune_previews()}
