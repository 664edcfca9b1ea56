"""What the page, the API and the `delete` command share: plan a selection, start a job, and
describe both as plain data."""

import logging

from django.db import transaction

from . import jobs, tasks
from .graph import load_graph
from .models import DeletionJob
from .planner import Plan, plan

log = logging.getLogger("hubmgr.deletion")


def make_plan(repo, digests) -> Plan:
    graph, selected = load_graph(repo, digests)
    return plan(graph, selected)


def start(repo, digests, user=None) -> DeletionJob:
    """Plan again (the inventory may have changed since the preview) and queue the job."""
    job = jobs.create_job(repo, make_plan(repo, digests), user)
    transaction.on_commit(lambda: wake(job.pk))
    return job


def wake(job_id):
    try:
        tasks.schedule(job_id, 0)
    except Exception as exc:  # noqa: BLE001 - any broker failure
        # The job is in the database; the periodic sweep starts it when the broker is back.
        log.warning("deletion job=%s not queued (broker unavailable): %s", job_id, exc)


def plan_data(p: Plan) -> dict:
    return {
        "items": [{"digest": n.digest, "type": n.kind, "tags": list(n.tags), "size": n.size,
                   "reason": reason} for n, reason in p.items],
        "kept": [{"digest": key[1], "reason": reason} for key, reason in p.kept],
        "reclaim_bytes": p.reclaim_bytes,
        "unread": [key[1] for key in p.unknown],
    }


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
        "items": [{"digest": i.digest, "type": i.kind, "tags": i.tags, "size": i.size,
                   "reason": i.reason, "status": i.status, "attempts": i.attempts,
                   "last_error": i.last_error or None} for i in items],
    }


def progress(job: DeletionJob) -> dict:
    """Counts for the progress panel."""
    items = list(job.items.values_list("status", "size", "last_error", "digest", "tags"))
    counts = {}
    for status, *_ in items:
        counts[status] = counts.get(status, 0) + 1
    done_bytes = sum(size for status, size, *_ in items if status == "done")
    problems = [{"digest": d, "tags": t, "status": s, "error": e}
                for s, _, e, d, t in items if s in ("retrying", "failed", "skipped") and e]
    return {"total": len(items), "counts": counts, "done": counts.get("done", 0),
            "finished": sum(counts.get(s, 0) for s in ("done", "skipped", "failed")),
            "done_bytes": done_bytes, "problems": problems[:20]}
