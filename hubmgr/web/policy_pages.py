"""The cleanup policy pages: the list, a policy with its runs, a run's report, the form with
its live preview, and the maintainers' actions (dry run, run now, delete). Every change goes
through hubmgr.policies.service, so it is audited; the lookups are those the JSON API uses
(lookups.py), the bounded report hubmgr.policies.reports'."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import FieldDoesNotExist
from django.db import IntegrityError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.text import capfirst
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

from hubmgr.policies import outcomes, reports, runs, service, tasks
from hubmgr.policies.models import CleanupPolicy, PolicyRun
from hubmgr.units import human_size, plural

from .deletions import DELETE_PERMISSION, require_delete_permission
from .lookups import get_policy, get_run
from .policy_forms import (
    POLICY_PERMISSION, PolicyForm, PreviewForm, percent_text, require_policy_change)
from .present import deleted_text, freed_text, with_last_run

MAX_RUNS = 50  # run history shown on a policy's page
MAX_AUDIT = 20  # changes shown on a policy's page


def get_policy_to_change(request, policy_id) -> CleanupPolicy:
    """The policy, for a maintainer: 404 when there is none, 403 for everyone else."""
    policy = get_policy(policy_id)
    require_policy_change(request.user)
    return policy


def present_report(report) -> dict:
    """The bounded report with what a page shows: sizes in words, and each repository's
    lists grouped by reason, in tag order, with a count per group (reports.grouped_lists,
    over every item the report lists, before the lists are cut to what a page shows)."""
    report = reports.counted_apart(report)
    braked = reports.braked_counts(report) if report.get("totals") else None
    groups = [reports.grouped_lists(entry, report.get("rules") or {})
              for entry in (report.get("repositories") or [])[:reports.MAX_LISTED_REPOSITORIES]]
    report = reports.bounded(report)
    for entry, lists in zip(report.get("repositories", []), groups):
        entry.update(lists)
        entry["reclaim_text"] = human_size(entry["reclaim_bytes"])
        entry["going_text"] = reports.going_text(entry, of=entry["items"])
        entry["going_parts"] = reports.going_text(entry)
        for group in entry["going_groups"]["groups"]:
            for item in group["items"]:
                item["size_text"] = human_size(item.get("size") or 0)
    totals = report.get("totals")
    if totals:
        totals["reclaim_text"] = human_size(totals["reclaim_bytes"])
        totals["braked_reclaim_text"] = human_size(totals["braked_reclaim_bytes"])
        totals["going_clause"] = reports.going_text(totals, clause=True)
        totals["braked_going_text"] = reports.going_text(braked)
        report["repositories_more"] = totals["planned"] - len(report["repositories"])
    return report


@require_GET
@login_required
def policy_list(request):
    return render(request, "policies/list.html", {
        "policies": with_last_run(CleanupPolicy.objects.all()),
        "can_change": request.user.has_perm(POLICY_PERMISSION)})


def setting_text(name, value) -> str:
    """A policy setting's value as the audit shows it."""
    try:
        field = CleanupPolicy._meta.get_field(name)
    except FieldDoesNotExist:  # a setting an older version had
        field = None
    if value is None or value == "":
        return "—"
    if name == "brake_share" and isinstance(value, (int, float)):
        return f"{percent_text(value)}%"  # as the form takes it
    if field is not None and field.choices:
        return str(dict(field.flatchoices).get(value, value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def setting_label(name) -> str:
    try:
        return capfirst(CleanupPolicy._meta.get_field(name).verbose_name)
    except FieldDoesNotExist:
        return name


def _audit(policy):
    """The policy's MAX_AUDIT latest changes, each with its changed fields in words."""
    entries = list(policy.audit.select_related("user")[:MAX_AUDIT])
    for entry in entries:
        entry.changes = [(setting_label(name), setting_text(name, before),
                          setting_text(name, after))
                         for name, before, after in service.changes(entry.before, entry.after)]
    return entries


def _policy_page(request, policy, message=None, status=200):
    history = outcomes.with_outcomes(
        runs.with_reclaim(policy.runs.select_related("started_by"))[:MAX_RUNS + 1])
    for run in history:
        run.freed = freed_text(run)
    audit = _audit(policy)
    return render(request, "policies/policy.html", {
        "policy": policy, "runs": history[:MAX_RUNS], "more_runs": len(history) > MAX_RUNS,
        "audit": audit,
        "audit_count": len(audit) if len(audit) < MAX_AUDIT else policy.audit.count(),
        "can_change": request.user.has_perm(POLICY_PERMISSION), "message": message},
        status=status)


@require_GET
@login_required
def policy_detail(request, policy_id):
    return _policy_page(request, get_policy(policy_id))


@require_POST
@login_required
def policy_dry_run(request, policy_id):
    """What the policy would remove now, inline (htmx); nothing is recorded or deleted, so
    everyone who may read the policy may ask."""
    policy = get_policy(policy_id)
    return render(request, "policies/policy.html#dry-run", {
        "policy": policy,
        "report": present_report(runs.preview(policy, reports.MAX_LISTED_ITEMS))})


@require_POST
@login_required
def policy_run(request, policy_id):
    """Start a run on the workers and show its report page; one already running or the queue
    down is a message on the policy's page. In delete mode the run only plans: its page shows
    what it would delete and deletes on "Delete forever" (run_confirm)."""
    policy = get_policy_to_change(request, policy_id)
    try:
        run = tasks.start_run(policy, request.user, confirm_first=True)
    except runs.AlreadyRunning as exc:
        return _policy_page(request, policy, str(exc), status=409)
    except tasks.QueueUnavailable as exc:
        return _policy_page(request, policy, f"Not started: {exc}.", status=503)
    return redirect("policy-run", run.pk)


def _brake(request, run, jobs):
    """What a delete run's page says about its brake: who confirmed it and the jobs that
    started, or why it cannot be confirmed, or what confirming would delete (and until when);
    None when the brake stopped nothing the run could delete."""
    if run.dry_run or run.status != PolicyRun.Status.BRAKED:
        return None
    confirmed = {entry.get("job") for entry in run.report.get("repositories", [])
                 if entry.get("brake")}
    return {"confirmed_jobs": [job for job in jobs if job.pk in confirmed],
            "reason": None if run.brake_confirmed_at else runs.cannot_confirm(run),
            "until": run.finished_at + timedelta(minutes=settings.DELETE_PREVIEW_MINUTES),
            "can_confirm": request.user.has_perm(DELETE_PERMISSION)}


def _confirmation(request, run, jobs):
    """What the page of a run that plans first ("Run now" in delete mode) says: until when
    "Delete forever" may be pressed, or why not (answered, too old, the policy changed), and
    the jobs a confirmation started; None for every other run, and for one that failed or had
    nothing to confirm (outside the brake, nothing to delete)."""
    asked = (PolicyRun.Status.RUNNING, PolicyRun.Status.AWAITING, PolicyRun.Status.UNCONFIRMED)
    if not run.confirm_first or (run.status not in asked and run.answered_at is None):
        return None
    awaiting = run.status == PolicyRun.Status.AWAITING
    return {"awaiting": awaiting, "answered": run.answered_at is not None,
            "confirmed": run.answered_at is not None and not awaiting
            and run.status != PolicyRun.Status.UNCONFIRMED,
            "reason": runs.cannot_confirm_run(run) if run.status != PolicyRun.Status.RUNNING
            else None,
            "until": run.finished_at + timedelta(minutes=settings.DELETE_PREVIEW_MINUTES)
            if run.finished_at else None,
            "jobs": [job for job in jobs if job.pk in {
                entry.get("job") for entry in run.report.get("repositories", [])
                if not entry.get("brake")}],
            "can_confirm": request.user.has_perm(DELETE_PERMISSION)}


def _kind(run) -> str:
    """What the run deletes, in words: nothing (a report), nothing until a maintainer
    confirms, or each plan as a deletion job, and where the brake stopped one, whether that
    was confirmed too."""
    Status = PolicyRun.Status
    if run.dry_run:
        return "Report only: nothing is deleted"
    if run.status == Status.UNCONFIRMED:
        return "Delete once confirmed: not confirmed, so nothing was deleted"
    if run.confirm_first and run.answered_at is None:
        return ("Delete once confirmed: nothing is deleted until a maintainer confirms what "
                "it shows")
    how = "Delete, confirmed" if run.confirm_first else "Delete"
    if run.status == Status.FAILED:
        return f"{how}: the run failed; only the deletion jobs listed here started"
    if run.status == Status.RUNNING:
        return (f"{how}: each repository's plan becomes a deletion job, unless the brake "
                "stops it")
    totals = (run.report or {}).get("totals") or {}
    braked, going = totals.get("braked", 0), totals.get("going", 0)
    stopped = (f"the brake stopped {plural(braked, 'repository', 'repositories')}, "
               + ("whose plans became deletion jobs once a maintainer confirmed them"
                  if run.brake_confirmed_at else "where nothing was deleted"))
    if braked and not going:
        return f"{how}: {stopped}"
    jobs = f"{how}: each repository's plan with something to delete became a deletion job"
    return f"{jobs}; {stopped}" if braked else jobs


def _run_page(request, run, message=None, status=200):
    report = present_report(run.report) if run.report else None
    jobs = list(run.jobs.order_by("pk"))
    outcome = outcomes.with_outcomes([run])[0].outcome
    context = {"run": run, "report": report, "jobs": jobs, "brake": _brake(request, run, jobs),
               "kind": _kind(run), "deleted": deleted_text(outcome) if outcome else None,
               "confirmation": _confirmation(request, run, jobs),
               "finished": PolicyRun.Status(run.status).is_finished, "message": message}
    if request.htmx and request.htmx.target == "run-body":  # polled, or the brake confirmed
        return render(request, "policies/run.html#run-body", context, status=status)
    return render(request, "policies/run.html", context, status=status)


@require_GET
@login_required
def run_detail(request, run_id):
    return _run_page(request, get_run(run_id))


@require_POST
@login_required
def run_confirm_brake(request, run_id):
    """A maintainer confirms what the brake stopped (runs.confirm_brake, once): the run's page
    then lists the jobs it started; a run that cannot be confirmed is a message saying why."""
    run = get_run(run_id)
    require_delete_permission(request.user)
    try:
        runs.confirm_brake(run, request.user)
    except runs.CannotConfirm as exc:
        return _run_page(request, get_run(run_id), str(exc), status=409)
    if request.htmx:
        return _run_page(request, get_run(run_id))
    return redirect("policy-run", run.pk)


@require_POST
@login_required
def run_confirm(request, run_id):
    """"Delete forever": a maintainer confirms what a run that planned first showed
    (runs.confirm_run, once); the page then lists the jobs it started. A run that cannot be
    confirmed (answered already, too old, the policy changed) is a message saying why."""
    return _answer(request, run_id, runs.confirm_run)


@require_POST
@login_required
def run_cancel(request, run_id):
    """"Cancel": the run deletes nothing, ever (runs.cancel_run, once)."""
    return _answer(request, run_id, runs.cancel_run)


def _answer(request, run_id, answer):
    run = get_run(run_id)
    require_delete_permission(request.user)
    try:
        answer(run, request.user)
    except runs.CannotConfirm as exc:
        return _run_page(request, get_run(run_id), str(exc), status=409)
    if request.htmx:
        return _run_page(request, get_run(run_id))
    return redirect("policy-run", run.pk)


def _save(request, form):
    """Save through the audited write path; a name taken meanwhile is a field error."""
    try:
        return service.save_policy(form.save(commit=False), request.user)
    except IntegrityError:
        form.add_error("name", "A policy with this name exists.")
        return None


def _form_page(request, form, policy=None):
    """The form, its errors next to their fields (and listed at its top, linked), the first
    one focused; 200 either way, a mistake in the form is no error of the request. Saving
    with htmx swaps the form alone, so the live preview beside it stays as it was; a form
    posted without htmx previews its values again once loaded."""
    context = {"form": form, "policy": policy, "invalid": form.invalid_fields(),
               "preview_on_load": bool(policy or form.is_bound) and not request.htmx}
    if request.htmx:
        return render(request, "policies/form.html#policy-form", context)
    return render(request, "policies/form.html", context)


def _saved(request, policy):
    """The saved policy's page (htmx follows a redirect itself, so it is told to go)."""
    if request.htmx:
        return HttpResponseClientRedirect(reverse("policy", args=[policy.pk]))
    return redirect("policy", policy.pk)


@require_http_methods(["GET", "POST"])
@login_required
def policy_new(request):
    require_policy_change(request.user)
    form = PolicyForm(request.POST if request.method == "POST" else None)
    if form.is_valid() and (policy := _save(request, form)):
        return _saved(request, policy)
    return _form_page(request, form)


@require_http_methods(["GET", "POST"])
@login_required
def policy_edit(request, policy_id):
    policy = get_policy_to_change(request, policy_id)
    form = PolicyForm(request.POST if request.method == "POST" else None, instance=policy)
    if form.is_valid() and (saved := _save(request, form)):
        return _saved(request, saved)
    return _form_page(request, form, policy)


@require_POST
@login_required
def policy_preview(request):
    """What the settings being edited would remove now (counts and bytes per repository),
    without saving. While they are invalid, the errors: with htmx they replace only the
    preview's status line, so the figures of the last valid settings stay in view."""
    require_policy_change(request.user)
    form = PreviewForm(request.POST)
    if not form.is_valid():
        context = {"preview_form": form, "preview_errors": _labelled_errors(form)}
        if request.htmx:
            response = render(request, "policies/form.html#preview-status", context)
            return reswap(retarget(response, "#preview-status"), "outerHTML")
        return render(request, "policies/form.html#preview", context)
    return render(request, "policies/form.html#preview", {
        "report": present_report(runs.preview(form.instance, 0))})


def _labelled_errors(form) -> list:
    """[(field id or "", its label or "", its errors in words)] of an invalid form."""
    found = []
    for name, errors in form.errors.items():
        field = form[name] if name in form.fields else None
        found.append((field.id_for_label if field else "", field.label if field else "",
                      " ".join(errors)))
    return found


@require_http_methods(["GET", "POST"])
@login_required
def policy_delete(request, policy_id):
    """GET asks for confirmation; POST deletes (audited). Not while a run is running."""
    policy = get_policy_to_change(request, policy_id)
    if request.method == "POST":
        runs.fail_abandoned(policy)
        if policy.runs.filter(status=PolicyRun.Status.RUNNING).exists():
            return _policy_page(request, policy, f"Policy {policy.name} is running; delete it "
                                "once the run is finished.", status=409)
        service.delete_policy(policy, request.user)
        return redirect("policies")
    return render(request, "policies/delete.html", {"policy": policy})
