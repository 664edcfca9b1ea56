"""The registry-wide table (/images) and GET /api/v1/images at BENCH_MANIFESTS manifests in
BENCH_OVERVIEW_REPOS (10,000) repositories (the overview section's inventory, built once and
shared: issue 24's goal is p95 at most 50 ms for every sort and filter at 1,000,000 manifests
on PostgreSQL; SQLite measures 100,000)."""

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from .common import MANIFESTS, REQUESTS
from .overview import PREFIX, REPOS, build
from .table import measure_cases


def bench_images():
    from django.contrib.auth import get_user_model

    from hubmgr.inventory.catalog import queries
    from hubmgr.inventory.models import Repository

    if not Repository.objects.filter(name__startswith=PREFIX).exists():
        build(MANIFESTS, REPOS)
    user, _ = get_user_model().objects.get_or_create(username="bench-images")
    settings.ALLOWED_HOSTS.append("testserver")
    client = Client()
    client.force_login(user)
    htmx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "image-table"}
    day = (timezone.now() - timedelta(days=200)).date().isoformat()
    base = "/images/"
    cases = [("images, full page", base, {}), ("images, htmx swap", base, htmx)]
    cases += [(f"images, sort {s}", f"{base}?sort={s}", htmx) for s in queries.SORTS]
    filters = ["kind=index", "kind=image", "kind=artifact", "tagged=tagged",
               "tagged=untagged", "status=stale", "status=active", "status=unknown",
               "platform=linux/amd64", "platform=linux/arm64", f"pushed_before={day}",
               f"pushed_after={day}", f"pulled_before={day}", f"pulled_after={day}",
               f"tagged=untagged&pushed_before={day}", "status=stale&platform=linux/amd64",
               f"kind=index&tagged=tagged&pulled_after={day}"]
    for query in filters:
        for sort in ("-last_pushed", "size", "-last_pulled"):
            cases.append((f"images, {query} sort {sort}", f"{base}?{query}&sort={sort}", htmx))
    cases += [("images, search v4", f"{base}?search=v4", htmx),
              ("api, images", "/api/v1/images", {}),
              ("api, untagged pushed before", f"/api/v1/images?tagged=untagged"
               f"&pushed_before={day}", {})]
    print(f"\nRegistry-wide table, {MANIFESTS:,} manifests in {REPOS:,} repositories, "
          f"{REQUESTS} requests each, {connection.vendor} (goal: p95 at most 50 ms on "
          "PostgreSQL at 1,000,000):")
    measure_cases("images", client, cases, width=60)
