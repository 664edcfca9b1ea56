"""Runs of a policy: evaluate it over every repository it covers and plan what it selects with
the deletion planner, repository by repository, into a report (plain JSON-ready data); record
the run (one at a time per policy) and, in delete mode, start a deletion job per repository.

The covered repositories are loaded a few hundred at a time: one query for the top-level
items a remove rule may select (the rules decide; the query only spares loading the rest),
one for each repository's newest tagged items (keep-last), one for their item counts. A
repository with no candidate costs nothing more; for the others the planner loads only the
graph around the selection.
"""

import logging
import operator
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from functools import reduce

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import (
    BigIntegerField, Count, Exists, F, Func, Max, OuterRef, Q, Subquery, Window)
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import RowNumber
from django.utils import timezone

from hubmgr.actors import acting
from hubmgr.deletion import actions, jobs
from hubmgr.deletion.actions import plan_data
from hubmgr.deletion.graph import collector_paused, load_graphs
from hubmgr.deletion.planner import SELECTED, Graph, plan
from hubmgr.deletion.protection import Protection
from hubmgr.deletion.shapes import PlanData
from hubmgr.inventory.catalog import conditions
from hubmgr.inventory.models import IndexChild, Kind, Manifest, Repository
from hubmgr.inventory.pulls.coverage import Coverage
from hubmgr.inventory.registries import default_registry

from . import rules, schedule, setwise
from .models import CleanupPolicy, Mode, PolicyAudit, PolicyRun
from .reports import (
    GOING_BY_REASON, LISTS, ProtectedItem, Report, RepositoryReport, Totals, count_going)

log = logging.getLogger("hubmgr.policies")

CASCADE_NOTE = ("Index children are never selected on their own: a child goes only with its "
                "index, when no tag and no index outside the plan references it; anything a "
                "kept index references is kept (the deletion planner's rule). Nor are "
                "artifacts attached to an item (signatures, attestations, SBOMs, referrers): "
                "they go with it, and stay while it stays.")

CHUNK = 500  # repositories whose candidates are loaded together
GRAPH_ITEMS = 20_000  # selected items planned from one graph (load_graphs)
HEARTBEAT_SECONDS = 10
ABANDONED_AFTER = timedelta(minutes=5)

_ITEM_COLUMNS = ("digest", "kind", "tags_text", "last_pushed", "last_pushed_source",
                 "first_seen", "last_pulled", "is_orphan")


def covered_repositories(policy, registry=None):
    """The registry's repositories the policy's globs cover, by name. (Only those whose names
    start as an include pattern does are read: in a registry of 11,000 repositories, the
    form's live preview of 1,000 of them spent 0.15 s reading and matching every one.)"""
    registry = registry or default_registry()
    covers = policy.covers()
    repos = Repository.objects.filter(registry=registry)
    if (prefixes := covers.prefixes()) is not None:
        repos = repos.filter(reduce(operator.or_, (Q(name__startswith=p) for p in prefixes)))
    repos = repos.only("id", "name", "item_count", "registry_id").order_by("name")
    return [repo for repo in repos if covers(repo.name)]


def candidates_q(policy, now, coverage) -> Q | None:
    """Top-level rows that a remove rule may select (the tag expression is left to the
    rules), or None when no rule can select anything. The rules decide; this only spares
    loading the rest."""
    parts = []
    if policy.remove_orphans_days is not None:
        parts.append(conditions.orphaned_q() & conditions.older_than_q(
            now - timedelta(days=policy.remove_orphans_days)))
    if policy.remove_tag_regex and policy.remove_tag_days is not None:
        parts.append(Q(is_tagged=True) & conditions.pushed_before_q(
            now - timedelta(days=policy.remove_tag_days)))
    if policy.remove_untagged_days is not None:
        parts.append(Q(is_tagged=False) & conditions.older_than_q(
            now - timedelta(days=policy.remove_untagged_days)))
    if policy.remove_stale and coverage.decides_stale:
        parts.append(coverage.stale_q())
    return reduce(operator.or_, parts) if parts else None


def load_chunk(policy, repos, now, coverage) -> dict:
    """For a few hundred repositories at once, in three queries: {repository id: (its
    candidate items as the rules see them, Stale marked; the digests of its keep-last newest
    tagged items; its number of top-level items)} for the repositories with candidates."""
    where = candidates_q(policy, now, coverage)
    if where is None or not repos:
        return {}
    items, indexes = defaultdict(list), {}
    names, protection = {r.pk: r.name for r in repos}, None  # (read at the first tags)
    rows = Manifest.objects.top_level().filter(repository_id__in=list(names))
    for pk, repo_id, digest, kind, tags, pushed, source, first_seen, pulled, orphan in _rows(
            rows.filter(where)):
        tags = tuple(tags.split()) if tags else ()
        if tags and protection is None:
            protection = Protection.current()
        item = rules.Item(digest, kind, tags, pushed, source, first_seen, pulled,
                          is_orphan=bool(orphan), pk=pk,
                          protected=protection.protects(names[repo_id], tags) if tags else "")
        items[repo_id].append(item)
        if kind == Kind.INDEX:
            indexes[pk] = item
    if not items:
        return {}
    # An index is in use when one of its images is: a pull of a child by digest counts as a
    # pull of the index (for keep-pulled and for Stale), else the child would go with it.
    if indexes:
        for index_id, pulled in (IndexChild.objects.filter(
                index_id__in=list(indexes), child__last_pulled__isnull=False)
                .values("index_id").annotate(last=Max("child__last_pulled"))
                .values_list("index_id", "last")):
            item = indexes[index_id]
            item.last_pulled = max(item.last_pulled or pulled, pulled)
    for found in items.values():
        for item in found:
            item.stale = coverage.stale(item)
    newest = newest_tagged(list(items), policy.keep_last)
    totals = dict(Manifest.objects.top_level().filter(repository_id__in=list(items))
                  .values("repository_id").annotate(n=Count("id"))
                  .values_list("repository_id", "n"))
    return {repo_id: (found, newest.get(repo_id, set()), totals.get(repo_id, 0))
            for repo_id, found in items.items()}


def _rows(queryset):
    """The candidates' rows (id, repository id, then ``_ITEM_COLUMNS``), straight from the
    cursor. Django's converters were most of the time spent reading them: on PostgreSQL its
    loader parses each time's text in Python, one value at a time, so the times come as whole
    microseconds since 1970 instead; on SQLite it parses each again after the
    driver did, and here the driver's naive UTC time is only marked as UTC."""
    columns = _ROW_COLUMNS
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        queryset = queryset.annotate(**{f"{c}_us": Func(F(c), template=_MICROSECONDS,
                                                        output_field=BigIntegerField())
                                        for c in _TIMES})
        columns = tuple(f"{c}_us" if c in _TIMES else c for c in columns)
    sql, params = queryset.values_list(*columns).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while batch := cursor.fetchmany(5000):
            if postgresql:
                for row in batch:
                    yield [_EPOCH + timedelta(microseconds=v) if n in _TIME_AT and v is not None
                           else v for n, v in enumerate(row)]
            else:
                for row in batch:
                    yield [v.replace(tzinfo=UTC) if type(v) is datetime and v.tzinfo is None
                           else v for v in row]


_ROW_COLUMNS = ("id", "repository_id", *_ITEM_COLUMNS)
_TIMES = ("last_pushed", "first_seen", "last_pulled")
_TIME_AT = frozenset(n for n, c in enumerate(_ROW_COLUMNS) if c in _TIMES)
_MICROSECONDS = "(EXTRACT(EPOCH FROM %(expressions)s) * 1000000)::bigint"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def newest_tagged(repo_ids, n) -> dict:
    """{repository id: digests of its ``n`` most recently pushed tagged items}, as
    ``rules.newest_tagged`` orders them (the push seen, else first seen; digest breaks ties)."""
    if not n:
        return {}
    age = conditions.age_from_expression()
    rank = Window(RowNumber(), partition_by=[F("repository_id")],
                  order_by=[F("age").desc(nulls_last=True), F("digest").desc()])
    newest = defaultdict(set)
    for repo_id, digest in (Manifest.objects.top_level()
                            .filter(repository_id__in=repo_ids, is_tagged=True)
                            .annotate(age=age, rank=rank).filter(rank__lte=n)
                            .values_list("repository_id", "digest")):
        newest[repo_id].add(digest)
    return newest


def evaluate_chunk(policy, repos, now, coverage) -> dict:
    """{repository id: (its Evaluation, its candidate items, its number of top-level items)}
    for those of ``repos`` where the policy selects or protects something."""
    evaluated = {}
    for repo_id, (items, newest, total) in load_chunk(policy, repos, now, coverage).items():
        result = rules.evaluate(items, policy, now, newest)
        if result.selected or result.protected:
            evaluated[repo_id] = (result, items, total)
    return evaluated


def graph_batches(repos, evaluated):
    """``repos`` with a selection, in order, in groups of about GRAPH_ITEMS selected items:
    each group's graph is loaded at once (``load_graphs``)."""
    batch, count = [], 0
    for repo in repos:
        entry = evaluated.get(repo.pk)
        if entry is None or not entry[0].selected:
            continue
        if batch and count + len(entry[0].selected) > GRAPH_ITEMS:
            yield batch
            batch, count = [], 0
        batch.append(repo)
        count += len(entry[0].selected)
    if batch:
        yield batch


def load_batch(batch, evaluated) -> Graph:
    """The graph around every selected item of a group of repositories."""
    tags = {}  # of each selected item, as the rules read them
    for repo in batch:
        result, items, _ = evaluated[repo.pk]
        tags.update((item.pk, item.tags) for item in items if item.digest in result.selected)
    return load_graphs({repo.pk: repo.name for repo in batch}, list(tags), tags=tags)


def plan_repository(policy, repo, result, items, total, graph=None) -> RepositoryReport:
    """The report of one repository, every item listed, from its evaluation
    (``evaluate_chunk``) and, when it selects anything, a graph around its selection
    (``load_batch``); each "<list>_count" counts its list. (``setwise`` answers the same
    for dry runs that list only the first entries.)"""
    tags = {item.digest: list(item.tags) for item in items}
    protected: list[ProtectedItem] = [  # (dict displays: see actions.plan_data)
        {"digest": d, "tags": tags[d], "rule": rule, "keep": keeps}
        for d, (rule, keeps) in sorted(result.protected.items())]
    report = RepositoryReport(
        repository=repo.name,
        items=total,
        selected=len(result.selected),
        going=[],
        protected=protected,
        kept=[],
        reclaim_bytes=0,
        unread=[],
        brake=None,
    )
    if result.selected:
        p = plan(graph, [(repo.name, d) for d in result.selected])
        # As a preview keeps it (a job runs exactly this), with each selected item's rule.
        planned = plan_data(p)
        for entry in planned["items"]:
            entry["rule"] = result.selected.get(entry["digest"]) \
                if entry["reason"] == SELECTED else None
        for entry in planned["kept"]:
            node = graph.nodes.get((repo.name, entry["digest"]))
            entry["tags"] = list(node.tags) if node else []
        report.update(going=planned["items"], kept=planned["kept"], unread=planned["unread"],
                      reclaim_bytes=p.reclaim_bytes)
    report.update({f"{key}_count": len(report[key]) for key in LISTS})
    report.update(count_going(report["going"]))
    if result.selected:
        report["brake"] = rules.brake_reason(policy, report["going_items"], total)
    return report


def preview(policy, limit, now=None, registry=None) -> Report:
    """What ``policy`` would remove now, counted and listed set-wise in SQL (``setwise``, which
    answers as the planner does), each repository's lists holding at most ``limit`` entries:
    a page or the API shows 100 of each, the form's live preview none. Nothing is recorded or
    deleted."""
    now = now or timezone.now()
    registry = registry or default_registry()
    repos = covered_repositories(policy, registry)
    found = setwise.evaluate(policy, repos, now, Coverage.of(registry, now), limit)
    return _report(policy, now, repos, [found[repo.pk] for repo in repos if repo.pk in found])


def plan_every_item(policy, now=None, progress=None, registry=None,
                    on_repository=None) -> Report:
    """What ``policy`` would remove now, each repository planned by the deletion planner and
    every item listed: a recorded run's report, whose plans become deletion jobs. Nothing is
    recorded or deleted here. ``progress`` wraps the list of repositories (a tqdm bar, say);
    ``on_repository`` is called after each."""
    now = now or timezone.now()
    registry = registry or default_registry()
    coverage = Coverage.of(registry, now)
    repos = covered_repositories(policy, registry)
    reports, evaluated, batches, graph, in_graph = [], {}, iter(()), None, set()
    with collector_paused():
        for n, repo in enumerate(progress(repos) if progress else repos):
            if n % CHUNK == 0:
                evaluated = evaluate_chunk(policy, repos[n:n + CHUNK], now, coverage)
                batches = iter(list(graph_batches(repos[n:n + CHUNK], evaluated)))
            entry = evaluated.get(repo.pk)
            if entry is not None:
                if entry[0].selected and repo.pk not in in_graph:
                    graph = None  # (the last batch's memory goes first)
                    batch = next(batches)
                    in_graph = {r.pk for r in batch}
                    graph = load_batch(batch, evaluated)
                reports.append(plan_repository(policy, repo, *entry, graph=graph))
            if on_repository:
                on_repository()
    return _report(policy, now, repos, reports)


def _report(policy, now, repos, reports) -> Report:
    going = [r for r in reports if not r["brake"]]
    braked = [r for r in reports if r["brake"]]
    return Report(
        policy=policy.name,
        mode=policy.mode,
        at=now.isoformat(),
        rules=_rule_descriptions(policy),
        note=CASCADE_NOTE,
        repositories=reports,
        totals=Totals(
            repositories=len(repos),
            planned=len(reports),
            going=sum(r["going_count"] for r in going),
            **{key: sum(r[key] for r in going) for key in GOING_BY_REASON.values()},
            protected=sum(r["protected_count"] for r in reports),
            kept=sum(r["kept_count"] for r in reports),
            reclaim_bytes=sum(r["reclaim_bytes"] for r in going),
            braked=len(braked),
            braked_going=sum(r["going_count"] for r in braked),
            braked_going_items=sum(r["going_items"] for r in braked),
            braked_reclaim_bytes=sum(r["reclaim_bytes"] for r in braked),
        ),
    )


def _rule_descriptions(policy):
    remove = {}
    if policy.remove_orphans_days is not None:
        remove[rules.REMOVE_ORPHANED] = rules.describe_remove(policy, rules.REMOVE_ORPHANED)
    if policy.remove_tag_regex and policy.remove_tag_days is not None:
        remove[rules.REMOVE_TAG] = rules.describe_remove(policy, rules.REMOVE_TAG)
    if policy.remove_untagged_days is not None:
        remove[rules.REMOVE_UNTAGGED] = rules.describe_remove(policy, rules.REMOVE_UNTAGGED)
    if policy.remove_stale:
        remove[rules.REMOVE_STALE] = rules.describe_remove(policy, rules.REMOVE_STALE)
    keep = {}
    if policy.keep_last:
        keep[rules.KEEP_LAST] = rules.describe_keep(policy, rules.KEEP_LAST)
    if policy.keep_tag_regex:
        keep[rules.KEEP_TAG] = rules.describe_keep(policy, rules.KEEP_TAG)
    if policy.keep_pulled_days is not None:
        keep[rules.KEEP_PULLED] = rules.describe_keep(policy, rules.KEEP_PULLED)
    keep[rules.KEEP_PROTECTED] = rules.describe_keep(policy, rules.KEEP_PROTECTED)
    return {"remove": remove, "keep": keep}


def record_run(policy, user=None, progress=None, delete=False) -> PolicyRun:
    """A run kept in the policy's history: running, then done (or done with the brake
    stopping some repositories) with its report, or failed with the reason. The row is
    finished whatever happens, never left running.

    With ``delete`` and a policy in delete mode, each repository's plan that the brake did not
    stop becomes a deletion job that runs exactly that plan (anything tagged or referenced
    since is kept); the report names each job. Otherwise nothing is deleted."""
    delete = delete and policy.mode == Mode.DELETE
    run = _claim(policy, dry_run=not delete, started_by=user)
    return _execute(run, policy, delete, user, progress)


def claim_run(policy, user=None, delete=True, confirm_first=False) -> PolicyRun:
    """A running run recorded now, for a worker to ``execute`` (AlreadyRunning when one is).
    It deletes only with ``delete`` and a policy in delete mode; with ``confirm_first`` too,
    only once a maintainer confirms what it planned (``confirm_run``)."""
    delete = delete and policy.mode == Mode.DELETE
    return _claim(policy, dry_run=not delete, started_by=user,
                  confirm_first=confirm_first and delete)


def execute(run) -> PolicyRun:
    """Finish a run that ``claim_run`` recorded: its report, and its jobs unless a dry run
    (or a run that waits for confirmation first)."""
    return _execute(run, run.policy, not run.dry_run, run.started_by)


def run_if_due(policy, now=None) -> PolicyRun | None:
    """The scheduled run of ``policy`` (deleting if it is in delete mode) when it is due, else
    None. The check and the claim happen under a lock on the policy: a time is run once."""
    now = now or timezone.now()
    with transaction.atomic():
        policy = CleanupPolicy.objects.select_for_update().filter(pk=policy.pk).first()
        if policy is None or not schedule.is_due(policy, now):
            return None
        delete = policy.mode == Mode.DELETE
        run = _claim(policy, dry_run=not delete, scheduled=True)
    return _execute(run, policy, delete)


def _execute(run, policy, delete, user=None, progress=None) -> PolicyRun:
    report = None
    try:
        with Heartbeat(run) as beat:
            report = plan_every_item(policy, progress=progress, on_repository=beat)
            if delete and not run.confirm_first:
                start_jobs(run, report, user, on_repository=beat)
    except ClaimLost:
        # Declared dead while it worked, and perhaps started again since: what it found is
        # dropped, and it deleted nothing after that (start_jobs checks the claim).
        log.warning("run %s of policy %s lost its claim (marked failed while it worked); "
                    "its result is dropped", run.pk, policy.name)
        return PolicyRun.objects.get(pk=run.pk)
    except Exception as exc:
        log.exception("run %s of policy %s failed", run.pk, policy.name)
        run.status, run.error = PolicyRun.Status.FAILED, f"{type(exc).__name__}: {exc}"
        run.report = report or {}  # with the jobs started before the failure, if any
    else:
        run.report = report
        run.status = (PolicyRun.Status.AWAITING if delete and run.confirm_first
                      and any(e["going"] and not e["brake"] for e in report["repositories"])
                      else _done(report))
    run.finished_at = timezone.now()
    # Finished only by the holder of the claim: a run marked failed meanwhile stays failed.
    if not PolicyRun.objects.filter(pk=run.pk, status=PolicyRun.Status.RUNNING).update(
            report=run.report, status=run.status, error=run.error,
            finished_at=run.finished_at):
        log.warning("run %s of policy %s finished after it was marked failed; its result is "
                    "dropped", run.pk, policy.name)
        return PolicyRun.objects.get(pk=run.pk)
    return run


def _done(report):
    return PolicyRun.Status.BRAKED if report["totals"]["braked"] else PolicyRun.Status.DONE


def with_reclaim(run_qs):
    """Runs without their report (a recorded one lists every item that went), each with its
    totals' ``reclaim_bytes`` and ``braked_reclaim_bytes`` (what its plans would free outside
    and inside the repositories the brake stopped; None when it has none). What its jobs
    did is ``outcomes.with_outcomes``'."""
    totals = KeyTransform("totals", "report")
    return run_qs.defer("report").annotate(
        reclaim_bytes=KeyTransform("reclaim_bytes", totals),
        braked_reclaim_bytes=KeyTransform("braked_reclaim_bytes", totals))


def last_runs(policy_ids) -> dict:
    """{policy id: its newest run, as with_reclaim gives it}, in two queries."""
    newest = PolicyRun.objects.filter(policy=OuterRef("pk")).order_by("-started_at", "-id")
    ids = (CleanupPolicy.objects.filter(pk__in=policy_ids)
           .annotate(last=Subquery(newest.values("pk")[:1]))
           .exclude(last=None).values_list("last", flat=True))
    return {run.policy_id: run for run in with_reclaim(PolicyRun.objects.filter(pk__in=list(ids)))}


class AlreadyRunning(Exception):
    pass


def fail_abandoned(policy=None, now=None) -> int:
    """Mark failed the running runs (of ``policy``, or all) whose process stopped showing
    signs of life: a crash never leaves a run running for ever, nor blocks the next one."""
    now = now or timezone.now()
    abandoned = PolicyRun.objects.filter(status=PolicyRun.Status.RUNNING,
                                         heartbeat_at__lt=now - ABANDONED_AFTER)
    if policy is not None:
        abandoned = abandoned.filter(policy=policy)
    return abandoned.update(status=PolicyRun.Status.FAILED, finished_at=now,
                            error="Interrupted: the process running it stopped (no sign of "
                                  f"life for {ABANDONED_AFTER.seconds // 60} minutes).")


def _claim(policy, **fields) -> PolicyRun:
    """A new running run, or AlreadyRunning: the one_running_run constraint lets only one
    run of a policy be running, whichever process asks."""
    fail_abandoned(policy)
    try:
        with transaction.atomic():
            return PolicyRun.objects.create(policy=policy, **fields)
    except IntegrityError:
        raise AlreadyRunning(f"Policy {policy.name} is already running; one run at a time."
                             ) from None


class ClaimLost(Exception):
    """The run was marked failed (no sign of life) while it worked: it must stop at once."""


class OutOfTime(Exception):
    """The run has worked longer than HUBMGR_POLICY_RUN_SECONDS."""


def live_claim(run_id, now=None):
    """The run, while its claim is live: running, with a sign of life within
    ABANDONED_AFTER. Locked for the rest of the caller's transaction (on PostgreSQL; SQLite's
    transactions take the write lock at once): ``fail_abandoned`` cannot mark it failed until
    that transaction ends."""
    now = now or timezone.now()
    return PolicyRun.objects.select_for_update().filter(
        pk=run_id, status=PolicyRun.Status.RUNNING,
        heartbeat_at__gte=now - ABANDONED_AFTER).first()


class Heartbeat:
    """A run's sign of life, written by a thread of its own every HEARTBEAT_SECONDS whatever
    the run is doing (one long selection query included), for as long as the run is running
    in the database. The run calls it between steps (once per repository): it raises
    ClaimLost once another process marked the run failed, OutOfTime past the time limit."""

    def __init__(self, run, seconds=None):
        self.run_id = run.pk
        self.deadline = time.monotonic() + (seconds or settings.POLICY_RUN_SECONDS)
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"run-{run.pk}-heartbeat",
                                        daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def __call__(self):
        if self.lost:
            raise ClaimLost(f"run {self.run_id} was marked failed while it worked")
        if time.monotonic() > self.deadline:
            raise OutOfTime(f"the run took longer than its limit of "
                            f"{settings.POLICY_RUN_SECONDS} s (HUBMGR_POLICY_RUN_SECONDS) "
                            "and was stopped; nothing more was started")

    def _beat(self):
        try:
            while not self._stop.wait(HEARTBEAT_SECONDS):
                try:
                    runs = PolicyRun.objects.filter(pk=self.run_id)
                    if not runs.filter(status=PolicyRun.Status.RUNNING).update(
                            heartbeat_at=timezone.now()):
                        self.lost = runs.exists()  # (a row not committed yet is not lost)
                        if self.lost:
                            return
                except DatabaseError as exc:  # busy or gone: try again at the next beat
                    log.warning("run=%s heartbeat not written: %s", self.run_id, exc)
        finally:
            connection.close()  # this thread's own connection


def record_dry_run(policy, user=None, progress=None) -> PolicyRun:
    return record_run(policy, user, progress, delete=False)


class CannotConfirm(Exception):
    pass


def _confirmable(now):
    """Runs whose brake may be confirmed at ``now``: finished in delete mode with the brake
    stopping some repository, not confirmed yet, their plan as fresh as a preview may be, and
    their policy unchanged since they started (else the plan follows old settings)."""
    changed = PolicyAudit.objects.filter(policy_id=OuterRef("policy_id"),
                                         at__gt=OuterRef("started_at"))
    return PolicyRun.objects.filter(
        status=PolicyRun.Status.BRAKED, dry_run=False, brake_confirmed_at=None,
        finished_at__gte=now - timedelta(minutes=settings.DELETE_PREVIEW_MINUTES),
    ).exclude(Exists(changed))


def cannot_confirm(run, now=None) -> str | None:
    """Why what the brake stopped in ``run`` cannot be confirmed at ``now``, in words a person
    can act on; None when it can."""
    now = now or timezone.now()
    if run.dry_run:
        return ("This run only reported (report mode); only a run in delete mode that the "
                "brake stopped can be confirmed.")
    if run.status == PolicyRun.Status.RUNNING:
        return "This run is still running; confirm once it has finished."
    if run.status in (PolicyRun.Status.AWAITING, PolicyRun.Status.UNCONFIRMED):
        return ("This run's deletion has not been confirmed (Delete forever); what the brake "
                "stopped can be confirmed only after it.")
    if run.status != PolicyRun.Status.BRAKED:
        return "The brake stopped nothing in this run: there is nothing to confirm."
    if run.brake_confirmed_at is not None:
        by = run.brake_confirmed_by
        return (f"Already confirmed{f' by {by.username}' if by else ''} at "
                f"{run.brake_confirmed_at:%Y-%m-%d %H:%M} UTC; its deletion jobs are listed "
                "on the run's page.")
    minutes = settings.DELETE_PREVIEW_MINUTES
    if run.finished_at + timedelta(minutes=minutes) < now:
        return (f"This run's plan is too old to confirm (a plan may be confirmed for {minutes} "
                "minutes, as a preview); run the policy again.")
    change = PolicyAudit.objects.filter(policy_id=run.policy_id, at__gt=run.started_at).first()
    if change is not None:
        by = f" by {change.user.username}" if change.user else ""
        return (f"The policy changed after this run started ({change.at:%Y-%m-%d %H:%M} UTC"
                f"{by}); run it again so that the plan follows its settings.")
    return None


def confirm_brake(run, user=None, now=None) -> list:
    """Delete what the brake stopped in ``run``: each stopped repository's recorded plan
    becomes a deletion job, once, with the same checks as a confirmed preview (anything
    tagged or referenced since the plan is kept). Only a finished run in delete mode, while
    its plan is as fresh as a preview may be and its policy unchanged. Returns the new jobs'
    ids; CannotConfirm says why not."""
    now = now or timezone.now()
    reason = cannot_confirm(run, now)
    if reason:
        raise CannotConfirm(reason)
    user = acting(user)
    with transaction.atomic():
        # The claim: of confirmations at once (a double click, two maintainers), this
        # conditional update lets one through, whichever process asks; the others wait for
        # its transaction and then update nothing. Jobs start only after a claim, in the
        # same transaction, so a failure leaves the run unconfirmed and nothing started.
        if not _confirmable(now).filter(pk=run.pk).update(brake_confirmed_at=now,
                                                          brake_confirmed_by=user):
            fresh = PolicyRun.objects.select_related("brake_confirmed_by").filter(
                pk=run.pk).first()
            raise CannotConfirm((cannot_confirm(fresh, now) if fresh else None)
                                or "This run cannot be confirmed any more.")
        run = PolicyRun.objects.get(pk=run.pk)
        stopped = [entry for entry in run.report["repositories"]
                   if entry["brake"] and not entry.get("job")]
        for entry in stopped:
            entry["brake_confirmed_by"] = getattr(user, "username", None)
        start_jobs(run, {"repositories": stopped}, user, confirmed=True, braked=True)
        run.save(update_fields=["report"])
    return [entry["job"] for entry in stopped if entry["job"]]


def _confirm_until(run):
    return run.finished_at + timedelta(minutes=settings.DELETE_PREVIEW_MINUTES)


def _awaiting(now):
    """Runs waiting for confirmation that may be answered at ``now``: planned no longer ago
    than a preview may be confirmed, their policy unchanged since they started."""
    changed = PolicyAudit.objects.filter(policy_id=OuterRef("policy_id"),
                                         at__gt=OuterRef("started_at"))
    return PolicyRun.objects.filter(
        status=PolicyRun.Status.AWAITING,
        finished_at__gte=now - timedelta(minutes=settings.DELETE_PREVIEW_MINUTES),
    ).exclude(Exists(changed))


def cannot_confirm_run(run, now=None) -> str | None:
    """Why ``run`` cannot be confirmed (Delete forever) or cancelled at ``now``, in words a
    person can act on; None when it can."""
    now = now or timezone.now()
    if run.status == PolicyRun.Status.RUNNING:
        return ("This run is still planning; what it would delete is shown here when it has "
                "finished, and deleted only once confirmed.")
    by = f" by {run.answered_by.username}" if run.answered_by else ""
    when = f" at {run.answered_at:%Y-%m-%d %H:%M} UTC" if run.answered_at else ""
    if run.status == PolicyRun.Status.UNCONFIRMED:
        if run.answered_at is None:
            return (f"This run was not confirmed within {settings.DELETE_PREVIEW_MINUTES} "
                    "minutes and deleted nothing; run the policy again to see what it would "
                    "delete now.")
        return (f"This run was cancelled{by}{when} and deleted nothing; run the policy again "
                "to see what it would delete now.")
    if run.answered_at is not None:
        return (f"Already confirmed{by}{when}; its deletion jobs are listed on the run's "
                "page.")
    if run.status != PolicyRun.Status.AWAITING:
        return "This run does not wait for a confirmation: nothing to confirm."
    minutes = settings.DELETE_PREVIEW_MINUTES
    if _confirm_until(run) < now:
        return (f"This run's plan is too old to confirm (a plan may be confirmed for {minutes} "
                "minutes, as a preview); run the policy again to see what it would delete "
                "now.")
    change = PolicyAudit.objects.filter(policy_id=run.policy_id, at__gt=run.started_at).first()
    if change is not None:
        by = f" by {change.user.username}" if change.user else ""
        return (f"The policy changed after this run started ({change.at:%Y-%m-%d %H:%M} UTC"
                f"{by}); run it again so that what it deletes follows its settings.")
    return None


def _answer(run, now, then=None, **fields) -> PolicyRun:
    """Answer a run awaiting confirmation: set ``fields``, then call ``then`` with the run, in
    one transaction. The claim: of answers at once (a double click, two maintainers, Delete
    forever beside Cancel), this conditional update lets one through, whichever process asks;
    the others wait for its transaction, then update nothing and are told why
    (CannotConfirm). A failure in ``then`` leaves the run waiting and nothing started."""
    with transaction.atomic():
        if _awaiting(now).filter(pk=run.pk).update(answered_at=now, **fields):
            run = PolicyRun.objects.get(pk=run.pk)
            if then:
                then(run)
            return run
    fresh = PolicyRun.objects.select_related("answered_by").filter(pk=run.pk).first()
    if fresh is None:
        raise CannotConfirm("This run is gone (its policy was deleted).")
    if fresh.status == PolicyRun.Status.AWAITING and _confirm_until(fresh) < now:
        PolicyRun.objects.filter(pk=run.pk, status=PolicyRun.Status.AWAITING).update(
            status=PolicyRun.Status.UNCONFIRMED)
        fresh.refresh_from_db()
    raise CannotConfirm(cannot_confirm_run(fresh, now) or "This run cannot be confirmed now.")


def confirm_run(run, user=None, now=None) -> list:
    """Delete what ``run`` planned and showed ("Delete forever"): each repository's recorded
    plan that the brake did not stop becomes a deletion job, once, with the same checks as a
    confirmed preview (anything tagged, protected or referenced since the plan is kept). Only
    while the plan is as fresh as a preview may be and the policy unchanged since the run
    started. The run is then done, or braked (whose brake may be confirmed on its own).
    Returns the new jobs' ids; CannotConfirm says why not."""
    now = now or timezone.now()
    user = acting(user)
    # (A waiting run's report is final: its status once confirmed follows from it.)
    report = PolicyRun.objects.filter(pk=run.pk).values_list("report", flat=True).first()

    def start(run):
        start_jobs(run, run.report, user, confirmed=True)
        run.save(update_fields=["report"])

    run = _answer(run, now, then=start, answered_by=user,
                  status=_done(report) if report else PolicyRun.Status.DONE)
    return [entry["job"] for entry in run.report["repositories"] if entry.get("job")]


def cancel_run(run, user=None, now=None) -> PolicyRun:
    """Answer "no" to a run awaiting confirmation ("Cancel"): it deletes nothing, ever, and
    says who cancelled it. CannotConfirm when it was answered already or is past its time."""
    now = now or timezone.now()
    user = acting(user)
    return _answer(run, now, answered_by=user, status=PolicyRun.Status.UNCONFIRMED)


def expire_unconfirmed(now=None) -> int:
    """Mark not confirmed the runs that waited for a confirmation longer than a preview may
    be confirmed: they delete nothing, and the history says so."""
    now = now or timezone.now()
    return PolicyRun.objects.filter(
        status=PolicyRun.Status.AWAITING,
        finished_at__lt=now - timedelta(minutes=settings.DELETE_PREVIEW_MINUTES),
    ).update(status=PolicyRun.Status.UNCONFIRMED)


def start_jobs(run, report, user=None, on_repository=None, confirmed=False, braked=False):
    """One deletion job per planned repository (with ``braked``, only those the brake
    stopped were passed, and they go too; else those the brake stopped are left), queued for
    the workers once its transaction commits. Each job is created in the same transaction as
    a check that the run still holds a live claim (ClaimLost when not): a run declared dead
    never deletes. (A ``confirmed`` run's claim is the caller's own conditional update:
    ``confirm_brake``'s or ``confirm_run``'s.)"""
    registry = default_registry()
    for entry in report["repositories"]:
        if on_repository:
            on_repository()
        entry["job"] = None
        if (entry["brake"] and not braked) or not entry["going"]:
            continue
        repo = Repository.objects.filter(registry=registry, name=entry["repository"]).first()
        if repo is None:  # forgotten since the plan: nothing of it to delete
            continue
        with transaction.atomic():
            if not confirmed and live_claim(run.pk) is None:
                raise ClaimLost(f"run {run.pk} no longer holds a live claim")
            job = jobs.create_job(repo, PlanData(items=entry["going"], kept=entry["kept"],
                                                 reclaim_bytes=entry["reclaim_bytes"]), user)
            run.jobs.add(job)
            transaction.on_commit(lambda job_id=job.pk: actions.wake(job_id))
        entry["job"] = job.pk


def with_totals(run_qs):
    """Runs without their report (it can list every item that went), each with the report's
    ``totals`` (a small dict, None while running) read by the database."""
    return run_qs.defer("report").annotate(
        totals=KeyTransform("totals", "report"))
