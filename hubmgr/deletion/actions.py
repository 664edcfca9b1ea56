"""What the page, the API and the `delete` command share: plan a selection, keep it as a
preview, start a job from a preview (or from a fresh plan, for scripts), and describe them as
plain data."""

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Sum
from django.http import Http404
from django.utils import timezone

from . import jobs, reclaim, tasks
from .graph import blob_digests, collector_paused, load_graph
from .models import DeletionItem, DeletionJob, DeletionPreview, ItemStatus
from .planner import ATTACHED, Plan, plan
from .shapes import Freed, KeptItem, OrphanedItem, PlanData, PlanItem

log = logging.getLogger("hubmgr.deletion")


class PreviewGone(Exception):
    """A preview that can no longer be confirmed; ``status`` is the HTTP answer."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def make_plan(repo, digests, keep_attached=False) -> Plan:
    """Plan deleting ``digests`` of ``repo``; with ``keep_attached``, what is attached to the
    items that go stays (see planner.plan)."""
    with collector_paused():
        graph, selected = load_graph(repo, digests)
        return plan(graph, selected, keep_attached)


def plan_data(p: Plan, freed=False) -> PlanData:
    """The plan as plain data (``shapes.PlanData``): what a preview shows and what its job runs,
    item by item, with the tags and the indexes (within the plan) that refer to each, what
    each artifact is and what an attached one goes with, and what the plan leaves orphaned. With
    ``freed``, also the manifests and blobs its reclaim figure counts, by digest, which a job
    created from it keeps to tell when the registry's garbage collector has freed them (see
    reclaim.py)."""
    going = {node.digest for node, _ in p.going}
    parents = {}
    for node, _ in p.going:
        for child in node.children:
            if child[1] in going:
                parents.setdefault(child[1], []).append(node.digest)
    # Dict displays of the declared shapes: a call of a TypedDict costs twice as much, and a
    # plan may hold 100,000 items.
    items: list[PlanItem] = [
        {"digest": n.digest, "type": n.kind, "tags": list(n.tags), "size": n.size,
         "reason": reason, "parents": parents.get(n.digest, [])} for n, reason in p.going]
    for item, (node, reason) in zip(items, p.going):
        if node.label:  # (few are: a plain image or index carries none of these keys)
            item["artifact"], item["tool"] = node.label, node.tool
        if reason == ATTACHED:
            item["subject"] = node.subject
    kept: list[KeptItem] = [{"digest": key[1], "reason": reason} for key, reason in p.kept]
    orphaned: list[OrphanedItem] = [
        {"digest": n.digest, "type": n.kind, "tags": list(n.tags), "size": n.size,
         "artifact": n.label, "tool": n.tool, "subject": n.subject} for n in p.orphaned]
    data = PlanData(items=items, kept=kept, reclaim_bytes=p.reclaim_bytes,
                    unread=[key[1] for key in p.unread], keep_attached=p.keep_attached,
                    orphaned=orphaned)
    if freed:
        digests = blob_digests(p.freed_blobs)
        data["freed"] = Freed(manifests=[[d, size] for d, size in p.freed_manifests.items()],
                              blobs=[[digests[k], size] for k, size in p.freed_blobs.items()])
    return data


def preview(repo, digests, user, keep_attached=False) -> DeletionPreview:
    """Plan ``digests`` and keep the plan, so that confirming it runs exactly what was shown
    (the ``keep_attached`` choice included: it is in the plan)."""
    return DeletionPreview.objects.create(
        repository=repo, created_by=user,
        plan=plan_data(make_plan(repo, digests, keep_attached), freed=True),
        expires_at=timezone.now() + timedelta(minutes=settings.DELETE_PREVIEW_MINUTES))


def confirm(repo, preview_id, user) -> DeletionJob:
    """Start the job a preview showed. Raises Http404 for a preview that is not this user's
    (or not of this repository) and PreviewGone when it expired or already ran."""
    found = DeletionPreview.objects.filter(pk=preview_id, repository=repo, created_by=user) \
        .first() if _uuid(preview_id) else None
    if found is None:
        raise Http404(f"There is no preview {str(preview_id)[:40]!r} of {repo.name} for you. "
                      "Preview the selection again.")
    now = timezone.now()
    with transaction.atomic():
        if found.expires_at <= now:
            raise PreviewGone(f"This preview expired at {found.expires_at:%H:%M} UTC (a "
                              f"preview can be confirmed for {settings.DELETE_PREVIEW_MINUTES} "
                              "minutes). Preview again to see what would be deleted now.", 410)
        job = jobs.create_job(repo, found.plan, user)
        # A preview runs once: two confirmations racing each other start one job.
        if not DeletionPreview.objects.filter(pk=found.pk, job__isnull=True).update(job=job):
            ran = DeletionPreview.objects.filter(pk=found.pk).values_list("job_id", flat=True)
            raise PreviewGone(f"This preview was already confirmed as deletion job "
                              f"{ran.first()}.", 409)
    transaction.on_commit(lambda: wake(job.pk))
    return job


def _uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
        return True
    except ValueError:
        return False


def start(repo, digests, user=None, keep_attached=False) -> DeletionJob:
    """Plan ``digests`` now and queue the job at once (scripts that skip the preview)."""
    job = jobs.create_job(repo, plan_data(make_plan(repo, digests, keep_attached), freed=True),
                          user)
    transaction.on_commit(lambda: wake(job.pk))
    return job


def wake(job_id):
    try:
        tasks.schedule(job_id, 0)
    except Exception as exc:  # noqa: BLE001 - any broker failure
        # The job is in the database; the periodic sweep starts it when the broker is back.
        log.warning("deletion job=%s not queued (broker unavailable): %s", job_id, exc)


def preview_data(p: DeletionPreview) -> dict:
    return {"preview_id": str(p.pk), "expires_at": p.expires_at.isoformat(), **{
        key: p.plan[key] for key in ("items", "kept", "reclaim_bytes", "unread")},
        "keep_attached": p.plan.get("keep_attached", False),
        "orphaned": p.plan.get("orphaned", [])}


def job_data(job: DeletionJob) -> dict:
    items = list(job.items.all())
    return {
        "id": job.pk,
        "repository": job.repository_name,
        "status": job.status,
        "created_at": job.created_at.isoformat(),
        "created_by": job.created_by.username if job.created_by else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "reclaim_bytes": job.reclaim_bytes,
        "kept": job.kept,
        "reclaim": reclaim.job_state(job),
        # An attached artifact's item also names its "subject" (as a plan item does).
        "items": [{"digest": i.digest, "type": i.kind, "tags": i.tags, "size": i.size,
                   "reason": i.reason, "status": i.status, "attempts": i.attempts,
                   "last_error": i.last_error or None, **({"subject": i.subject}
                                                          if i.subject else {})}
                  for i in items],
    }


def progress(job: DeletionJob) -> dict:
    """Counts for the progress panel (polled every second: aggregates, not every item)."""
    counts = dict(job.items.values_list("status").annotate(n=Count("id")).order_by())
    done_bytes = job.items.filter(status=ItemStatus.DONE).aggregate(b=Sum("size"))["b"] or 0
    # Items with a reason to show. A retried item is RUNNING while a worker tries it again:
    # it stays listed (as retrying) with its last error, so no poll loses it.
    problems = [{"digest": d, "tags": t, "error": e, "attempts": a, "next_attempt_at": due,
                 "status": ItemStatus.RETRYING if s == ItemStatus.RUNNING else s,
                 "trying_now": s == ItemStatus.RUNNING}
                for s, e, d, t, a, due in
                job.items.filter(status__in=(ItemStatus.RETRYING, ItemStatus.RUNNING,
                                             ItemStatus.FAILED, ItemStatus.SKIPPED))
                .exclude(last_error="").values_list("status", "last_error", "digest", "tags",
                                                     "attempts", "next_attempt_at")[:20]]
    now = timezone.now()
    for problem in problems:
        due = problem["next_attempt_at"]
        problem["due_in"] = max(0, round((due - now).total_seconds())) if due else None
    return {"total": sum(counts.values()), "counts": counts,
            "done": counts.get(ItemStatus.DONE, 0),
            "finished": sum(counts.get(s, 0) for s in DeletionItem.FINISHED),
            "done_bytes": done_bytes, "problems": problems}
