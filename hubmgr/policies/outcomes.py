"""What a policy run's deletion jobs did: the items they deleted (counted apart as a report
counts what goes) and the bytes they freed. A run's report says what its plan would free; a
run whose plans became jobs (at once, after "Delete forever", or after "Confirm and delete"
on what the brake stopped) is shown by what the jobs did instead, on the pages that list
runs (the policies list, the overview, a policy's runs, a run's page)."""

from dataclasses import dataclass

from django.db.models import Count

from hubmgr.deletion.models import DeletionItem, DeletionJob, ItemStatus, ReclaimState
from hubmgr.deletion.planner import ATTACHED, CHILD, SELECTED

from .models import PolicyRun

# A deleted item's reason, as the JobsOutcome field that counts it.
_COUNTED_AS = {SELECTED: "items", CHILD: "children", ATTACHED: "attached"}


@dataclass
class JobsOutcome:
    jobs: int = 0
    unfinished: int = 0  # jobs still deleting: the figures below are not final
    items: int = 0  # deleted top-level items
    children: int = 0  # deleted child images that went with an index
    attached: int = 0  # deleted artifacts that went with what they are attached to
    freed_bytes: int = 0  # what the finished jobs freed (DeletionJob.freed_bytes)
    planned_bytes: int = 0  # the plans' reclaim of the jobs whose freed bytes are not known

    @property
    def finished(self):
        return self.unfinished == 0

    @property
    def settled(self):
        """Every job finished and what it freed is known."""
        return self.finished and self.planned_bytes == 0


def with_outcomes(runs) -> list:
    """``runs`` as a list, each with ``outcome``: what its deletion jobs deleted and freed (a
    JobsOutcome), or None for a run that started none. Three queries, whatever the number
    of runs."""
    runs = list(runs)
    for run in runs:
        run.outcome = None
    links = list(PolicyRun.jobs.through.objects.filter(policyrun_id__in=[r.pk for r in runs])
                 .values_list("policyrun_id", "deletionjob_id"))
    if not links:
        return runs
    job_ids = {job_id for _, job_id in links}
    jobs = {pk: row for pk, *row in DeletionJob.objects.filter(pk__in=job_ids).values_list(
        "pk", "status", "reclaim_state", "freed_bytes", "reclaim_bytes")}
    deleted = {}
    for job_id, reason, n in (DeletionItem.objects.filter(job_id__in=job_ids,
                                                          status=ItemStatus.DONE)
                              .values_list("job_id", "reason").annotate(n=Count("id"))
                              .order_by()):
        deleted.setdefault(job_id, []).append((reason, n))
    outcomes = {}
    for run_id, job_id in links:
        if job_id not in jobs:
            continue
        status, state, freed, planned = jobs[job_id]
        outcome = outcomes.setdefault(run_id, JobsOutcome())
        outcome.jobs += 1
        if status not in DeletionJob.FINISHED:
            outcome.unfinished += 1
        if ReclaimState(state).is_settled:
            outcome.freed_bytes += freed
        else:  # still deleting, or a job from before jobs recorded what they freed
            outcome.planned_bytes += planned
        for reason, n in deleted.get(job_id, []):
            field = _COUNTED_AS.get(reason, "items")
            setattr(outcome, field, getattr(outcome, field) + n)
    for run in runs:
        run.outcome = outcomes.get(run.pk)
    return runs
