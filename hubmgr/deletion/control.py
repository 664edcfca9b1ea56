"""Job control: cancel a deletion job, and retry a finished job's failed items as a new job.
The page, the API and the `deletion_job` command call these alike.

Both are claims by a conditional update, as a preview's confirmation is: of any number of
maintainers cancelling (or retrying) one job at once, exactly one gets through and the others
are answered "already cancelled" ("already retried") with who and when. The job itself is the
audit record: ``cancelled_by``/``cancelled_at``; a retry is a job of its own, whose
``created_by`` retried it and whose ``retry_of`` names the original (``retried_as`` there)."""

import logging

from django.db import transaction
from django.utils import timezone

from hubmgr.actors import acting
from hubmgr.inventory.models import Tag

from . import actions, jobs
from .models import DeletionJob, ItemStatus
from .planner import Plan

log = logging.getLogger("hubmgr.deletion")


class Refused(Exception):
    """Job control that cannot be done, with a message a person can act on; ``status`` is
    the HTTP answer (409: the job is not in a state that allows it)."""

    def __init__(self, message, status=409):
        super().__init__(message)
        self.status = status


def _by(user):
    return f" by {user.username}" if user is not None else ""


# ---- cancel ----------------------------------------------------------------------------------
def cannot_cancel(job) -> str | None:
    """Why ``job`` cannot be cancelled, in words; None when it can."""
    if job.cancelled_at is not None:
        return (f"Already cancelled{_by(job.cancelled_by)} at "
                f"{job.cancelled_at:%Y-%m-%d %H:%M:%S} UTC.")
    if job.is_finished:
        at = f" at {job.finished_at:%Y-%m-%d %H:%M:%S} UTC" if job.finished_at else ""
        return (f"This job already finished ({job.get_status_display().lower()}){at}: there "
                "is nothing left to cancel.")
    return None


def cancel(job, user=None) -> DeletionJob:
    """Cancel a queued, running or retrying ``job``: what no DELETE was sent for is marked
    cancelled at once; a DELETE in flight is left to its worker, which records how it really
    ended (deleted, or not), and takes no other item (jobs._run_item reads the cancel before
    each DELETE); an item waiting to be retried is settled by a worker woken now, which asks
    the registry whether an earlier attempt removed it. The job is CANCELLED once each item
    is settled, at once when none of either kind. Returns the job, fresh; Refused says why
    not."""
    reason = cannot_cancel(job)
    if reason:
        raise Refused(reason)
    user, now = acting(user), timezone.now()
    with transaction.atomic():
        # The claim: one cancel of a job gets through; the others update nothing.
        if not DeletionJob.objects.unfinished().filter(
                pk=job.pk, cancelled_at__isnull=True).update(cancelled_at=now,
                                                             cancelled_by=user):
            raise Refused(cannot_cancel(_fresh(job)) or "This job cannot be cancelled now.")
        waiting = jobs.cancel_waiting(job)
    log.info("deletion job=%s cancelled user=%s items_cancelled=%d", job.pk,
             getattr(user, "username", None), waiting)
    if job.items.filter(status=ItemStatus.RETRYING).exists():
        # Due now, and a worker woken for them now, whatever wake-up was pending.
        job.items.filter(status=ItemStatus.RETRYING).update(next_attempt_at=now)
        DeletionJob.objects.filter(pk=job.pk).update(wake_at=None)
        transaction.on_commit(lambda: actions.wake(job.pk))
    elif not job.items.filter(status=ItemStatus.RUNNING).exists():
        # Nothing in flight: finish it now (its worker, if any, finds it finished). What the
        # job deleted leaves the inventory first, so that its reclaim figure is right.
        jobs.forget_deleted(job)
        jobs.update_status(job)
    return _fresh(job)


def _fresh(job):
    return DeletionJob.objects.select_related("created_by", "cancelled_by").get(pk=job.pk)


# ---- retry -----------------------------------------------------------------------------------
def cannot_retry(job) -> str | None:
    """Why ``job``'s failed items cannot be retried, in words; None when they can."""
    if job.retried_as_id is not None:
        return f"Already retried as deletion job {job.retried_as_id}."
    if not job.is_finished:
        return ("This job has not finished: its failed items can be retried once it has "
                "(cancel it first to stop it now).")
    if job.repository_id is None:
        return f"{job.repository_name} is no longer in the inventory: there is nothing to retry."
    if not job.items.filter(status=ItemStatus.FAILED).exists():
        return "This job has no failed item to retry."
    return None


def retry(job, user=None) -> DeletionJob:
    """A new job of ``job``'s failed items, planned and checked as a fresh confirmation of
    the same items: planned again now (what is tagged or referenced since, or protected, is
    kept, with the reason), limited to what ``job`` itself was to delete (anything new since,
    such as a signature pushed after it, stays), and re-checked right before each DELETE as
    every job is. Once per job. Returns the new job; Refused says why not."""
    reason = cannot_retry(job)
    if reason:
        raise Refused(reason)
    data = retry_plan(job)
    if not data["items"]:
        why = "; ".join(f"{k['digest'][:19]} {k['reason']}" for k in data["kept"][:3])
        raise Refused(f"Nothing to retry: every failed item is kept now ({why}).")
    user = acting(user)
    with transaction.atomic():
        new = jobs.create_job(job.repository, data, user, retry_of=job)
        # The claim: a job is retried once; a second retry (a double click, another
        # maintainer) updates nothing, and its new job is rolled back with the transaction.
        if not DeletionJob.objects.filter(pk=job.pk, retried_as__isnull=True).update(
                retried_as=new):
            raise Refused(cannot_retry(_fresh(job)) or "This job cannot be retried now.")
    log.info("deletion job=%s retried as job=%s user=%s items=%d kept=%d", job.pk, new.pk,
             getattr(user, "username", None), len(data["items"]), len(data["kept"]))
    transaction.on_commit(lambda: actions.wake(new.pk))
    return new


def retry_plan(job):
    """The plan (``shapes.PlanData``) of a retry of ``job``'s failed items."""
    failed = list(job.items.filter(status=ItemStatus.FAILED).values_list("digest", "tags"))
    confirmed = dict(job.items.values_list("digest", "tags"))  # what the job was to delete
    current = {}
    for digest, tag in Tag.objects.filter(repository=job.repository_id,
                                          manifest__digest__in=[d for d, _ in failed]) \
            .values_list("manifest__digest", "name"):
        current.setdefault(digest, []).append(tag)
    kept, selected = [], []
    for digest, tags in failed:
        new_tags = sorted(set(current.get(digest, ())) - set(tags))
        if new_tags:
            kept.append({"digest": digest, "reason": f"tagged since deletion job {job.pk}: "
                                                     f"{', '.join(new_tags[:5])}"})
        else:
            selected.append(digest)
    if not selected:
        return {"items": [], "kept": kept, "reclaim_bytes": 0, "keep_attached":
                job.keep_attached}
    plan = _within(actions.make_plan(job.repository, selected, job.keep_attached),
                   confirmed, job.pk)
    data = actions.plan_data(plan, freed=True)
    data["kept"] = kept + data["kept"]
    return data


def _within(plan: Plan, confirmed, job_id) -> Plan:
    """``plan`` without what ``job_id`` was not to delete (``confirmed``: its digests), and
    without what goes only with such an item (the children of an index that stays, what is
    attached to it). The freed figures lose exactly what those items reference: an item that
    stays keeps its own blobs and manifest in use, and every other freed one is still freed."""
    parents = {}  # digest -> the going indexes that list it
    for node, _ in plan.going:
        for child in node.children:
            parents.setdefault(child[1], []).append(node.digest)
    dropped, going = {}, []
    for node, reason in plan.going:  # in deletion order: indexes and subjects come first
        waits = [p for p in (*parents.get(node.digest, ()), node.subject) if p in dropped]
        if node.digest not in confirmed:
            dropped[node.digest] = (f"not part of deletion job {job_id} (pushed or attached "
                                    "since): a retry deletes only what that job was to delete")
        elif waits:
            dropped[node.digest] = f"goes only with {waits[0][:19]}, which is kept"
        else:
            going.append((node, reason))
    if not dropped:
        return plan
    stays = [node for node, _ in plan.going if node.digest in dropped]
    blobs = {b for node in stays for b in node.blobs}
    freed_manifests = {d: s for d, s in plan.freed_manifests.items() if d not in dropped}
    freed_blobs = {b: s for b, s in plan.freed_blobs.items() if b not in blobs}
    kept = sorted([*plan.kept, *(((node.repository, node.digest), dropped[node.digest])
                                 for node in stays)])
    return Plan(going, kept, sum(freed_manifests.values()) + sum(freed_blobs.values()),
                [k for k in plan.unread if k[1] not in dropped], freed_manifests, freed_blobs,
                plan.orphaned, plan.keep_attached)


# ---- as data (the API, the command) ------------------------------------------------------------
def control_data(job) -> dict:
    """Who cancelled ``job`` and when; the job that retried it, and the one it retries."""
    return {
        "cancelled_at": job.cancelled_at.isoformat() if job.cancelled_at else None,
        "cancelled_by": job.cancelled_by.username if job.cancelled_by else None,
        "retried_as": job.retried_as_id,
        "retry_of": job.retry_of_id,
        "can_cancel": cannot_cancel(job) is None,
        "can_retry": cannot_retry(job) is None,
    }
