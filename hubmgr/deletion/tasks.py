"""Celery tasks for deletion: thin wrappers over jobs.py. Any number of workers may run the
same job at once; claims keep them from doing the same item."""

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from hubmgr.inventory.registries import client_for, default_registry
from hubmgr.registry.errors import RegistryError

from . import jobs, reclaim, retention
from .models import DeletionJob

log = logging.getLogger("hubmgr.deletion")


# A task works a job for DELETE_BATCH_SECONDS, then queues its next wake-up (process_job stops
# taking items); Celery's limits are the backstop for a DELETE that hangs past it.
@shared_task(name="hubmgr.deletion.tasks.run_job", acks_late=True,
             soft_time_limit=settings.DELETE_BATCH_SECONDS + settings.TASK_GRACE_SECONDS,
             time_limit=settings.DELETE_BATCH_SECONDS + 2 * settings.TASK_GRACE_SECONDS)
def run_job(job_id):
    job = DeletionJob.objects.filter(pk=job_id).first()
    if job is None or job.is_finished:
        return None
    try:
        client = client_for(default_registry())
    except RegistryError as exc:
        log.warning("deletion job=%s cannot start: %s", job_id, exc)
        run_job.apply_async((job_id,), countdown=30)
        return None
    try:
        status = jobs.process_job(job_id, client, seconds=settings.DELETE_BATCH_SECONDS)
    finally:
        client.close()
    if status not in DeletionJob.FINISHED:
        # Wake up again when the earliest retry is due (or soon, if items are still claimed).
        pause = jobs.next_wakeup(job)
        schedule(job_id, max(pause if pause is not None else 5, 0.2))
    return status


def schedule(job_id, seconds):
    """Queue one wake-up, unless one is already pending: concurrent runs of a job (a sweep,
    a second worker) never multiply its chain of wake-ups."""
    now = timezone.now()
    due = now + timedelta(seconds=seconds)
    claimed = DeletionJob.objects.filter(
        Q(wake_at__isnull=True) | Q(wake_at__lte=now), pk=job_id).update(wake_at=due)
    if claimed:
        run_job.apply_async((job_id,), countdown=seconds)


@shared_task(name="hubmgr.deletion.tasks.sweep")
def sweep():
    """Release claims of dead workers and wake every unfinished job: a lost broker message
    or a restarted stack never leaves a job stuck."""
    jobs.release_expired_claims()
    # A running job keeps pushing its wake_at into the future (jobs.heartbeat); a wake-up
    # overdue by more than one heartbeat was lost (broker restarted, worker killed), not
    # merely late. From a worker's death to its job being woken again takes at most
    # DELETE_CLAIM_SECONDS + heartbeat_seconds() + DELETE_SWEEP_SECONDS (20 + 5 + 15 s).
    overdue = timezone.now() - timedelta(seconds=jobs.heartbeat_seconds())
    pending = DeletionJob.objects.unfinished().filter(
        Q(wake_at__isnull=True) | Q(wake_at__lt=overdue))
    for job_id in pending.values_list("id", flat=True):
        DeletionJob.objects.filter(pk=job_id).update(wake_at=None)
        schedule(job_id, 0)


@shared_task(name="hubmgr.deletion.tasks.prune")
def prune():
    counts = retention.prune()
    log.info("pruned %s", " ".join(f"{k.replace(' ', '_')}={n}" for k, n in counts.items()))
    return counts


@shared_task(name="hubmgr.deletion.tasks.check_reclaim")
def check_reclaim():
    """Has the registry's garbage collector run since pending deletions finished?"""
    registry = default_registry()
    try:
        client = client_for(registry)
    except RegistryError as exc:  # no registry configured: nothing to ask
        log.warning("reclaim check skipped: %s", exc)
        return None
    try:
        result = reclaim.check(client, registry)
    finally:
        client.close()
    return {k: v for k, v in result.items() if k != "reclaimed"} | {
        "reclaimed": len(result["reclaimed"])}
