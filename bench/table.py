"""The Image Management table and the images API, server time per request, and the deletion
plan, on one big repository."""

import statistics
import time

from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from .common import MANIFESTS, REQUESTS, percentile, record


def build_inventory(n):
    """One repository of n manifests: 10% indexes with two children each, the rest images,
    60% of top-level items tagged, pulls spread over two years."""
    from datetime import timedelta

    from django.utils import timezone

    from hubmgr.inventory.models import (
        Blob, IndexChild, Manifest, ManifestBlob, Repository, Tag)
    from hubmgr.inventory.registries import default_registry
    from hubmgr.inventory.store import refresh_counts

    repo = Repository.objects.create(registry=default_registry(), name="bench/big")
    now = timezone.now()
    n_index = n // 10
    rows = []
    for i in range(n):
        kind = "index" if i < n_index else "image"
        child = n_index <= i < 3 * n_index
        tagged = not child and i % 5 < 3
        rows.append(Manifest(
            repository=repo, digest=f"sha256:{i:064x}", kind=kind,
            media_type="application/vnd.oci.image.manifest.v1+json", platform="linux/amd64",
            size=(i * 7919) % 500_000_000, fetched=True,
            last_pushed=now - timedelta(minutes=i * 7 % 1_000_000),
            last_pushed_source="push_event",
            last_pulled=None if i % 4 == 0 else now - timedelta(minutes=i * 13 % 1_000_000),
            tags_text=f"v{i}" if tagged else "", is_tagged=tagged, is_top_level=not child))
    Manifest.objects.bulk_create(rows, batch_size=2000)
    ids = dict(Manifest.objects.filter(repository=repo).values_list("digest", "id"))
    links = []
    for i in range(n_index):
        for c in (n_index + 2 * i, n_index + 2 * i + 1):
            links.append(IndexChild(index_id=ids[f"sha256:{i:064x}"],
                                    child_id=ids[f"sha256:{c:064x}"], platform="linux/amd64"))
    IndexChild.objects.bulk_create(links, batch_size=2000)
    Tag.objects.bulk_create([Tag(repository=repo, name=m.tags_text, manifest_id=ids[m.digest])
                             for m in rows if m.tags_text], batch_size=2000)
    # Every image: its own config and one of 500 shared base layers.
    registry = repo.registry
    Blob.objects.bulk_create([Blob(registry=registry, digest=f"sha256:b{n:063x}", size=1000 + n)
                              for n in range(500)], batch_size=2000)
    Blob.objects.bulk_create([Blob(registry=registry, digest=f"sha256:c{i:063x}", size=i % 5000)
                              for i in range(n_index, n)], batch_size=2000)
    blob_ids = dict(Blob.objects.filter(registry=registry).values_list("digest", "id"))
    links = []
    for i in range(n_index, n):
        mid = ids[f"sha256:{i:064x}"]
        links.append(ManifestBlob(manifest_id=mid, blob_id=blob_ids[f"sha256:c{i:063x}"]))
        links.append(ManifestBlob(manifest_id=mid, blob_id=blob_ids[f"sha256:b{i % 500:063x}"]))
    ManifestBlob.objects.bulk_create(links, batch_size=2000)
    refresh_counts(repo)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return repo


def time_requests(client, url, headers):
    timings, queries = [], set()
    client.get(url, **headers)  # warm
    for _ in range(REQUESTS):
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            resp = client.get(url, **headers)
            timings.append((time.perf_counter() - start) * 1000)
        assert resp.status_code == 200, (url, resp.status_code)
        queries.add(len(ctx.captured_queries))
    return statistics.median(timings), percentile(timings, 95), sorted(queries)


def bench_table():
    from django.contrib.auth import get_user_model

    started = time.perf_counter()
    build_inventory(MANIFESTS)
    print(f"built an inventory of {MANIFESTS:,} manifests in "
          f"{time.perf_counter() - started:.1f} s")
    user = get_user_model().objects.create_user("bench", password="bench-pass-1")
    settings.ALLOWED_HOSTS.append("testserver")
    client = Client()
    client.force_login(user)
    htmx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "image-table"}
    base = "/repositories/bench/big"
    api = "/api/v1/repositories/bench/big/images"
    cases = [
        ("table, full page", base, {}),
        ("table, htmx swap", base, htmx),
        ("table, sort size", f"{base}?sort=-size", htmx),
        ("table, sort last pulled", f"{base}?sort=last_pulled", htmx),
        ("table, filter untagged", f"{base}?filter=untagged", htmx),
        ("table, filter index", f"{base}?filter=index&sort=size", htmx),
        ("table, search tag", f"{base}?search=v4242", htmx),
        ("table, search digest", f"{base}?search={'0' * 59}1", htmx),
        ("table, search broad (v1)", f"{base}?search=v1", htmx),
        ("table, page 1000", f"{base}?page=1000", htmx),
        ("api, images", api, {}),
        ("api, sort last pulled", f"{api}?sort=-last_pulled&filter=tagged", {}),
    ]
    print(f"\nServer time per request, {REQUESTS} requests each, {MANIFESTS:,} manifests, "
          f"{connection.vendor}:")
    print(f"{'case':28} {'p50 ms':>8} {'p95 ms':>8}  SQL queries")
    for name, url, headers in cases:
        p50, p95, queries = time_requests(client, url, headers)
        record("table", name, url=url, p50_ms=round(p50, 1), p95_ms=round(p95, 1),
               queries=queries)
        print(f"{name:28} {p50:8.1f} {p95:8.1f}  {','.join(map(str, queries))}")
