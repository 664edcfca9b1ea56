"""The registry overview (the landing page) and each repository's storage page: the latest
storage snapshot (hubmgr.inventory.storage.snapshots), a few live figures that cost one small query
each, and charts of the daily snapshots. Each figure says which it is (Live, or Snapshot with its
time), and the pages say when the inventory changed after the snapshot was computed."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Sum
from django.shortcuts import render
from django.utils import timezone
from django.utils.formats import date_format
from django.views.decorators.http import require_GET

from hubmgr.deletion import reclaim
from hubmgr.inventory.models import Repository
from hubmgr.inventory.pulls.coverage import Coverage
from hubmgr.inventory.registries import default_registry
from hubmgr.inventory.storage import snapshots
from hubmgr.policies.models import CleanupPolicy
from hubmgr.units import human_size

from . import charts
from .lookups import get_repository
from .present import window, with_last_run

PERIODS = (30, 90, 365)  # days a chart may show
DEFAULT_PERIOD = 90
BIGGEST = 10
STORAGE = [charts.Series("bytes", "Stored", "s1"),
           charts.Series("untagged_bytes", "Untagged only", "s2"),
           charts.Series("stale_bytes", "Stale only", "s3")]
ITEMS = [charts.Series("items", "Items", "s1"),
         charts.Series("untagged_items", "Untagged", "s2"),
         charts.Series("stale_items", "Stale", "s3")]


def _period(params):
    try:
        days = int(params.get("days") or DEFAULT_PERIOD)
    except (TypeError, ValueError):
        return DEFAULT_PERIOD
    return days if days in PERIODS else DEFAULT_PERIOD


def _count(value):
    return f"{value:,.0f}"


def chart_context(prefix, title, rows):
    """The two charts (storage, items) of these daily rows, with their legends."""
    return {
        "storage_chart": charts.line_chart(f"{prefix}-storage", f"{title}: storage by day",
                                           rows, STORAGE, human_size),
        "items_chart": charts.line_chart(f"{prefix}-items", f"{title}: items by day", rows,
                                         ITEMS, _count, integer=True),
        "storage_legend": charts.legend(STORAGE), "items_legend": charts.legend(ITEMS),
        "rows": rows[::-1],  # the tables: newest first
    }


def share(part, whole):
    """A share in whole per cent as text ("<1" and ">99" near the ends), or None when there is
    nothing to share."""
    if part is None or not whole:
        return None
    percent = 100 * part / whole
    if 0 < percent < 1:
        return "<1"
    if 99 < percent < 100:
        return ">99"
    return str(round(percent))


def snapshot_context(registry, latest, now=None):
    """What the pages say of the snapshot: its time ("14:05", with the day when it is not
    today's), and whether the inventory changed since it was computed (and when, last)."""
    now = now or timezone.now()
    as_of = None
    if latest is not None:
        fmt = "H:i" if latest.computed_at.date() == now.date() else "Y-m-d H:i"
        as_of = date_format(latest.computed_at, fmt)
    changed = snapshots.changed_since(registry)
    return {"latest": latest, "as_of": as_of, "changed": changed,
            "changed_at": registry.inventory_changed_at if changed else None,
            "interval": settings.SNAPSHOT_INTERVAL_MINUTES}


def with_shares(repos, snapshot_rows):
    """Mark repositories with their untagged share (the live counters) and their stale share
    (the latest snapshot; None when it has no row for them or the window cannot tell)."""
    for repo in repos:
        repo.untagged_share = share(repo.item_count - repo.tagged_count, repo.item_count)
        row = snapshot_rows.get(repo.pk)
        repo.stale_share = share(row.stale_items, row.items) if row else None
        if row is None:
            repo.stale_note = "Not in the storage figures yet"
        elif row.stale_items is None:
            repo.stale_note = "Unknown: the observation window is too short to tell"
        else:
            repo.stale_note = f"{row.stale_items:,} of {row.items:,} items on {row.date}"
    return repos


@require_GET
@login_required
def overview(request):
    registry = default_registry()
    days = _period(request.GET)
    latest = snapshots.latest(registry)
    live = Repository.objects.filter(registry=registry).aggregate(
        repositories=Count("id"), items=Sum("item_count"), tagged=Sum("tagged_count"))
    live["items"] = live["items"] or 0
    live["untagged"] = live["items"] - (live["tagged"] or 0)
    biggest = list(Repository.objects.filter(registry=registry)
                   .order_by("-total_size", "name")[:BIGGEST])
    with_shares(biggest, snapshots.for_repositories(
        registry, [r.pk for r in biggest], latest.date if latest else None))
    policies = with_last_run(CleanupPolicy.objects.all())
    coverage = Coverage.of(registry)
    return render(request, "overview/overview.html", {
        "registry": registry, "live": live, "biggest": biggest,
        "policies": policies, "days": days, "periods": PERIODS,
        "stale_days": settings.STALE_DAYS, "window": window(registry.pulls_observed_since),
        "decides_stale": coverage.decides_stale,
        "untagged_share": share(latest.untagged_bytes, latest.bytes) if latest else None,
        "stale_share": share(latest.stale_bytes, latest.bytes) if latest else None,
        "reclaim": reclaim.summary(registry),
    } | snapshot_context(registry, latest)
      | chart_context("registry", "Registry", snapshots.history(registry, days=days)))


@require_GET
@login_required
def repository_storage(request, name):
    repo = get_repository(name)
    days = _period(request.GET)
    rows = snapshots.history(repo.registry, repository=repo, days=days)
    latest = rows[-1] if rows else None
    return render(request, "overview/repository_storage.html", {
        "repo": repo, "days": days, "periods": PERIODS, "stale_days": settings.STALE_DAYS,
        "window": window(repo.registry.pulls_observed_since),
        "untagged_share": share(repo.item_count - repo.tagged_count, repo.item_count),
    } | snapshot_context(repo.registry, latest) | chart_context("repository", repo.name, rows))
