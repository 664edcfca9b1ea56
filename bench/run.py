"""`make bench`: the figures the issues name, measured on this machine.

1. Server time (p50/p95) of the Image Management table and the images API for one repository
   of 100,000 manifests on SQLite, with SQL queries per request.
2. Sync throughput for 5,000 tags from a local docker-registry, against the registry's own raw
   manifest-GET rate measured in the same run with the same concurrency.
3. Deletion: the deletion plan, a job's DELETE rate against raw DELETEs, and the time from a
   worker's SIGKILL to its job's next DELETE (real workers and beat, production timing).

BENCH_ONLY=table|sync|delete|kill runs one section. BENCH_DATABASE_URL runs it on that database
instead of a throw-away SQLite file (the kill section: workers in other processes share it).

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
if os.environ.get("BENCH_DATABASE_URL"):
    os.environ["HUBMGR_DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
os.environ.pop("HUBMGR_REGISTRY_URL", None)
os.environ.setdefault("HUBMGR_LOG_LEVEL", "WARNING")  # no log line per deleted item
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


def bench_plan():
    """The deletion plan for 10,000 selected items of the 100,000-manifest repository."""
    from hubmgr.deletion.graph import load_graph
    from hubmgr.deletion.planner import plan
    from hubmgr.inventory.models import Manifest, Repository

    repo = Repository.objects.get(name="bench/big")
    n_index = MANIFESTS // 10
    # 1,000 indexes (each taking its two children) and 9,000 top-level images.
    chosen = [f"sha256:{i:064x}" for i in range(0, n_index, 10)]
    top_images = Manifest.objects.filter(repository=repo, kind="image", is_top_level=True) \
        .order_by("id").values_list("digest", flat=True)[:10_000 - len(chosen)]
    chosen += list(top_images)
    load_ms, plan_ms = [], []
    for _ in range(5):
        started = time.perf_counter()
        graph, selected = load_graph(repo, chosen)
        loaded = time.perf_counter()
        result = plan(graph, selected)
        load_ms.append((loaded - started) * 1000)
        plan_ms.append((time.perf_counter() - loaded) * 1000)
    total = [a + b for a, b in zip(load_ms, plan_ms)]
    print(f"\nDeletion plan for {len(chosen):,} selected items in a {MANIFESTS:,}-manifest "
          f"repository ({len(result.items):,} to delete, {len(result.kept):,} kept), 5 runs:")
    print(f"  planner alone     median {statistics.median(plan_ms):7.1f} ms   "
          f"max {max(plan_ms):7.1f} ms")
    print(f"  load + plan       median {statistics.median(total):7.1f} ms   "
          f"max {max(total):7.1f} ms")


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
        ("table, search digest", f"{base}?search=00000000000000000000000000000000000000000000000000000000001", htmx),
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


def bench_delete(count=1000):
    """Deletion throughput of a job against raw DELETE calls, same concurrency."""
    from hubmgr import devstack

    service = devstack.start_registry(WORK / "registry-delete")
    settings.REGISTRY_URL = service.url
    try:
        _bench_delete(service, count)
    finally:
        service.stop()


def _bench_delete(service, count):
    import requests

    from hubmgr import devstack
    from hubmgr.deletion import actions, jobs
    from hubmgr.inventory.models import Repository
    from hubmgr.inventory.registries import client_for, default_registry
    from hubmgr.inventory.sync import sync_registry
    from hubmgr.registry.client import RegistryClient

    pusher = RegistryClient(service.url, pool_size=CONCURRENCY)
    base = devstack.make_layer("bench-base", 4000)

    def push_many(repo):
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            return list(pool.map(lambda i: devstack_push(pusher, repo, base, i), range(count)))

    raw_digests = push_many("bench/raw-delete")
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=CONCURRENCY))

    def raw_delete(digest):
        session.delete(f"{service.url}/v2/bench/raw-delete/manifests/{digest}",
                       timeout=30).raise_for_status()

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        started = time.perf_counter()
        list(pool.map(raw_delete, raw_digests))
    raw = count / (time.perf_counter() - started)

    job_digests = push_many("bench/job-delete")
    registry = default_registry()
    client = client_for(registry, pool_size=CONCURRENCY)
    sync_registry(registry, client, "bench/job-delete", concurrency=CONCURRENCY)
    repo = Repository.objects.get(name="bench/job-delete")
    plan = actions.make_plan(repo, job_digests)
    job = jobs.create_job(repo, actions.snapshot(plan))
    started = time.perf_counter()
    status = jobs.process_job(job.pk, client, concurrency=CONCURRENCY, wait=True)
    rate = count / (time.perf_counter() - started)
    assert status == "done" and len(plan.items) == count, (status, len(plan.items))
    print(f"Deletion of {count:,} manifests, concurrency {CONCURRENCY}:")
    print(f"  raw DELETE calls       {raw:8.0f} /s")
    print(f"  deletion job           {rate:8.0f} /s  (ratio {rate / raw:.2f}; claim, re-check, "
          "DELETE, record and inventory update per item)")


def bench_kill(rounds=3):
    """Seconds from a worker's SIGKILL in the middle of a DELETE to the job's next DELETE,
    with the production lease, heartbeat and sweep cadence, real workers and a real beat."""
    from hubmgr import celery_app, devstack
    from tests.servers import FaultProxy

    redis = devstack.start_redis(WORK / "redis")
    registry = devstack.start_registry(WORK / "registry-kill")
    proxy = FaultProxy(registry.url)
    proxy.add("DELETE", r"/manifests/", "delay", 0.8)  # so the kill lands mid-DELETE
    settings.REGISTRY_URL = proxy.url
    celery_app.conf.broker_url = redis.url
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HUBMGR_") or k in ("HUBMGR_DATA_DIR", "HUBMGR_DATABASE_URL")}
    env.update(HUBMGR_REDIS_URL=redis.url, HUBMGR_REGISTRY_URL=proxy.url,
               HUBMGR_DELETE_CONCURRENCY="1")
    beat = _celery(env, "beat", "beat", "--schedule", str(WORK / "celerybeat-schedule"))
    try:
        seconds = [_kill_once(env, proxy, registry.url, n) for n in range(rounds)]
    finally:
        _stop(beat)
        proxy.close()
        registry.stop()
        redis.stop()
    print(f"\nA worker SIGKILLed mid-DELETE, to its job's next DELETE by another worker "
          f"(lease {settings.DELETE_CLAIM_SECONDS:.0f} s, sweep every "
          f"{settings.DELETE_SWEEP_SECONDS:.0f} s, {connection.vendor}), {rounds} runs:")
    print(f"  kill -> next DELETE  median {statistics.median(seconds):7.1f} s    "
          f"max {max(seconds):7.1f} s   ({', '.join(f'{x:.1f}' for x in seconds)})")


def _kill_once(env, proxy, registry_url, n):
    """One job of six items: a worker starts it and is killed during its second DELETE; a
    fresh worker finishes it. Returns seconds from the kill to the next DELETE."""
    import signal

    from hubmgr import devstack
    from hubmgr.deletion import actions, jobs, tasks
    from hubmgr.inventory.models import Repository
    from hubmgr.inventory.registries import client_for, default_registry
    from hubmgr.inventory.sync import sync_registry
    from hubmgr.registry.client import RegistryClient

    name = f"bench/kill{n}"
    base = devstack.make_layer("bench-kill", 2000)
    digests = [devstack_push(RegistryClient(registry_url), name, base, i) for i in range(6)]
    sync_registry(default_registry(), client_for(default_registry()), name)
    repo = Repository.objects.get(name=name)
    job = jobs.create_job(repo, actions.snapshot(actions.make_plan(repo, digests)))
    sent = proxy.count("DELETE", r"/manifests/")
    doomed = _celery(env, f"doomed{n}", "worker", "--pool", "solo", "-n", f"doomed{n}@%h")
    tasks.schedule(job.pk, 0)
    devstack.wait_for(lambda: proxy.count("DELETE", r"/manifests/") >= sent + 2,
                      "the first worker's second DELETE", timeout=120)
    killed_at = time.monotonic()
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    survivor = _celery(env, f"survivor{n}", "worker", "--pool", "solo", "-n", f"survivor{n}@%h")
    try:
        devstack.wait_for(lambda: proxy.first_after(killed_at, "DELETE", r"/manifests/"),
                          "the next DELETE", timeout=300)
        devstack.wait_for(lambda: jobs.update_status(job) == "done", "the job", timeout=120)
    finally:
        _stop(survivor)
    return proxy.first_after(killed_at, "DELETE", r"/manifests/") - killed_at


def _celery(env, name, *args):
    import subprocess

    log = open(WORK / f"{name}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "hubmgr", *args,
                             "--loglevel", "warning"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _stop(proc):
    proc.terminate()
    proc.wait(30)


def devstack_push(pusher, repo, base, i):
    from hubmgr import devstack

    return devstack.push_image(pusher, repo, [base, devstack.make_layer(f"{repo}{i}", 200)],
                               label=f"{repo}{i}", tag=f"t{i}")["digest"]


if __name__ == "__main__":
    if connection.vendor == "sqlite":
        database = f"SQLite {connection.Database.sqlite_version}"
    else:
        version = connection.cursor().connection.info.server_version
        database = f"PostgreSQL {version // 10000}.{version % 10000}"
    print(f"hubmgr bench, {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} cores, "
          f"Python {sys.version.split()[0]}, {database}")
    only = os.environ.get("BENCH_ONLY", "")
    call_command("migrate", verbosity=0)
    try:
        if only in ("", "table"):
            bench_table()
            bench_plan()
        if only in ("", "sync"):
            bench_sync()
        if only in ("", "delete"):
            bench_delete()
        if only in ("", "kill"):
            bench_kill()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
