"""The registry-wide table (/images): every repository's items in one table, their filters,
and a selection across repositories previewed and deleted at once (a job per repository)."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import Sum
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from hubmgr.deletion import actions, across
from hubmgr.deletion.protection import Protection
from hubmgr.inventory.catalog import queries, wide
from hubmgr.inventory.models import Repository
from hubmgr.inventory.registries import default_registry
from hubmgr.registry import names
from hubmgr.units import counted

from .deletions import (
    DELETE_PERMISSION, KEEP_ATTACHED, MAX_SELECTION, NOTHING, TOO_MANY, readable,
    readable_attached, require_delete_permission)
from .live import versioned
from .present import present, pull_ref, window, with_marks, with_protection
from .views import FILTER_LABELS

KIND_LABELS = (("", "Any kind"), ("index", "Image index"), ("image", "Image"),
               ("artifact", "Artifact"))
TAGGED_LABELS = (("", "Tagged or not"), ("tagged", "Tagged"), ("untagged", "Untagged"))
STATUS_LABELS = (("", "Any status"), ("stale", "Stale"), ("active", "Active"),
                 ("unknown", "No pull data"))


def parse_refs(values, limit=MAX_SELECTION + 1) -> list[tuple[str, str]]:
    """(repository, digest) of the ``repository@digest`` references posted; others are
    dropped (a page only posts what it showed)."""
    refs = []
    for value in values[:limit]:
        name, _, digest = str(value).rpartition("@")
        if names.valid_name(name) and names.valid_digest(digest):
            refs.append((name, digest))
    return list(dict.fromkeys(refs))


def rows_for_page(registry, rows, protection=None):
    """Display strings, marks and protection of a page's rows from several repositories."""
    since = registry.pulls_observed_since
    repos = Repository.objects.select_related("registry").in_bulk(
        {row.repository_id for row in rows})
    protection = Protection.current() if protection is None else protection
    by_repo = {}
    for row in rows:
        by_repo.setdefault(row.repository_id, []).append(row)
    for repo_id, group in by_repo.items():
        repo = repos[repo_id]
        present(group, since, pull_ref(repo))
        with_protection(repo, group, protection=protection)
        base = reverse("index-children", args=[repo.name, "sha256:0"])[:-len("sha256:0")]
        for row in group:
            row.select_value = f"{repo.name}@{row.digest}"
            row.children_url = base
    with_marks(None, rows)
    return rows


@require_GET
@login_required
def images(request):
    registry = default_registry()
    state = wide.WideState.from_params(request.GET)
    page = wide.page(registry, state)
    rows_for_page(registry, page.rows)
    context = {"registry": registry, "page": page, "state": state, "wide": True,
               "stale_days": settings.STALE_DAYS,
               "window": window(registry.pulls_observed_since),
               "can_delete": request.user.has_perm(DELETE_PERMISSION),
               "filters": FILTER_LABELS, "kinds": KIND_LABELS, "taggeds": TAGGED_LABELS,
               "statuses": STATUS_LABELS, "params": state.params(),
               "version": _version(registry),
               "page_sizes": sorted({*queries.PAGE_SIZES, state.page_size}),
               "default_page_size": queries.DEFAULT_PAGE_SIZE}
    status = 400 if state.problems else 200
    if request.htmx and request.htmx.target == "image-table":
        return render(request, "inventory/images.html#image-table", context, status=status)
    return render(request, "inventory/images.html", context, status=status)


def _version(registry) -> int:
    """Moves whenever any repository's version moves (each only grows)."""
    return Repository.objects.filter(registry=registry).aggregate(v=Sum("version"))["v"] or 0


@require_GET
@login_required
def version(request):
    return versioned(request, _version(default_registry()))


@require_POST
@login_required
def selection(request):
    """Which of the POSTed ``repository@digest`` references the inventory no longer holds."""
    refs = parse_refs(request.POST.getlist("digest"))
    held = set()
    by_name = {}
    for name, digest in refs:
        by_name.setdefault(name, []).append(digest)
    repos = dict(Repository.objects.filter(registry=default_registry(), name__in=list(by_name))
                 .values_list("name", "id"))
    for name, digests in by_name.items():
        if name in repos:
            held |= {(name, d) for d in Repository(pk=repos[name]).manifests.filter(
                digest__in=digests).values_list("digest", flat=True)}
    return JsonResponse({"gone": [f"{n}@{d}" for n, d in refs if (n, d) not in held]})


def selected_refs(registry, data) -> list[tuple[str, str]]:
    """What a POSTed selection names: ``repository@digest`` references, or (all_matching=1)
    every item the posted search and filters match, at most MAX_SELECTION + 1."""
    if data.get("all_matching") == "1":
        state = wide.WideState.from_params(data)
        return wide.selection(registry, state, MAX_SELECTION)
    return parse_refs(data.getlist("digest"))


def _refuse(request, message, status=400):
    return render(request, "deletion/preview_across.html", {"message": message},
                  status=status)


@require_POST
@login_required
def preview(request):
    require_delete_permission(request.user)
    registry = default_registry()
    refs = selected_refs(registry, request.POST)
    if len(refs) > MAX_SELECTION:
        return _refuse(request, TOO_MANY)
    if not refs:
        return _refuse(request, NOTHING, status=200)
    keep_attached = request.POST.get(KEEP_ATTACHED) == "1"
    found = across.preview(registry, refs, request.user, keep_attached)
    plans = []
    for p in found.previews:
        selected, children = readable(p.repository, p.plan["items"])
        attached = readable_attached(p.repository, p.plan["items"], selected)
        plans.append({"preview": p, "repo": p.repository, "plan": p.plan,
                      "selected": selected, "children": children, "attached": attached,
                      "going_text": counted(len(selected), len(children), len(attached))})
    going = [p for p in plans if p["selected"] or p["children"]]
    return render(request, "deletion/preview_across.html", {
        "plans": plans, "going": going, "reclaim_bytes": found.reclaim_bytes,
        "expires_at": found.previews[0].expires_at if found.previews else None,
        "going_text": counted(sum(len(p["selected"]) for p in plans),
                              sum(len(p["children"]) for p in plans),
                              sum(len(p["attached"]) for p in plans)),
        "shown": 50})


@require_POST
@login_required
def delete(request):
    """Delete forever: the previews the user confirmed, a job each, all or none."""
    require_delete_permission(request.user)
    ids = request.POST.getlist("preview_id")[:MAX_SELECTION]
    if not ids:
        return _refuse(request, "Preview the selection first: “Delete forever” runs the "
                                "preview you saw.")
    try:
        jobs = across.confirm(default_registry(), ids, request.user)
    except actions.PreviewGone as exc:
        return _refuse(request, str(exc), status=exc.status)
    except Http404 as exc:
        return _refuse(request, str(exc), status=404)
    response = render(request, "deletion/progress_many.html", {
        "jobs": [(job, actions.progress(job)) for job in jobs], "can_control": True})
    return trigger_client_event(response, "hubmgr:job-started", {"ids": [j.pk for j in jobs]})
