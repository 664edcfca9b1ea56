"""Preview and delete, the progress panel, and the jobs pages."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import Http404
from django.urls import reverse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from hubmgr.deletion import actions, control, reclaim
from hubmgr.deletion.graph import selection_digests
from hubmgr.deletion.models import DeletionJob, ItemStatus
from hubmgr.deletion.planner import ATTACHED, CHILD, SELECTED
from hubmgr.inventory.catalog import queries
from hubmgr.inventory.models import IndexChild, Manifest
from hubmgr.inventory.registries import default_registry
from hubmgr.units import counted, tag_order

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
    job = DeletionJob.objects.select_related("created_by", "cancelled_by").filter(
        pk=job_id).first()
    if job is None:
        raise Http404(f"There is no deletion job {job_id}.")
    return job


# The preview's choice to keep what is attached to the items that go (a checkbox).
KEEP_ATTACHED = "keep_attached"


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
    keep_attached = request.POST.get(KEEP_ATTACHED) == "1"
    found = actions.preview(repo, digests, request.user, keep_attached)
    selected, children = readable(repo, found.plan["items"])
    attached = readable_attached(repo, found.plan["items"], selected)
    orphaned, kept = _orphaned_and_kept(found.plan)
    return render(request, "deletion/preview.html", {
        "repo": repo, "preview": found, "plan": found.plan,
        "selected": selected, "children": children, "attached": attached,
        "orphaned": orphaned, "kept": kept,
        "going_text": counted(len(selected), len(children), len(attached)),
        "keep_attached": keep_attached, "keep_attached_name": KEEP_ATTACHED,
        "shown": SHOWN, "minus_shown": -SHOWN})


def _orphaned_and_kept(plan):
    """What stays attached to a going item (listed once, as orphaned, with why it stays, and
    what it is attached to), and the rest of what the plan keeps."""
    orphaned = _with_subjects(plan.get("orphaned", []), plan["items"])
    reasons = {k["digest"]: k["reason"] for k in plan["kept"]}
    for item in orphaned:
        item["kept_reason"] = reasons.get(item["digest"], "")
    listed = {item["digest"] for item in orphaned}
    return orphaned, [k for k in plan["kept"] if k["digest"] not in listed]


def readable(repo, items):
    """A plan's items in the order a person reads them (a plan's own order is the deletion
    order): the selected items by tag, then the children they take along, grouped under their
    index in the same order, by platform. Each shown item gets its platform; the first child
    under an index carries ``heading`` (that index). Returns (selected, children), new dicts."""
    selected = sorted((dict(i) for i in items if i["reason"] == SELECTED), key=tag_order)
    position = {item["digest"]: n for n, item in enumerate(selected)}
    children = [dict(i) for i in items if i["reason"] == CHILD]
    for child in children:  # listed under its first selected index (an index is never "")
        child["under"] = min(((position.get(p, len(position)), p) for p in child["parents"]),
                             default=(len(position), ""))
    children.sort(key=lambda c: (c["under"], c["digest"]))
    shown = selected[:SHOWN] + children[:SHOWN]
    platforms = _platforms(repo, [i["digest"] for i in shown])
    for item in shown:
        item["platform"] = platforms.get(item["digest"], "")
    children[:SHOWN] = sorted(children[:SHOWN], key=lambda c: (c["under"], c["platform"],
                                                               c["digest"]))
    by_digest = {i["digest"]: i for i in selected}
    last = None
    for child in children[:SHOWN]:
        index = child["under"][1]
        if index and index != last:
            child["heading"] = by_digest.get(index) or {"digest": index, "tags": []}
            last = index
    return selected, children


def readable_attached(repo, items, selected):
    """What a plan deletes because it is attached to a going item (a signature, a referrer,
    a referrers list...), in the order of those items (``selected``, as ``readable`` orders
    them, first), then by what it is. Each gets ``subject_item`` (what it is attached to) and,
    when shown, its platform. New dicts."""
    position = {item["digest"]: n for n, item in enumerate(selected)}
    attached = _with_subjects([i for i in items if i["reason"] == ATTACHED], items)
    attached.sort(key=lambda a: (position.get(a["subject"], len(position)), a["subject"],
                                 a.get("artifact", ""), a["digest"]))
    platforms = _platforms(repo, [i["digest"] for i in attached[:SHOWN]])
    for item in attached[:SHOWN]:
        item["platform"] = platforms.get(item["digest"], "")
    return attached


def _with_subjects(artifacts, items):
    """Copies of ``artifacts`` (plan items or orphaned entries), each with ``subject_item``:
    the going item it is attached to, as the plan lists it (its digest alone if not)."""
    going = {i["digest"]: i for i in items}
    return [{**a, "subject_item": going.get(a["subject"]) or {"digest": a["subject"], "tags": []}}
            for a in artifacts]


def _platforms(repo, digests):
    """{digest: platform} of the listed manifests: an image's platform (as its index lists
    it, when it is a child), an index's list of platforms."""
    found = dict(Manifest.objects.filter(repository=repo, digest__in=digests)
                 .values_list("digest", "platform"))
    for child, platform in IndexChild.objects.filter(
            child__repository=repo, child__digest__in=digests).exclude(platform="") \
            .values_list("child__digest", "platform"):
        found[child] = platform
    return found


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
                      {"job": job, "progress": actions.progress(job), "can_control": True})
    return trigger_client_event(response, "hubmgr:job-started", {"id": job.pk})


@require_GET
@login_required
def progress(request, job_id):
    job = get_job(job_id)
    data = actions.progress(job)
    response = render(request, "deletion/progress.html", {
        "job": job, "progress": data, "can_control": request.user.has_perm(DELETE_PERMISSION)})
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
    jobs = DeletionJob.objects.select_related("created_by").annotate(
        item_count=Count("items"),
        done_count=Count("items", filter=Q(items__status=ItemStatus.DONE)),
        skipped_count=Count("items", filter=Q(items__status=ItemStatus.SKIPPED)),
        failed_count=Count("items", filter=Q(items__status=ItemStatus.FAILED)),
        cancelled_count=Count("items", filter=Q(items__status=ItemStatus.CANCELLED)))[:200]
    return render(request, "deletion/jobs.html", {
        "jobs": jobs, "reclaim": reclaim.summary(default_registry())})


@require_GET
@login_required
def job_detail(request, job_id):
    return _job_page(request, get_job(job_id))


def _job_page(request, job, message=None, status=200):
    """The job's page, or (htmx) the part a control replaced: its body, or the progress
    panel when the panel asked."""
    context = {"job": job, "items": job.items.all(), "progress": actions.progress(job),
               "message": message,
               "can_control": request.user.has_perm(DELETE_PERMISSION),
               "can_cancel": control.cannot_cancel(job) is None,
               "can_retry": control.cannot_retry(job) is None}
    if request.htmx and request.htmx.target == f"job-{job.pk}":
        return render(request, "deletion/progress.html", context, status=status)
    if request.htmx and request.htmx.target == "job-body":
        return render(request, "deletion/job.html#job-body", context, status=status)
    return render(request, "deletion/job.html", context, status=status)


@require_POST
@login_required
def job_cancel(request, job_id):
    """Cancel a job (control.cancel, once): what waits is cancelled, a DELETE in flight ends
    as it ends. Cancelling one that cannot be is a message saying why (409)."""
    job = get_job(job_id)
    require_delete_permission(request.user)
    try:
        job = control.cancel(job, request.user)
    except control.Refused as exc:
        return _job_page(request, get_job(job_id), str(exc), status=exc.status)
    if not request.htmx:
        return redirect("job-detail", job.pk)
    return _job_page(request, job)


@require_POST
@login_required
def job_retry(request, job_id):
    """Retry a finished job's failed items as a new job (control.retry, once); its page
    follows. Retrying one that cannot be is a message saying why (409)."""
    job = get_job(job_id)
    require_delete_permission(request.user)
    try:
        new = control.retry(job, request.user)
    except control.Refused as exc:
        return _job_page(request, get_job(job_id), str(exc), status=exc.status)
    if request.htmx:
        return HttpResponseClientRedirect(reverse("job-detail", args=[new.pk]))
    return redirect("job-detail", new.pk)
