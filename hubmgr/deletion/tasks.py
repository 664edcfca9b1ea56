"""Celery tasks for deletion: thin wrappers over jobs.py. Any number of workers may run the
same job at once; claims keep them from doing the same item."""

import logging

from celery import shared_task

from hubmgr.inventory.registries import client_for, default_registry
from hubmgr.registry.errors import RegistryError

from . import jobs
from .models import DeletionJob

log = logging.getLogger("hubmgr.deletion")


@shared_task(name="hubmgr.deletion.tasks.run_job", acks_late=True)
def run_job(job_id):
    job = DeletionJob.objects.filter(pk=job_id).first()
    if job is None or job.status in DeletionJob.FINISHED:
        return None
    try:
        client = client_for(default_registry())
    except RegistryError as exc:
        log.warning("deletion job=%s cannot start: %s", job_id, exc)
        run_job.apply_async((job_id,), countdown=30)
        return None
    try:
        status = jobs.process_job(job_id, client)
    finally:
        client.close()
    if status not in DeletionJob.FINISHED:
        # Wake up again when the earliest retry is due (or soon, if items are still claimed).
        pause = jobs.next_wakeup(job)
        run_job.apply_async((job_id,), countdown=max(pause if pause is not None else 5, 0.2))
    return status


@shared_task(name="hubmgr.deletion.tasks.sweep")
def sweep():
    """Release claims of dead workers and wake every unfinished job: a lost broker message
    or a restarted stack never leaves a job stuck."""
    jobs.release_expired_claims()
    pending = DeletionJob.objects.exclude(status__in=DeletionJob.FINISHED)
    for job_id in pending.values_list("id", flat=True):
        run_job.delay(job_id)
