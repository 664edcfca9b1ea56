"""A page that stays current: the version an open table polls, what became of its selection,
and "Sync now" with its progress panel."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotModified, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import parse_etags
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import trigger_client_event

from hubmgr.inventory import tasks
from hubmgr.inventory.models import RepositorySync, SyncRun
from hubmgr.inventory.registries import default_registry
from hubmgr.registry.errors import RegistryError
from hubmgr.registry.names import valid_digest

from .deletions import DELETE_PERMISSION, MAX_SELECTION
from .lookups import get_repository, get_version

SYNC_PERMISSION = DELETE_PERMISSION  # the maintainers: whoever may delete may also sync
PROBLEMS_SHOWN = 20
RECENT_RUNS = 20  # where a repository page looks for its last sync
DIGEST_CHUNK = 500


@require_GET
@login_required
def version(request, name):
    """The repository's version as an ETag; 304 while it is the one the page shows."""
    return versioned(request, get_version(name))


def versioned(request, current):
    """A table's version ``current`` for its poll: JSON with the version as its ETag, or 304
    while it is the one the page shows."""
    etag = f'"{current}"'
    if etag in parse_etags(request.headers.get("If-None-Match", "")):
        response = HttpResponseNotModified()
    else:
        response = JsonResponse({"version": current})
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"
    return response


@require_POST
@login_required
def selection(request, name):
    """Which of the POSTed digests (a page's selection) the repository no longer holds."""
    repo = get_repository(name)
    digests = [d for d in request.POST.getlist("digest")[:MAX_SELECTION] if valid_digest(d)]
    held = set()
    for start in range(0, len(digests), DIGEST_CHUNK):
        held |= set(repo.manifests.filter(digest__in=digests[start:start + DIGEST_CHUNK])
                    .values_list("digest", flat=True))
    return JsonResponse({"gone": [d for d in digests if d not in held]})


@require_http_methods(["GET", "POST"])
@login_required
def repository_sync(request, name):
    """GET: the repository's sync panel (the running sync, or the last one). POST: Sync now."""
    repo = get_repository(name)
    return _panel(request, repo.registry, repo.name)


@require_http_methods(["GET", "POST"])
@login_required
def catalog_sync(request):
    """The same for the whole catalog (the repositories page)."""
    return _panel(request, default_registry(), None)


def _panel(request, registry, name):
    message = ""
    if request.method == "POST":
        if not request.user.has_perm(SYNC_PERMISSION):
            raise PermissionDenied("You may browse this registry but not start a sync. Ask an "
                                   "administrator to add you to the maintainers group.")
        try:
            run, started = tasks.sync_now(registry, name)
            if not started:
                message = "A sync is already running; here is its progress."
        except RegistryError as exc:
            message = f"The sync could not start: {exc}"
        except tasks.QueueUnavailable:
            message = ("The sync could not start: the task queue (Redis) is not answering. "
                       "Try again in a minute; the periodic sync runs once it is back.")
    context = sync_context(request, registry, name)
    context["sync_message"] = message
    response = render(request, "inventory/_sync.html", context)
    watched = request.GET.get("watching", "")
    run = context["sync_run"]
    if run is not None and run.finished_at and watched == str(run.pk):
        trigger_client_event(response, "hubmgr:synced", {"run": run.pk})
    return response


def sync_context(request, registry, name=None) -> dict:
    """What the sync panel shows: the run going on (or the last one) for the whole catalog or
    one repository, its problems (for a repository, only those about it), and the button."""
    run = tasks.running_sync(registry, name)
    if run is None:
        if name is None:
            run = SyncRun.objects.filter(registry=registry, whole_catalog=True) \
                .order_by("-pk").first()
        else:
            # Among the last few runs only: one index probe each, however many runs are kept.
            recent = SyncRun.objects.filter(registry=registry).order_by("-pk") \
                .values("pk")[:RECENT_RUNS]
            last = RepositorySync.objects.filter(run_id__in=[r["pk"] for r in recent], name=name) \
                .order_by("-run_id").select_related("run").first()
            run = last.run if last else None
    problems = list(run.problems) if run is not None else []
    if name is not None:
        problems = [p for p in problems if p["reference"] == name
                    or p["reference"].startswith((f"{name}:", f"{name}@"))]
    url = reverse("repository-sync", args=[name]) if name else reverse("catalog-sync")
    return {"sync_run": run, "sync_url": url, "sync_scope": name,
            "sync_total": run.repositories + run.remaining if run else 0,
            "sync_problems": problems[:PROBLEMS_SHOWN],
            "sync_more_problems": max(len(problems) - PROBLEMS_SHOWN, 0),
            "can_sync": request.user.has_perm(SYNC_PERMISSION)}

