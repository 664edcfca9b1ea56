"""The pages: repositories, and each repository's Image Management table."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django.contrib.auth.decorators import login_required
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from hubmgr.deletion import actions
from hubmgr.deletion.models import DeletionJob
from hubmgr.inventory.catalog import listing, queries
from hubmgr.inventory.models import ORPHANED, ProcessedEvent
from hubmgr.inventory.registries import check_health, default_registry
from hubmgr.inventory.storage import snapshots

from .deletions import DELETE_PERMISSION
from .live import sync_context
from .lookups import get_manifest, get_repository
from .overview import with_shares
from .present import present, pull_ref, window, with_marks, with_protection

# The table's filters as the page names them, in the order of its "Filter by" menu; messages
# about a filter use these names too.
FILTER_LABELS = (("", "All"), ("tagged", "Tagged"), ("untagged", "Untagged"),
                 ("index", "Image index"), ("image", "Image"), ("artifact", "Artifact"),
                 (ORPHANED, "Orphaned artifact"), ("stale", "Stale"))


@require_GET
@login_required
def repositories(request):
    registry = default_registry()
    state = listing.ListState.from_params(request.GET)
    page = listing.page(registry, state)
    with_shares(page.rows, snapshots.for_repositories(registry, [r.pk for r in page.rows]))
    context = {"registry": registry, "page": page, "state": state}
    if request.htmx and request.htmx.target == "repo-table":
        return render(request, "inventory/repositories.html#repo-table", context)
    return render(request, "inventory/repositories.html", context | sync_context(
        request, registry) | {
        "registry_error": check_health(registry),
        "notify_help": notify_help(request, registry), "stale_days": settings.STALE_DAYS,
        "rejected_events": ProcessedEvent.objects.exclude(error="").filter(
            received_at__gte=timezone.now() - timedelta(days=7)).count(),
    })


@require_GET
@login_required
def repository(request, name):
    repo = get_repository(name)
    state = queries.TableState.from_params(request.GET)
    page = queries.page(repo, state)
    present(page.rows, repo.registry.pulls_observed_since, pull_ref(repo))
    with_marks(repo, page.rows)
    with_protection(repo, page.rows)
    context = {"repo": repo, "page": page, "state": state, "stale_days": settings.STALE_DAYS,
               "window": window(repo.registry.pulls_observed_since),
               "children_url": _children_url(repo),
               "can_delete": request.user.has_perm(DELETE_PERMISSION),
               "filters": FILTER_LABELS, "filter_label": dict(FILTER_LABELS)[state.filter],
               "page_sizes": sorted({*queries.PAGE_SIZES, state.page_size}),
               "default_page_size": queries.DEFAULT_PAGE_SIZE}
    if request.htmx and request.htmx.target == "image-table":
        return render(request, "inventory/repository.html#image-table", context)
    context["registry_error"] = check_health(repo.registry)
    context["notify_help"] = notify_help(request, repo.registry)
    context["active_jobs"] = active_jobs(repo)
    context |= sync_context(request, repo.registry, repo.name)
    return render(request, "inventory/repository.html", context)


@require_GET
@login_required
def index_children(request, name, digest):
    """What an item lists below it (an index's images, at every level) and the artifacts
    attached to them (queries.below)."""
    repo = get_repository(name)
    item = get_manifest(repo, digest)
    since = repo.registry.pulls_observed_since
    children = present(queries.below(repo, item), since, pull_ref(repo))
    with_protection(repo, children, below=item)
    return render(request, "inventory/repository.html#children", {
        "repo": repo, "item": item, "children": children,
        "stale_days": settings.STALE_DAYS, "window": window(since),
        "can_delete": request.user.has_perm(DELETE_PERMISSION),
        "wide": request.GET.get("wide") == "1"})  # (the registry-wide table's extra column)


def notify_help(request, registry):
    """For the banner of a registry that has sent no notification yet: the endpoint to add to
    its config. The token is shown to maintainers only (it lets its holder post events)."""
    if registry.notified_since is not None or not registry.url:
        return None
    maintainer = request.user.has_perm(DELETE_PERMISSION)
    return {"url": request.build_absolute_uri(reverse("registry-hook")),
            "token": settings.WEBHOOK_TOKEN if maintainer else "",
            "token_set": bool(settings.WEBHOOK_TOKEN)}


def active_jobs(repo):
    """Unfinished deletion jobs of this repository, each with its progress, for the panel."""
    jobs = list(DeletionJob.objects.filter(repository=repo).unfinished()[:5])
    for job in jobs:
        job.progress = actions.progress(job)
    return jobs


def _children_url(repo):
    """The children URL up to the digest, reversed once per page rather than once per row."""
    marker = "sha256:0"
    return reverse("index-children", args=[repo.name, marker])[:-len(marker)]


def bad_request(request, exception):
    """Django's 400 (a body over the size limit, a bad Host header, ...) as a page that says
    what went wrong; htmx shows its alert as a toast."""
    if isinstance(exception, (RequestDataTooBig, TooManyFieldsSent)):
        message = ("The request is larger than hubmgr accepts. Select fewer items, or use the "
                   "API or the delete command for very large deletions.")
    else:
        message = "hubmgr could not read this request."
    return render(request, "400.html", {"message": message}, status=400)
