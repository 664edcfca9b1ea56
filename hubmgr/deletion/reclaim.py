"""Pending reclaim. Deleting manifests frees no disk: the bytes stay until the registry's garbage
collector runs, offline, started by hand or by cron (no API starts it or reports it). hubmgr
shows them as "deleted, waiting for garbage collection", notices when the collector has run,
and then shows them as reclaimed, with the date it noticed.

- ``record``: a new job keeps the manifests and blobs its plan frees (what the preview's
  reclaim figure counts) as ReclaimBlob rows.
- ``settle``: when the job finishes, the rows that a manifest in the inventory still uses go
  (an item kept or failed, a push since the preview). The items it deleted have left the
  inventory already, so for a partial job the rest is what its deleted items free, exactly as
  the preview counted it (no upper bound): it never frees what the plan did not count, and a
  blob a kept item uses is not freed. That is the job's ``freed_bytes``, pending.
- ``check`` (a beat task, and ``manage.py check_reclaim``): HEAD a few of a pending job's
  freed blobs, the largest ``SAMPLE``, in its repository. They answer 200 until the collector
  runs, which removes every unreferenced blob in one go: one 404 says it ran after that job
  finished, and so after every job that finished before it: those are all reclaimed. That is
  also how a job that freed only manifests (an index whose images stay) is settled, by a job
  that finished after it: a manifest is never served as a blob, so it is never probed. Pending
  jobs are probed by bisection over their finish times, newest first: one probe when the
  collector ran after the last job, about log2(n) when not.
  A blob the inventory shows in use again was pushed again: it is never probed, and its bytes
  do not count as reclaimed. Any registry error leaves everything pending until the next
  check, with the error kept for the pages.
"""

import logging
from itertools import chain, islice

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Exists, Max, OuterRef, Q, Sum
from django.utils import timezone

from hubmgr.inventory.catalog.batches import delete_in_batches
from hubmgr.inventory.models import Manifest, ManifestBlob
from hubmgr.inventory.registries import default_registry
from hubmgr.registry.errors import InvalidReference, RegistryError

from . import planner
from .graph import blob_digests, load_graph
from .models import DeletionJob, ReclaimBlob, ReclaimState
from .shapes import PlanData

log = logging.getLogger("hubmgr.deletion")
SAMPLE = 3  # freed blobs of a job asked for, the largest first
SETTLE_BATCH = 100  # finished jobs a check settles (ones whose worker died at the very end)
MARK_BATCH = 200  # jobs marked reclaimed per transaction


# ---- recording what a job frees ------------------------------------------------------------
def record(job, plan: PlanData):
    """Keep what ``plan`` frees, from its ``freed`` entry (``actions.plan_data(p, freed=True)``),
    or, for a plan without one (a cleanup policy's report keeps only totals), from the
    inventory now: the same count a preview makes."""
    freed = plan.get("freed")
    if freed is None:
        freed = _freed_now(job, [item["digest"] for item in plan["items"]])
    rows = chain(((job.pk, d, size, True) for d, size in freed["manifests"]),
                 ((job.pk, d, size, False) for d, size in freed["blobs"]))
    # Straight through the cursor: a plan of 10,000 items frees about 20,000 manifests and
    # blobs, and making a model instance of each took a second (as long as the job's items).
    table = connection.ops.quote_name(ReclaimBlob._meta.db_table)
    with connection.cursor() as cursor:
        while batch := list(islice(rows, 500)):  # 2,000 parameters a statement
            cursor.execute(f"INSERT INTO {table} (job_id, digest, size, manifest) VALUES "
                           + ", ".join(["(%s, %s, %s, %s)"] * len(batch))
                           + " ON CONFLICT DO NOTHING", list(chain.from_iterable(batch)))


def _freed_now(job, digests) -> dict:
    if job.repository is None or not digests:
        return {"manifests": [], "blobs": []}
    graph, keys = load_graph(job.repository, digests)
    manifests, blobs = planner.freed(graph, {k for k in keys if k in graph.nodes})
    names = blob_digests(blobs)
    return {"manifests": list(manifests.items()),
            "blobs": [(names[k], size) for k, size in blobs.items()]}


def _in_use(registry_id):
    """ReclaimBlob rows that a manifest in the inventory uses (anywhere in the registry)."""
    blob_used = ManifestBlob.objects.filter(blob__registry_id=registry_id,
                                            blob__digest=OuterRef("digest"))
    manifest_used = Manifest.objects.filter(repository__registry_id=registry_id,
                                            digest=OuterRef("digest"))
    return (Q(manifest=False) & Q(Exists(blob_used))) | (Q(manifest=True) &
                                                          Q(Exists(manifest_used)))


def _registry_id(job):
    if job.repository_id:
        return job.repository.registry_id
    return default_registry().pk


def settle(job) -> str:
    """At the end of ``job``: keep what it really freed, and make it pending (or "nothing").
    Idempotent; returns the job's reclaim state."""
    current = DeletionJob.objects.filter(pk=job.pk).values_list("reclaim_state", "status").first()
    if current is None:
        return ""
    state, status = current
    if state != ReclaimState.OPEN or status not in DeletionJob.FINISHED:
        return state
    rows = ReclaimBlob.objects.filter(job_id=job.pk)
    rows.filter(_in_use(_registry_id(job))).delete()
    totals = rows.aggregate(n=Count("id"), bytes=Sum("size"))
    state = ReclaimState.PENDING if totals["n"] else ReclaimState.NOTHING
    if DeletionJob.objects.filter(pk=job.pk, reclaim_state=ReclaimState.OPEN).update(
            reclaim_state=state, freed_bytes=totals["bytes"] or 0):
        log.info("deletion job=%s reclaim=%s freed=%d blobs=%d", job.pk, state,
                 totals["bytes"] or 0, totals["n"])
    job.reclaim_state, job.freed_bytes = state, totals["bytes"] or 0
    return state


# ---- noticing the garbage collector ----------------------------------------------------------
def _jobs(registry):
    return DeletionJob.objects.filter(Q(repository__registry=registry) |
                                      Q(repository__isnull=True))


def check(client, registry=None, now=None) -> dict:
    """Look for the garbage collector's mark on pending jobs; mark reclaimed those it freed.

    Returns ``{"reclaimed": [job ids], "reclaimed_bytes", "pending", "pending_bytes",
    "probed", "error"}``. A registry error is returned (and kept on the pending jobs for the
    pages), never raised: everything stays pending until the next check."""
    registry = registry or default_registry()
    now = now or timezone.now()
    jobs = _jobs(registry)
    for job in jobs.finished().filter(reclaim_state=ReclaimState.OPEN).select_related(
            "repository")[:SETTLE_BATCH]:
        settle(job)  # its worker stopped between the last item and settling
    pending = jobs.filter(reclaim_state=ReclaimState.PENDING)
    ordered = list(pending.order_by("finished_at", "pk").only("pk", "finished_at",
                                                              "repository_name"))
    prober = _Prober(client, registry.pk)
    error, reclaimed, reclaimed_bytes = "", [], 0
    try:
        ran_after = collected_prefix(ordered, prober)
    except RegistryError as exc:
        error = str(exc)[:500]
        log.warning("reclaim check: the registry did not answer, jobs stay pending: %s", exc)
    else:
        reclaimed, reclaimed_bytes = _mark(ordered[:ran_after], registry.pk, now,
                                           prober.present)
    pending.update(reclaim_checked_at=now, reclaim_error=error)
    left = pending.aggregate(n=Count("id"), bytes=Sum("freed_bytes"))
    if reclaimed:
        log.info("reclaim check: the garbage collector ran; reclaimed jobs=%d bytes=%d",
                 len(reclaimed), reclaimed_bytes)
    return {"reclaimed": reclaimed, "reclaimed_bytes": reclaimed_bytes, "pending": left["n"],
            "pending_bytes": left["bytes"] or 0, "probed": prober.probed, "error": error}


class _Prober:
    """Asks whether the collector ran after a job finished: True (a freed blob is gone), False
    (all its sampled blobs are still there) or None (nothing of it can be asked about)."""

    def __init__(self, client, registry_id):
        self.client, self.registry_id = client, registry_id
        self.answers = {}  # job id -> answer
        self.present = {}  # job id -> digests that answered 200
        self.probed = 0

    def __call__(self, job):
        if job.pk not in self.answers:
            self.answers[job.pk] = self._ask(job)
        return self.answers[job.pk]

    def _ask(self, job):
        sample = list(ReclaimBlob.objects.filter(job_id=job.pk, manifest=False)
                      .exclude(_in_use(self.registry_id)).order_by("-size", "digest")
                      .values_list("digest", flat=True)[:SAMPLE])
        gone, present = 0, set()
        for digest in sample:
            try:
                exists = self.client.blob_exists(job.repository_name, digest)
            except InvalidReference:  # a name or digest the client refuses: not a witness
                continue
            if exists:
                present.add(digest)
            else:
                gone += 1
        if not gone and not present:
            return None
        self.probed += 1
        self.present[job.pk] = present
        return gone > 0


def collected_prefix(ordered, ran_after) -> int:
    """How many of ``ordered`` (oldest finish first) the collector ran after: they are a
    prefix, since a run after one job is a run after every job that finished before it. The
    newest job is asked first; a job ``ran_after`` cannot say anything about is stepped over
    to the nearest one that can, and counts with the side it ends up on."""
    lo, hi = 0, len(ordered)
    mid = hi - 1
    while lo < hi:
        found = _nearest(ordered, ran_after, mid, lo, hi)
        if found is None:
            break
        i, ran = found
        if ran:
            lo = i + 1
        else:
            hi = i
        mid = (lo + hi) // 2
    return lo


def _nearest(ordered, ran_after, mid, lo, hi):
    for i in chain(range(mid, lo - 1, -1), range(mid + 1, hi)):
        answer = ran_after(ordered[i])
        if answer is not None:
            return i, answer
    return None


def _mark(jobs, registry_id, now, present) -> tuple[list, int]:
    """Mark ``jobs`` reclaimed at ``now``: each with the bytes of its freed rows that no
    manifest in the inventory uses again, less those of a probed job's blobs that were still
    there (``present``: job id -> digests). Their rows go. Returns the ids and the bytes."""
    marked, marked_bytes = [], 0
    for n in range(0, len(jobs), MARK_BATCH):
        batch = jobs[n:n + MARK_BATCH]
        with transaction.atomic():
            totals = {}
            for job in batch:
                rows = ReclaimBlob.objects.filter(job_id=job.pk).exclude(_in_use(registry_id))
                if present.get(job.pk):
                    rows = rows.exclude(digest__in=present[job.pk])
                totals[job.pk] = rows.aggregate(b=Sum("size"))["b"] or 0
            for job_id, size in totals.items():
                if DeletionJob.objects.filter(pk=job_id, reclaim_state=ReclaimState.PENDING) \
                        .update(reclaim_state=ReclaimState.RECLAIMED, reclaimed_bytes=size,
                                reclaimed_at=now, reclaim_checked_at=now, reclaim_error=""):
                    marked.append(job_id)
                    marked_bytes += size
        delete_in_batches(ReclaimBlob.objects.filter(job_id__in=[j.pk for j in batch]))
    return marked, marked_bytes


# ---- what the pages and the API show -------------------------------------------------------
def summary(registry, recent=5) -> dict:
    """Bytes deleted and waiting for the garbage collector, and what it reclaimed: for the
    partial ``deletion/_reclaim_summary.html`` (context name ``reclaim``)."""
    jobs = _jobs(registry)
    pending = jobs.filter(reclaim_state=ReclaimState.PENDING)
    waiting = pending.aggregate(jobs=Count("id"), bytes=Sum("freed_bytes"))
    last_check = pending.order_by("-reclaim_checked_at").values_list(
        "reclaim_checked_at", "reclaim_error").first() or (None, "")
    done = jobs.filter(reclaim_state=ReclaimState.RECLAIMED)
    totals = done.aggregate(jobs=Count("id"), bytes=Sum("reclaimed_bytes"),
                            last=Max("reclaimed_at"))
    last = done.filter(reclaimed_at=totals["last"]).aggregate(
        jobs=Count("id"), bytes=Sum("reclaimed_bytes")) if totals["last"] else {}
    return {
        "check_minutes": settings.RECLAIM_CHECK_MINUTES,
        "pending_bytes": waiting["bytes"] or 0,
        "pending_jobs": waiting["jobs"],
        "checked_at": last_check[0],
        "error": last_check[1],
        "reclaimed_bytes": totals["bytes"] or 0,
        "reclaimed_jobs": totals["jobs"],
        "last_reclaimed_at": totals["last"],
        "last_reclaimed_bytes": last.get("bytes") or 0,
        "last_reclaimed_jobs": last.get("jobs") or 0,
        "recent": list(done.order_by("-reclaimed_at", "-pk").values(
            "pk", "repository_name", "reclaimed_bytes", "reclaimed_at")[:recent]),
    }


def job_state(job) -> dict:
    """One job's reclaim, for the JSON API."""
    settled = ReclaimState(job.reclaim_state).is_settled
    reclaimed = job.reclaim_state == ReclaimState.RECLAIMED
    return {
        "state": job.reclaim_state,
        "freed_bytes": job.freed_bytes if settled else None,
        "reclaimed_bytes": job.reclaimed_bytes if reclaimed else None,
        "reclaimed_at": job.reclaimed_at.isoformat() if reclaimed else None,
        "last_checked_at": job.reclaim_checked_at.isoformat() if job.reclaim_checked_at
        else None,
        "last_check_error": job.reclaim_error or None,
    }
