"""Celery tasks for policies: thin wrappers over runs.py. Beat asks every minute which
policies are due; each due policy runs in a worker."""

import logging

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from hubmgr.inventory.tasks import QueueUnavailable

from . import runs, schedule
from .models import CleanupPolicy, PolicyRun, Schedule

log = logging.getLogger("hubmgr.policies")
# A run stops itself at HUBMGR_POLICY_RUN_SECONDS (runs.Heartbeat); Celery's limits come after.
RUN_LIMITS = {"soft_time_limit": settings.POLICY_RUN_SECONDS + settings.TASK_GRACE_SECONDS,
              "time_limit": settings.POLICY_RUN_SECONDS + 2 * settings.TASK_GRACE_SECONDS}


@shared_task(name="hubmgr.policies.tasks.run_due", soft_time_limit=50, time_limit=60)
def run_due():
    now = timezone.now()
    runs.fail_abandoned(now=now)
    runs.expire_unconfirmed(now)
    due = [p.pk for p in CleanupPolicy.objects.exclude(schedule=Schedule.OFF)
           if schedule.is_due(p, now)]
    for policy_id in due:
        run_policy.delay(policy_id)
    return due


@shared_task(name="hubmgr.policies.tasks.run_policy", acks_late=True, **RUN_LIMITS)
def run_policy(policy_id):
    """Run the policy if it is (still) due; a second delivery finds it run, or running."""
    policy = CleanupPolicy.objects.filter(pk=policy_id).first()
    if policy is None:
        return None
    try:
        run = runs.run_if_due(policy)
    except runs.AlreadyRunning:
        return None
    if run is not None:
        log.info("policy=%s run=%s %s", policy.name, run.pk, run.status)
    return run.pk if run else None


# Acknowledged on receipt, unlike the other tasks: a second delivery would execute the run
# twice. A worker that dies mid-run leaves it running without heartbeat; run_due then marks it
# failed (runs.fail_abandoned).
@shared_task(name="hubmgr.policies.tasks.execute_run", acks_late=False, **RUN_LIMITS)
def execute_run(run_id):
    """Execute a run that a person started (runs.claim_run), unless it is gone or finished."""
    run = PolicyRun.objects.select_related("policy", "started_by").filter(
        pk=run_id, status=PolicyRun.Status.RUNNING).first()
    if run is None:
        return None
    run = runs.execute(run)
    log.info("policy=%s run=%s %s", run.policy.name, run.pk, run.status)
    return run.pk


def start_run(policy, user=None, delete=True, confirm_first=False) -> PolicyRun:
    """Claim a run and queue it for a worker: runs.AlreadyRunning while one runs;
    QueueUnavailable when the broker cannot take it, and then nothing of the run remains.
    With ``confirm_first`` a run in delete mode plans and waits for runs.confirm_run."""
    run = runs.claim_run(policy, user, delete=delete, confirm_first=confirm_first)
    try:
        execute_run.delay(run.pk)
    except Exception as exc:  # any broker failure
        # Not queued, so not started: the run is taken back.
        log.warning("policy run=%s not queued (broker unavailable): %s", run.pk, exc)
        run.delete()
        raise QueueUnavailable("the task queue (Redis) is unavailable, so the run was not "
                               "started; try again later") from None
    return run
