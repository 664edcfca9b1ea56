"""Preview and delete, the progress panel, and the jobs pages."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from hubmgr.deletion import actions, reclaim
from hubmgr.deletion.graph import selection_digests
from hubmgr.deletion.models import DeletionJob
from hubmgr.deletion.planner import CHILD, SELECTED
from hubmgr.inventory import queries
from hubmgr.inventory.registries import default_registry

from .lookups import get_repository

DELETE_PERMISSION = "deletion.delete_images"
MAX_SELECTION = 50_000
TOO_MANY = (f"At most {MAX_SELECTION:,} items can be deleted at once. Narrow the search or "
            "the filter, or use the `delete` command.")
NOTHING = "Nothing is selected. Select items in the table first."


def require_delete_permission(user):
    if not user.has_perm(DELETE_PERMISSION):
        raise PermissionDenied("You may browse this registry but not delete from it. Ask an "
                               "administrator to add you to the maintainers group.")


def get_job(job_id) -> DeletionJob:
    job = DeletionJob.objects.select_related("created_by").filter(pk=job_id).first()
    if job is None:
        raise Http404(f"There is no deletion job {job_id}.")
    return job


def _selection(request, name):
    """The repository and the digests a POSTed selection names, for a user who may delete."""
    repo = get_repository(name)
    require_delete_permission(request.user)
    data = request.POST
    state = queries.TableState.from_params(data)
    return repo, selection_digests(repo, data.getlist("digest"),
                                   data.get("all_matching") == "1", state.search, state.filter)


def _refuse(request, repo, message, status=400):
    """The modal with a message instead of a plan; nothing is deleted."""
    return render(request, "deletion/preview.html", {"repo": repo, "plan": None,
                                                      "message": message}, status=status)


def _too_many(digests):
    return len(digests) > MAX_SELECTION


SHOWN = 500  # items listed per group in the modal; the rest are counted


@require_POST
@login_required
def preview(request, name):
    repo, digests = _selection(request, name)
    if _too_many(digests):
        return _refuse(request, repo, TOO_MANY)
    if not digests:
        return _refuse(request, repo, NOTHING, status=200)
    found = actions.preview(repo, digests, request.user)
    items = found.plan["items"]
    return render(request, "deletion/preview.html", {
        "repo": repo, "preview": found, "plan": found.plan,
        "selected": [i for i in items if i["reason"] == SELECTED],
        "children": [i for i in items if i["reason"] == CHILD],
        "kept": found.plan["kept"], "shown": SHOWN, "minus_shown": -SHOWN})


@require_POST
@login_required
def delete(request, name):
    """Delete forever: run the preview the user confirmed, exactly as it was shown."""
    repo = get_repository(name)
    require_delete_permission(request.user)
    preview_id = request.POST.get("preview_id", "")
    if not preview_id:
        return _refuse(request, repo, "Preview the selection first: “Delete forever” runs the "
                                      "preview you saw.")
    try:
        job = actions.confirm(repo, preview_id, request.user)
    except actions.PreviewGone as exc:
        return _refuse(request, repo, str(exc), status=exc.status)
    response = render(request, "deletion/progress.html",
                      {"job": job, "progress": actions.progress(job)})
    return trigger_client_event(response, "hubmgr:job-started", {"id": job.pk})


@require_GET
@login_required
def progress(request, job_id):
    job = get_job(job_id)
    data = actions.progress(job)
    response = render(request, "deletion/progress.html", {"job": job, "progress": data})
    try:
        seen = int(request.GET.get("seen", "0"))
    except ValueError:
        seen = 0
    if data["done"] != seen:
        trigger_client_event(response, "hubmgr:deleted", {"done": data["done"]})
    return response


@require_GET
@login_required
def job_list(request):
    jobs = DeletionJob.objects.select_related("created_by")[:200]
    return render(request, "deletion/jobs.html", {
        "jobs": jobs, "reclaim": reclaim.summary(default_registry())})


@require_GET
@login_required
def job_detail(request, job_id):
    job = get_job(job_id)
    return render(request, "deletion/job.html", {"job": job, "items": job.items.all(),
                                                 "progress": actions.progress(job)})
