"""JSON API for cleanup policies: list, create, read, change (PATCH), delete; a dry run; runs
on the workers and their reports. Auth and errors as in api.py; viewers may list, read and
dry-run (which records and deletes nothing); changing or running a policy takes the delete
permission. Every change goes through hubmgr.policies.service, so it is audited with the
requesting user."""

from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import IntegrityError
from django.db.models import Prefetch
from django.http import HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from hubmgr.deletion.models import DeletionJob
from hubmgr.policies import outcomes, reports, runs, service, tasks
from hubmgr.policies.models import MAX_DAYS, CleanupPolicy, Mode, PolicyRun, Schedule
from hubmgr.patterns import MAX_GLOB_TEXT, MAX_REGEX_LENGTH

from .api import ApiError, json_body, iso_time, api_auth
from .deletions import require_delete_permission
from .policy_forms import require_policy_change
from .lookups import get_policy, get_run
from .schema import MAX_INT, Boolean, Choice, Integer, Number, Schema, Text, TimeOfDay

# The settings a request may send; the rest (id, times, who) is bookkeeping.
EDITABLE = tuple(service.as_data(CleanupPolicy()))
# The body of a POST or PATCH of a policy: every field in EDITABLE, typed as the model stores it
# and bounded as both databases can (null clears an optional setting; include and exclude may
# be a list, one glob an item). The model's full_clean then checks globs, RE2 and the rules.
POLICY = Schema({
    "name": Text(CleanupPolicy._meta.get_field("name").max_length),
    "include": Text(MAX_GLOB_TEXT, null=True, lines=True),
    "exclude": Text(MAX_GLOB_TEXT, null=True, lines=True),
    "schedule": Choice(tuple(Schedule.values)),
    "run_at": TimeOfDay(),
    "weekday": Integer(0, 6),
    "mode": Choice(tuple(Mode.values)),
    "remove_tag_regex": Text(MAX_REGEX_LENGTH, null=True),
    "remove_tag_days": Integer(0, MAX_DAYS),
    "remove_untagged_days": Integer(0, MAX_DAYS),
    "remove_stale": Boolean(),
    "remove_orphans_days": Integer(0, MAX_DAYS),
    "keep_last": Integer(0, MAX_INT),
    "keep_tag_regex": Text(MAX_REGEX_LENGTH, null=True),
    "keep_pulled_days": Integer(0, MAX_DAYS),
    "brake_share": Number(0.0, 1.0),
    "brake_count": Integer(0, MAX_INT),
})
EMPTY = Schema()  # a dry run, confirming the brake
RUN = Schema({"dry_run": Boolean()})
# Run history and audit history, a page at a time.
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def _user(user):
    return user.username if user else None


def policy_json(policy, last_run=None) -> dict:
    return {"id": policy.pk, "url": reverse("api-policy", args=[policy.pk]),
            **service.as_data(policy),
            "created_at": iso_time(policy.created_at), "created_by": _user(policy.created_by),
            "updated_at": iso_time(policy.updated_at), "updated_by": _user(policy.updated_by),
            "last_run": last_run}


def _last_runs(policy_ids) -> dict:
    """{policy id: its newest run's id, status, times, reclaim and what its jobs deleted},
    in five queries."""
    found = runs.last_runs(policy_ids)
    outcomes.with_outcomes(found.values())
    return {policy_id: {
        "id": run.pk, "url": reverse("api-policy-run", args=[run.pk]),
        "status": run.status, "dry_run": run.dry_run,
        "started_at": iso_time(run.started_at), "finished_at": iso_time(run.finished_at),
        "reclaim_bytes": run.reclaim_bytes, "deleted": deleted_json(run.outcome)}
        for policy_id, run in found.items()}


def deleted_json(outcome) -> dict | None:
    """What a run's deletion jobs deleted and freed (an outcomes.JobsOutcome), or None when
    it started none."""
    if outcome is None:
        return None
    return {"jobs": outcome.jobs, "unfinished_jobs": outcome.unfinished,
            "items": outcome.items, "children": outcome.children,
            "attached": outcome.attached, "freed_bytes": outcome.freed_bytes,
            "planned_bytes": outcome.planned_bytes}


def _apply(policy, body):
    """Set the fields ``body`` sends (checked by POLICY)."""
    for name, value in body.items():
        setattr(policy, name, value)


def _save(policy, user):
    try:
        return service.save_policy(policy, user)
    except IntegrityError:  # another request saved the same name first
        raise ApiError(f'"name": a policy named {policy.name!r} exists', 409) from None
    except ValidationError as exc:
        raise ApiError.invalid(exc) from None


@require_http_methods(["GET", "POST"])
@api_auth
def policies(request):
    """GET: every policy with its last run. POST: create one (report mode unless "mode" says
    otherwise); 201 with the policy."""
    if request.method == "POST":
        require_policy_change(request.user)
        policy = CleanupPolicy()
        _apply(policy, json_body(request, POLICY))
        _save(policy, request.user)
        return JsonResponse(policy_json(policy), status=201)
    found = list(CleanupPolicy.objects.select_related("created_by", "updated_by"))
    last = _last_runs([p.pk for p in found])
    return JsonResponse({"count": len(found),
                         "results": [policy_json(p, last.get(p.pk)) for p in found]})


@require_http_methods(["GET", "PATCH", "DELETE"])
@api_auth
def policy(request, policy_id):
    """GET: the policy. PATCH: change the fields sent. DELETE: 204."""
    policy = get_policy(policy_id)
    if request.method == "PATCH":
        require_policy_change(request.user)
        _apply(policy, json_body(request, POLICY))
        _save(policy, request.user)
    elif request.method == "DELETE":
        require_policy_change(request.user)
        runs.fail_abandoned(policy)
        if policy.runs.filter(status=PolicyRun.Status.RUNNING).exists():
            raise ApiError(f"Policy {policy.name} is running; delete it once the run is "
                           "finished.", 409)
        service.delete_policy(policy, request.user)
        return HttpResponse(status=204)
    return JsonResponse(policy_json(policy, _last_runs([policy.pk]).get(policy.pk)))


@require_http_methods(["POST"])
@api_auth
def dry_run(request, policy_id):
    """What the policy would remove now; nothing is recorded or deleted, so whoever may read
    the policy may ask."""
    policy = get_policy(policy_id)
    json_body(request, EMPTY)  # a malformed body is refused, as everywhere
    return JsonResponse(reports.bounded(runs.preview(policy, reports.MAX_LISTED_ITEMS)))


def _page(request, qs):
    """The page of ``qs`` that ?page= asks for, ?page_size= rows (at most MAX_PAGE_SIZE); a
    page that is not a number is the first, one past the end the last."""
    try:
        size = int(request.GET.get("page_size") or DEFAULT_PAGE_SIZE)
    except ValueError:
        size = DEFAULT_PAGE_SIZE
    size = min(max(size, 1), MAX_PAGE_SIZE)
    return Paginator(qs, size).get_page(request.GET.get("page"))


def _paged(request, page, results) -> dict:
    def link(number):
        params = request.GET.copy()
        params["page"] = number
        return f"{request.path}?{params.urlencode()}"

    return {"count": page.paginator.count, "page": page.number,
            "pages": page.paginator.num_pages,
            "next": link(page.next_page_number()) if page.has_next() else None,
            "previous": link(page.previous_page_number()) if page.has_previous() else None,
            "results": results}


def run_summary_json(run) -> dict:
    """A run as the history lists it (loaded with runs.with_totals): its report's totals,
    never its item lists."""
    totals = run.totals or None
    return {"id": run.pk, "url": reverse("api-policy-run", args=[run.pk]),
            "status": run.status, "finished": PolicyRun.Status(run.status).is_finished,
            "mode": "report" if run.dry_run else "delete", "dry_run": run.dry_run,
            "scheduled": run.scheduled, "started_by": _user(run.started_by),
            "started_at": iso_time(run.started_at), "finished_at": iso_time(run.finished_at),
            "error": run.error or None, "totals": totals,
            "braked_repositories": totals["braked"] if totals else 0,
            "brake_confirmed_at": iso_time(run.brake_confirmed_at),
            "brake_confirmed_by": _user(run.brake_confirmed_by), **_answer_json(run),
            "jobs": [job.pk for job in run.jobs.all()]}


def _answer_json(run) -> dict:
    """Whether the run waited for a confirmation (Run now on the page in delete mode), and
    who answered it when: Delete forever (then done or braked) or Cancel (unconfirmed)."""
    return {"confirm_first": run.confirm_first, "answered_at": iso_time(run.answered_at),
            "answered_by": _user(run.answered_by)}


@require_http_methods(["GET", "POST"])
@api_auth
def policy_runs(request, policy_id):
    """GET: the policy's runs, newest first, a page at a time. POST: start one."""
    policy = get_policy(policy_id)
    if request.method == "POST":
        return _start_run(request, policy)
    history = runs.with_totals(policy.runs.select_related("started_by", "brake_confirmed_by",
                                                          "answered_by")
                               .prefetch_related(Prefetch("jobs", DeletionJob.objects.only(
                                   "id").order_by("id"))))
    page = _page(request, history)
    return JsonResponse(_paged(request, page, [run_summary_json(r) for r in page]))


def _start_run(request, policy):
    """Start a run on the workers: 202 with its id and status URL; 409 while one runs. It
    deletes when the policy is in delete mode, unless {"dry_run": true}."""
    require_policy_change(request.user)
    body = json_body(request, RUN)
    try:
        run = tasks.start_run(policy, request.user, delete=not body.get("dry_run", False))
    except runs.AlreadyRunning as exc:
        raise ApiError(str(exc), 409) from None
    except tasks.QueueUnavailable as exc:
        raise ApiError(str(exc), 503) from None
    return JsonResponse({"id": run.pk, "status": run.status, "dry_run": run.dry_run,
                         "status_url": reverse("api-policy-run", args=[run.pk])}, status=202)


def audit_json(entry) -> dict:
    return {"id": entry.pk, "at": iso_time(entry.at), "user": _user(entry.user),
            "action": entry.action, "before": entry.before, "after": entry.after,
            "changes": [{"field": name, "before": before, "after": after}
                        for name, before, after in service.changes(entry.before, entry.after)]}


@require_http_methods(["GET"])
@api_auth
def policy_audit(request, policy_id):
    """The policy's audited changes, newest first, a page at a time: who, when, the action,
    the settings before and after, and the fields that changed."""
    policy = get_policy(policy_id)
    page = _page(request, policy.audit.select_related("user"))
    return JsonResponse(_paged(request, page, [audit_json(e) for e in page]))


@require_http_methods(["POST"])
@api_auth
def confirm_brake(request, run_id):
    """Delete what the brake stopped in a run (runs.confirm_brake): 202 with the jobs it
    started; 409 with the reason when the run cannot be confirmed (once only)."""
    run = get_run(run_id)
    require_delete_permission(request.user)
    json_body(request, EMPTY)
    try:
        job_ids = runs.confirm_brake(run, request.user)
    except runs.CannotConfirm as exc:
        raise ApiError(str(exc), 409) from None
    return JsonResponse({"id": run.pk, "status_url": reverse("api-policy-run", args=[run.pk]),
                         "jobs": [{"id": pk, "status_url": reverse("api-deletion", args=[pk])}
                                  for pk in job_ids]}, status=202)


@require_http_methods(["GET"])
@api_auth
def run_status(request, run_id):
    run = get_run(run_id)
    jobs = list(run.jobs.values_list("pk", "status"))
    return JsonResponse({
        "id": run.pk, "policy": {"id": run.policy_id, "name": run.policy.name,
                                 "url": reverse("api-policy", args=[run.policy_id])},
        "status": run.status, "finished": PolicyRun.Status(run.status).is_finished,
        "dry_run": run.dry_run, "scheduled": run.scheduled,
        "started_by": _user(run.started_by), "started_at": iso_time(run.started_at),
        "finished_at": iso_time(run.finished_at), "error": run.error or None,
        "brake_confirmed_at": iso_time(run.brake_confirmed_at),
        "brake_confirmed_by": _user(run.brake_confirmed_by), **_answer_json(run),
        "jobs": [{"id": pk, "status": status, "status_url": reverse("api-deletion", args=[pk])}
                 for pk, status in jobs],
        "deleted": deleted_json(outcomes.with_outcomes([run])[0].outcome),
        "report": reports.bounded(run.report) if run.report else None,
    })
