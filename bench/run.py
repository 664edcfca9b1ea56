"""`make bench`: the figures the issues name, measured on this machine.

1. Server time (p50/p95) of the Image Management table and the images API for one repository
   of 100,000 manifests on SQLite, with SQL queries per request.
2. Sync throughput for 5,000 tags from a local docker-registry, against the registry's own raw
   manifest-GET rate measured in the same run with the same concurrency.

Everything runs in a throw-away folder under bench/output/.
"""

import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "output"
OUT.mkdir(parents=True, exist_ok=True)
WORK = Path(tempfile.mkdtemp(prefix="run-", dir=OUT))
os.environ["HUBMGR_DATA_DIR"] = str(WORK)
os.environ.pop("HUBMGR_DATABASE_URL", None)
os.environ.pop("HUBMGR_REGISTRY_URL", None)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hubmgr.settings")
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

MANIFESTS = int(os.environ.get("BENCH_MANIFESTS", 100_000))
TAGS = int(os.environ.get("BENCH_TAGS", 5_000))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", 8))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", 60))


def percentile(values, pct):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def build_inventory(n):
    """One repository of n manifests: 10% indexes with two children each, the rest images,
    60% of top-level items tagged, pulls spread over two years."""
    from datetime import timedelta

    from django.utils import timezone

    from hubmgr.inventory.models import IndexChild, Manifest, Repository, Tag
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

    call_command("migrate", verbosity=0)
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
        ("table, search digest", f"{base}?search=00000000000000000000000000000000000000000000000000000000001", htmx),
        ("table, search broad (v1)", f"{base}?search=v1", htmx),
        ("table, page 1000", f"{base}?page=1000", htmx),
        ("api, images", api, {}),
        ("api, sort last pulled", f"{api}?sort=-last_pulled&filter=tagged", {}),
    ]
    print(f"\nServer time per request, {REQUESTS} requests each, {MANIFESTS:,} manifests, "
          "SQLite:")
    print(f"{'case':28} {'p50 ms':>8} {'p95 ms':>8}  SQL queries")
    for name, url, headers in cases:
        p50, p95, queries = time_requests(client, url, headers)
        print(f"{name:28} {p50:8.1f} {p95:8.1f}  {','.join(map(str, queries))}")


def bench_sync():
    import requests

    from hubmgr import devstack
    from hubmgr.inventory.registries import client_for, default_registry
    from hubmgr.inventory.sync import sync_registry
    from hubmgr.registry.client import RegistryClient
    from hubmgr.registry.manifests import ACCEPT

    from hubmgr.inventory.models import Repository

    Repository.objects.all().delete()  # the table benchmark's rows are not in this registry
    service = devstack.start_registry(WORK / "registry")
    settings.REGISTRY_URL = service.url
    try:
        pusher = RegistryClient(service.url, pool_size=CONCURRENCY)
        repos = [f"bench/app{r}" for r in range(10)]
        base = devstack.make_layer("bench-base", 4000)

        def push(i):
            repo = repos[i % len(repos)]
            devstack.push_image(pusher, repo, [base, devstack.make_layer(f"b{i}", 200)],
                                tag=f"build-{i}", label=str(i))
            return repo, f"build-{i}"

        started = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            refs = list(pool.map(push, range(TAGS)))
        print(f"\npushed {TAGS:,} tags (distinct images) into 10 repositories in "
              f"{time.perf_counter() - started:.1f} s")

        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=CONCURRENCY)
        session.mount("http://", adapter)

        def raw_get(ref):
            resp = session.get(f"{service.url}/v2/{ref[0]}/manifests/{ref[1]}",
                               headers={"Accept": ACCEPT}, timeout=30)
            resp.raise_for_status()

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(raw_get, refs[:200]))  # warm
            started = time.perf_counter()
            list(pool.map(raw_get, refs))
        raw = TAGS / (time.perf_counter() - started)

        registry = default_registry()
        client = client_for(registry, pool_size=CONCURRENCY)
        started = time.perf_counter()
        run = sync_registry(registry, client, concurrency=CONCURRENCY)
        elapsed = time.perf_counter() - started
        assert run.tags == TAGS and not run.problems, run.problems[:3]
        rate = TAGS / elapsed
        started = time.perf_counter()
        sync_registry(registry, client, concurrency=CONCURRENCY)
        again = TAGS / (time.perf_counter() - started)
        print(f"Sync of {TAGS:,} tags, concurrency {CONCURRENCY}:")
        print(f"  raw manifest GETs      {raw:8.0f} /s")
        print(f"  first sync             {rate:8.0f} tags/s  ({elapsed:.1f} s, ratio "
              f"{rate / raw:.2f} to raw GETs; each new tag also needs its image config)")
        print(f"  second sync (no change){again:8.0f} tags/s  (ratio {again / raw:.2f})")
    finally:
        service.stop()


if __name__ == "__main__":
    print(f"hubmgr bench, {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} cores, "
          f"Python {sys.version.split()[0]}, SQLite {connection.Database.sqlite_version}")
    only = os.environ.get("BENCH_ONLY", "")
    try:
        if only in ("", "table"):
            bench_table()
        if only in ("", "sync"):
            bench_sync()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
