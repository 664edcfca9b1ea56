"""Preview and delete, the progress panel, and the jobs pages."""

import re

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from hubmgr.deletion import actions
from hubmgr.deletion.graph import selection_digests
from hubmgr.deletion.models import DeletionJob
from hubmgr.deletion.planner import CHILD, SELECTED
from hubmgr.inventory import queries

from .lookups import get_repository

DELETE_PERMISSION = "deletion.delete_images"
DIGEST = re.compile(r"sha256:[0-9a-zA-Z=_-]{1,128}")
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
    digests = [d for d in data.getlist("digest") if DIGEST.fullmatch(d)]
    return repo, selection_digests(repo, digests,
                                   data.get("all_matching") == "1", state.search, state.filter)


def _refuse(request, repo, message):
    """The modal with a message instead of a plan; nothing is deleted."""
    return render(request, "deletion/preview.html", {"repo": repo, "plan": None,
                                                      "message": message}, status=400)


def _too_many(digests):
    return len(digests) > MAX_SELECTION


@require_POST
@login_required
def preview(request, name):
    repo, digests = _selection(request, name)
    if _too_many(digests):
        return _refuse(request, repo, TOO_MANY)
    plan = actions.make_plan(repo, digests) if digests else None
    context = {"repo": repo, "plan": plan}
    if plan:
        context.update(
            selected=[n for n, r in plan.items if r == SELECTED],
            children=[n for n, r in plan.items if r == CHILD],
            kept=[{"digest": key[1], "reason": reason} for key, reason in plan.kept],
            digests=digests)
    return render(request, "deletion/preview.html", context)


@require_POST
@login_required
def delete(request, name):
    repo, digests = _selection(request, name)
    if not digests or _too_many(digests):
        return _refuse(request, repo, TOO_MANY if digests else NOTHING)
    job = actions.start(repo, digests, request.user)
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
    return render(request, "deletion/jobs.html", {"jobs": jobs})


@require_GET
@login_required
def job_detail(request, job_id):
    job = get_job(job_id)
    return render(request, "deletion/job.html", {"job": job, "items": job.items.all(),
                                                 "progress": actions.progress(job)})
