"""Running deletion jobs: plain functions that Celery tasks, the `delete` command and the tests
call alike. Every step is idempotent: an item is claimed with a conditional update, a DELETE
that finds the manifest already gone counts as done, and an expired claim is simply retried."""

import logging
import random
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_any
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from hubmgr.inventory.catalog.store import writing
from hubmgr.inventory.models import IndexChild, Manifest, Tag
from hubmgr.registry.errors import (
    RegistryAuthError,
    RegistryError,
    RegistryUnsupported,
)

from . import reclaim
from .models import DeletionItem, DeletionJob, ItemStatus, JobStatus
from .recheck import RegistryView
from .shapes import PlanData

log = logging.getLogger("hubmgr.deletion")


def create_job(repo, plan: PlanData, user=None, retry_of=None) -> DeletionJob:
    """Record a plan as data (``actions.plan_data``) as a job with one row per manifest, in
    deletion order, carrying the tags, parents and subject the preview showed, and what it
    frees (``reclaim.record``). ``retry_of``: the job whose failed items this one retries."""
    with transaction.atomic():
        job = DeletionJob.objects.create(
            repository=repo, repository_name=repo.name, created_by=user,
            deadline=timezone.now() + timedelta(hours=settings.DELETE_DEADLINE_HOURS),
            reclaim_bytes=plan["reclaim_bytes"], kept=plan["kept"],
            keep_attached=plan.get("keep_attached", False), retry_of=retry_of)
        rows, earlier = [], set()
        for n, item in enumerate(plan["items"]):
            # An item waits only on items before it: what hostile input makes loop (an index
            # attached to its own child) cannot make two items wait for each other.
            subject = item.get("subject", "")
            rows.append(DeletionItem(
                job=job, position=n, digest=item["digest"], kind=item["type"],
                tags=item["tags"], size=item["size"], reason=item["reason"],
                parents=[p for p in item["parents"] if p in earlier],
                subject=subject if subject in earlier else ""))
            earlier.add(item["digest"])
        DeletionItem.objects.bulk_create(rows, batch_size=500)
        reclaim.record(job, plan)
    log.info("deletion job=%s created repository=%s items=%d reclaim=%d user=%s%s", job.pk,
             repo.name, len(plan["items"]), plan["reclaim_bytes"],
             getattr(user, "username", None),
             f" retry_of={retry_of.pk}" if retry_of is not None else "")
    return job


def process_job(job_id, client, concurrency=None, wait=False, on_progress=None,
                seconds=None) -> str:
    """Work a job's ready items until none is left to do now, or, with ``seconds``, until that
    long has passed: then it takes no new item, finishes those in flight and returns.

    Returns the job status. With ``wait``, sleeps through retry back-offs until the job ends
    (the `delete` command); otherwise returns and the caller schedules the next wake-up.
    """
    deadline = None if seconds is None else time.monotonic() + seconds
    concurrency = concurrency or settings.DELETE_CONCURRENCY
    job = DeletionJob.objects.select_related("repository").filter(pk=job_id).first()
    if job is None or job.is_finished:
        return job.status if job else "gone"
    DeletionJob.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING)
    heartbeat(job)  # from now on the sweep leaves this job alone until the heartbeat stops
    in_flight = {}  # future -> item id
    done = []  # deleted, not yet removed from the inventory
    view = RegistryView(client, job.repository, settings.DELETE_RECHECK_SECONDS, concurrency)
    flushed = renewed = time.monotonic()

    def flush():
        nonlocal done, flushed
        _forget(job, done)
        done, flushed = [], time.monotonic()
        update_status(job)
        heartbeat(job)
        if on_progress:
            on_progress(job)

    # Keep every slot busy: new items go in as soon as others finish, and the inventory and
    # the job's status are brought up to date every 50 items or every second.
    with ThreadPoolExecutor(concurrency, thread_name_prefix="delete") as pool:
        while True:
            if in_flight and time.monotonic() - renewed >= heartbeat_seconds():
                # A DELETE may hang for up to the registry timeout, longer than a lease.
                renew_leases(job, in_flight.values())
                renewed = time.monotonic()
            over = deadline is not None and time.monotonic() > deadline
            if len(in_flight) < concurrency * 2 and not over:
                ready = _ready_items(job, set(in_flight.values()), concurrency * 4)
                # (A cancelled job deletes nothing more: its items need no tags read.)
                if ready and not is_cancelled(job) and not _refresh_view(job, view, ready):
                    ready = []
                for item in ready:
                    in_flight[pool.submit(_run_item, job, item, client, view)] = item.pk
            if in_flight:
                finished, _ = wait_for_any(in_flight, timeout=1, return_when=FIRST_COMPLETED)
                for future in finished:
                    del in_flight[future]
                    deleted = future.result()
                    if deleted:
                        done.append(deleted)
                if len(done) >= 50 or (done and time.monotonic() - flushed > 1):
                    flush()
                continue
            flush()
            if job.is_finished or not wait or over:
                DeletionJob.objects.filter(pk=job.pk).update(wake_at=None)
                return job.status
            pause = next_wakeup(job)
            time.sleep(min(max(pause, 0.05), 5) if pause is not None else 0.5)


def lease_expiry(now=None):
    """When a claim or a job heartbeat taken now runs out unless it is renewed."""
    return (now or timezone.now()) + timedelta(seconds=settings.DELETE_CLAIM_SECONDS)


def heartbeat_seconds() -> float:
    """How often a live worker renews its leases: four renewals fit in one lease, so a
    worker must miss several in a row (stalled, not merely slow) before it loses one."""
    return settings.DELETE_CLAIM_SECONDS / 4


def heartbeat(job):
    """Tell the sweep this job is being worked on; it wakes jobs whose heartbeat stopped."""
    DeletionJob.objects.filter(pk=job.pk).update(wake_at=lease_expiry())


def renew_leases(job, item_ids):
    """Extend the claims of the items this worker is deleting right now, and the job's
    heartbeat. Only items still RUNNING are touched: one the sweep has released already is
    not taken back (whoever claims it next owns it)."""
    expires = lease_expiry()
    DeletionItem.objects.filter(pk__in=list(item_ids), status=ItemStatus.RUNNING).update(
        claim_expires_at=expires)
    DeletionJob.objects.filter(pk=job.pk).update(wake_at=expires)


def _due(now):
    """Items that may be claimed now: queued, or retrying with their back-off over."""
    return Q(status=ItemStatus.QUEUED) | Q(status=ItemStatus.RETRYING, next_attempt_at__lte=now)


def _ready_items(job, exclude=(), limit=200):
    """Queued or due items whose parent indexes in this job are finished. In a cancelled job
    every retrying item is due: its worker finds out whether it is gone (_cancelled_item)."""
    if is_cancelled(job):
        job.items.filter(status=ItemStatus.RETRYING).update(next_attempt_at=timezone.now())
    items = list(job.items.filter(_due(timezone.now())).exclude(pk__in=exclude)
                 .order_by("position")[:limit])
    if not items:
        return []
    parent_digests = {p for i in items for p in (*i.parents, i.subject) if p}
    states = dict(job.items.filter(digest__in=parent_digests).values_list("digest", "status"))
    ready = []
    for item in items:
        waits = [*item.parents, item.subject] if item.subject else item.parents
        pending = [p for p in waits if states.get(p) not in DeletionItem.FINISHED]
        if pending:
            continue
        if any(states.get(p) == ItemStatus.CANCELLED for p in waits):
            _finish(item, ItemStatus.CANCELLED, CANCELLED_BEFORE)
            continue
        remaining = [p for p in item.parents if states.get(p) != ItemStatus.DONE]
        if remaining:
            _finish(item, ItemStatus.SKIPPED, f"kept: its index {remaining[0][:19]} was not "
                                              "deleted, so it still references this image")
            continue
        if item.subject and states.get(item.subject) != ItemStatus.DONE:
            _finish(item, ItemStatus.SKIPPED, f"kept: {item.subject[:19]}, which it is "
                                              "attached to, was not deleted")
            continue
        ready.append(item)
    return ready


def _claim(item) -> bool:
    """Take an item for this worker. True when this call won it.

    What a claim guarantees: the update below is conditional on the item being due (queued,
    or retrying with its back-off over), so of any number of workers racing for an item
    exactly one gets True and moves it to RUNNING; the others get False and leave it alone.
    The claim is a lease of DELETE_CLAIM_SECONDS, not ownership for ever.

    What lease renewal guarantees: while the worker's job loop runs, it renews the lease of
    every item it has in flight every heartbeat_seconds() (renew_leases), so an item whose
    DELETE hangs up to the registry timeout is never released from under a live worker. Only
    a worker that stopped renewing (killed, or stalled for a whole lease) loses its items:
    the sweep then puts them back to RETRYING and another worker claims them again.

    Should a stalled worker come back and finish such an item anyway, the item is deleted
    twice at worst, which nobody sees: the second DELETE answers 404, which counts as done
    ("already gone"), and finishing an item that is finished already changes nothing.
    """
    now = timezone.now()
    claimed = DeletionItem.objects.filter(_due(now), pk=item.pk).update(
        status=ItemStatus.RUNNING, attempts=F("attempts") + 1,
        claim_expires_at=lease_expiry(now))
    return claimed == 1


def _finish(item, status, error=""):
    """Finish an item. Without an error (done) its last error stays: the job page shows what
    a retried item went through before it succeeded."""
    updates = {"last_error": error} if error else {}
    DeletionItem.objects.filter(pk=item.pk).unfinished().update(
        status=status, finished_at=timezone.now(), claim_expires_at=None, **updates)
    log.info("deletion job=%s item=%s digest=%s status=%s%s", item.job_id, item.pk, item.digest,
             status, f" reason={error}" if error else "")


def still_unreferenced(job, item) -> str:
    """Why the item must now be kept, or '' if it is still as the plan saw it."""
    repo = job.repository
    # Gone from the inventory already means no tags and no parents: the DELETE answers 404.
    tags = set(Tag.objects.filter(repository=repo, manifest__digest=item.digest)
               .values_list("name", flat=True))
    new_tags = sorted(tags - set(item.tags))
    if new_tags:
        return f"tagged since the preview: {', '.join(new_tags[:5])}"
    allowed = set(item.parents)
    outside = [d for d in IndexChild.objects.filter(child__repository=repo,
                                                    child__digest=item.digest)
               .values_list("index__digest", flat=True) if d not in allowed]
    if outside:
        return f"referenced since the preview by index {outside[0][:19]}"
    return ""


def _refresh_view(job, view, items) -> bool:
    """Read the registry's tags before a batch of DELETEs. When it cannot be read, nothing is
    deleted: each item counts a failed attempt (retried later if the failure is transient)."""
    try:
        view.refresh()
        return True
    except RegistryError as exc:
        for item in items:
            if _claim(item):
                _failed_attempt(job, item, exc, "could not check the registry's tags first: ")
        return False


def _run_item(job, item, client, view):
    """Claim, re-check (inventory, then the registry's own tags) and delete one manifest.
    Returns the item when it is done."""
    tried = item.attempts  # attempts before this claim: one of them may have deleted it
    if not _claim(item):
        return None
    # A cancel stops the job before its next DELETE: read right before each one. A cancel
    # that comes after this read finds the DELETE in flight, and its outcome is recorded.
    if is_cancelled(job):
        if tried:
            return _cancelled_item(job, item, client)
        _finish(item, ItemStatus.CANCELLED, CANCELLED_BEFORE)
        return None
    reason = still_unreferenced(job, item) or view.why_keep(item)
    if reason:
        _finish(item, ItemStatus.SKIPPED, reason)
        return None
    try:
        client.delete_manifest(job.repository_name, item.digest)
    except RegistryError as exc:
        if exc.transient and is_cancelled(job):
            # Cancelled while this DELETE was in flight, and it ended in a timeout, a reset
            # or a 5xx: it may have reached the registry all the same.
            return _cancelled_item(job, item, client, exc)
        _failed_attempt(job, item, exc)
        return None
    _finish(item, ItemStatus.DONE)
    return item


def _cancelled_item(job, item, client, exc=None):
    """Finish a claimed item of a cancelled job that a DELETE was sent for (an earlier
    attempt, or the one that just failed with ``exc``): only the registry knows whether that
    went through, so it is asked. Gone is done (returned, as a deleted item); there is
    cancelled; no answer is cancelled, saying that it is not known."""
    last = str(exc) if exc else item.last_error
    try:
        gone = client.head_manifest(job.repository_name, item.digest) is None
    except RegistryError as err:
        _finish(item, ItemStatus.CANCELLED, "the job was cancelled; whether an earlier DELETE "
                                            f"removed it is not known: the registry did not "
                                            f"answer ({err})")
        return None
    if gone:
        _finish(item, ItemStatus.DONE)
        return item
    _finish(item, ItemStatus.CANCELLED, "the job was cancelled; it is still in the registry"
                                        + (f" (last error: {last})" if last else ""))
    return None


def _failed_attempt(job, item, exc, context=""):
    """A claimed item's attempt failed with ``exc``: retry it later if that may help and the
    deadline allows, else fail it with the reason. ``context`` says what was being done
    (the DELETE itself when empty)."""
    now = timezone.now()
    if context:
        reason = context + str(exc)
    elif isinstance(exc, RegistryAuthError):
        reason = f"the registry credentials may not delete ({exc.status or 'refused'}): {exc}"
    elif isinstance(exc, RegistryUnsupported):
        reason = "the registry has deletion disabled (storage.delete.enabled)"
    else:
        reason = str(exc)
    if not exc.transient:
        return _finish(item, ItemStatus.FAILED, reason)
    attempts = DeletionItem.objects.filter(pk=item.pk).values_list("attempts", flat=True) \
        .first() or 1
    if now >= job.deadline:
        return _finish(item, ItemStatus.FAILED, f"gave up after {attempts} attempts at the "
                                                f"deadline: {reason}")
    delay = backoff(attempts)
    DeletionItem.objects.filter(pk=item.pk, status=ItemStatus.RUNNING).update(
        status=ItemStatus.RETRYING, last_error=reason, claim_expires_at=None,
        next_attempt_at=min(now + timedelta(seconds=delay), job.deadline))
    log.warning("deletion job=%s item=%s digest=%s retry_in=%.1fs attempts=%d error=%s",
                job.pk, item.pk, item.digest, delay, attempts, reason)


def backoff(attempts) -> float:
    """Exponential back-off with full jitter, capped."""
    cap = min(settings.DELETE_RETRY_BASE_SECONDS * 2 ** (attempts - 1),
              settings.DELETE_RETRY_MAX_SECONDS)
    return random.uniform(cap / 2, cap)


def _forget(job, done):
    """Deleted manifests leave the inventory at once; notifications would say the same."""
    if not done or job.repository is None:
        return
    with writing(job.repository) as batch:
        batch.forget(Manifest.objects.filter(repository=job.repository,
                                             digest__in=[i.digest for i in done])
                     .values_list("id", flat=True))


CANCELLED_BEFORE = "the job was cancelled before this item's DELETE was sent"


def is_cancelled(job) -> bool:
    """Whether someone cancelled ``job``, read from the database (a worker's copy is old)."""
    return DeletionJob.objects.filter(pk=job.pk, cancelled_at__isnull=False).exists()


def cancel_waiting(job) -> int:
    """Mark cancelled the queued items of a cancelled ``job``: no DELETE was ever sent for
    them. Conditional, so an item a worker claims at the same moment goes one way only. The
    others are left to a worker: one RUNNING has a DELETE in flight, whose outcome is
    recorded; one RETRYING had a DELETE sent that failed (perhaps after reaching the
    registry), and the registry is asked whether it is gone (_cancelled_item)."""
    return job.items.filter(status=ItemStatus.QUEUED).update(
        status=ItemStatus.CANCELLED, finished_at=timezone.now(), claim_expires_at=None,
        last_error=CANCELLED_BEFORE)


def forget_deleted(job):
    """Remove what ``job`` deleted from the inventory, where a worker has not yet (_forget
    does, in batches): before a job that no worker finishes (a cancelled one) is settled."""
    if job.repository_id is None:
        return
    deleted = Manifest.objects.filter(
        repository_id=job.repository_id,
        digest__in=job.items.filter(status=ItemStatus.DONE).values("digest"))
    if not deleted.exists():
        return
    with writing(job.repository) as batch:
        batch.forget(list(deleted.values_list("id", flat=True)))


def update_status(job) -> str:
    """Bring the job's status up to date with its items'. A cancelled job's queued items are
    cancelled, and the job is CANCELLED once every item is finished (control.cancel)."""
    cancelled = is_cancelled(job)
    if cancelled:
        cancel_waiting(job)
    counts = {s: 0 for s in ItemStatus}
    for status, n in job.items.values_list("status").annotate(n=Count("id")).order_by():
        counts[status] = n
    total = sum(counts.values())
    finished = sum(counts[s] for s in DeletionItem.FINISHED)
    if finished == total and cancelled:
        status = JobStatus.CANCELLED
    elif finished == total:
        if counts[ItemStatus.DONE] == total:
            status = JobStatus.DONE
        elif counts[ItemStatus.FAILED] == total:
            status = JobStatus.FAILED
        else:
            status = JobStatus.PARTIAL  # some items kept or failed, each with a reason
    elif counts[ItemStatus.RETRYING]:
        status = JobStatus.RETRYING
    elif finished or counts[ItemStatus.RUNNING]:
        status = JobStatus.RUNNING
    else:
        status = JobStatus.QUEUED
    updates = {"status": status}
    if status in DeletionJob.FINISHED:
        updates["finished_at"] = timezone.now()
    # A finished job's status never changes again (two processes may finish it at once).
    changed = DeletionJob.objects.filter(pk=job.pk).unfinished().exclude(status=status) \
        .update(**updates)
    if status in DeletionJob.FINISHED and changed:
        log.info("deletion job=%s finished status=%s done=%d skipped=%d failed=%d "
                 "cancelled=%d", job.pk, status, counts[ItemStatus.DONE],
                 counts[ItemStatus.SKIPPED], counts[ItemStatus.FAILED],
                 counts[ItemStatus.CANCELLED])
        # What it freed waits for the garbage collector (the deleted items have left the
        # inventory: _forget runs first).
        reclaim.settle(job)
    job.status = status
    return status


def next_wakeup(job):
    """Seconds until the earliest retry of this job is due, or None."""
    due = job.items.filter(status=ItemStatus.RETRYING).order_by("next_attempt_at") \
        .values_list("next_attempt_at", flat=True).first()
    return (due - timezone.now()).total_seconds() if due else None


def release_expired_claims() -> list:
    """Items whose worker died mid-delete go back to be retried. Returns their job ids.

    A claim expires only when its worker stopped renewing it (see _claim)."""
    now = timezone.now()
    expired = DeletionItem.objects.filter(status=ItemStatus.RUNNING, claim_expires_at__lt=now)
    jobs = sorted(set(expired.values_list("job_id", flat=True)))
    released = expired.update(status=ItemStatus.RETRYING, next_attempt_at=now,
                              claim_expires_at=None,
                              last_error="the worker stopped while deleting; trying again")
    if released:
        log.warning("deletion released expired claims items=%d jobs=%s", released, jobs)
    return jobs
