"""The repositories page and API at BENCH_REPOSITORIES (10,000) repositories: server time per
request for search, each sort and a deep page."""

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from .common import REQUESTS
from .table import measure_cases

REPOSITORIES = 10_000


def build_repositories(n):
    from hubmgr.inventory.models import Repository
    from hubmgr.inventory.registries import default_registry

    now = timezone.now()
    Repository.objects.bulk_create([
        Repository(registry=default_registry(), name=f"team{i % 97}/service-{i:05d}",
                   item_count=(i * 37) % 5003, tagged_count=(i * 37) % 5003 // 2,
                   total_size=(i * 7919) % 50_000_000_000,
                   last_pushed=None if i % 10 == 0 else now - timedelta(minutes=(i * 13) % 99991),
                   last_pulled=None if i % 4 == 0 else now - timedelta(minutes=(i * 7) % 99991),
                   stale_count=None if i % 9 == 0 else (i * 53) % 2500)
        for i in range(n)], batch_size=2000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def bench_repositories():
    from django.contrib.auth import get_user_model

    from hubmgr.inventory.catalog import listing
    from hubmgr.inventory.models import Repository

    existing = Repository.objects.count()
    build_repositories(REPOSITORIES)
    user, _ = get_user_model().objects.get_or_create(username="bench-repos")
    settings.ALLOWED_HOSTS.append("testserver")
    client = Client()
    client.force_login(user)
    htmx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "repo-table"}
    base, api = "/repositories/", "/api/v1/repositories"
    matches = Repository.objects.filter(name__icontains="team42/").count()
    cases = [("full page", base, {}), ("htmx swap", base, htmx),
             (f"search (team42/, {matches} match)", f"{base}?search=team42/", htmx),
             ("search (service-0999)", f"{base}?search=service-0999", htmx)]
    for sort in listing.SORT_FIELDS:
        for prefix in ("", "-"):
            cases.append((f"sort {prefix}{sort}", f"{base}?sort={prefix}{sort}", htmx))
    last = -(-(REPOSITORIES + existing) // 50)
    cases += [(f"page {last} (last)", f"{base}?page={last}&sort=-size", htmx),
              ("api", f"{api}?page_size=100", {}),
              ("api, search + sort", f"{api}?search=service-1&sort=-last_pushed", {})]
    print(f"\nRepositories page, {REPOSITORIES + existing:,} repositories, {REQUESTS} requests "
          f"each, {connection.vendor}:")
    measure_cases("repositories", client, cases, width=34)
