"""Sync throughput against the raw rate of the same requests, same run, same concurrency.

BENCH_TAGS distinct images (default 20,000) are pushed into 10 repositories of a local
docker-registry. The raw baseline makes the requests a first sync must make for each new image
(GET its manifest by tag, then GET its config blob) with BENCH_CONCURRENCY threads. The syncs
run in a child process, so its peak RSS is the sync's own: a first sync, then a second one with
nothing changed. On PostgreSQL, the same first sync is then fanned out as one task per
repository to 1 and then 2 real Celery workers (a private Redis).

The bench syncs its own Registry row ("bench-sync"), so the table section's "bench/big"
repository (of the default registry) is left as it is. BENCH_SYNC_REGISTRY=DIR keeps the
pushed registry in DIR and reuses it when it holds BENCH_TAGS images already (pushing 20,000
images takes longer than syncing them; the SQLite and PostgreSQL runs can share it).
"""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings
from django.db import connection

from .common import CONCURRENCY, ROOT, TAGS, WORK, record

REPOSITORIES = 10
REGISTRY_NAME = "bench-sync"


def bench_sync():
    from hubmgr import devstack
    from hubmgr.inventory.models import Registry

    root = Path(os.environ.get("BENCH_SYNC_REGISTRY") or WORK / "registry-sync")
    service = devstack.start_registry(root)
    try:
        Registry.objects.filter(name=REGISTRY_NAME).delete()
        registry = Registry.objects.create(name=REGISTRY_NAME, url=service.url)
        pushed = root / f"pushed-{TAGS}"
        if pushed.exists():
            refs = [(f"bench/app{i % REPOSITORIES}", f"build-{i}") for i in range(TAGS)]
            print(f"\nreusing the {TAGS:,} images pushed into {root}")
        else:
            refs = _push(service.url)
            pushed.touch()
        raw = _raw_rate(service.url, refs)
        first = _child("sync", registry.pk)
        second = _child("sync", registry.pk)
        idle = _child("idle", registry.pk)
        assert first["tags"] == TAGS and not first["problems"], first
        assert second["fetched"] == 0, second
        rate, again = TAGS / first["seconds"], TAGS / second["seconds"]
        figures = dict(raw_per_s=round(raw), first_sync_per_s=round(rate),
                       ratio=round(rate / raw, 2), first_sync_s=round(first["seconds"], 1),
                       second_sync_per_s=round(again), second_sync_s=round(second["seconds"], 1),
                       second_ratio=round(again / raw, 2), concurrency=CONCURRENCY,
                       peak_rss_mb_first=first["peak_mb"], peak_rss_mb_second=second["peak_mb"],
                       rss_mb_idle=idle["peak_mb"])
        print(f"Sync of {TAGS:,} tags (distinct images) in {REPOSITORIES} repositories, "
              f"concurrency {CONCURRENCY}, {connection.vendor}:")
        print(f"  raw manifest + config GETs {raw:8.0f} images/s")
        print(f"  first sync                 {rate:8.0f} tags/s  ({first['seconds']:.1f} s, "
              f"ratio {rate / raw:.2f}; peak RSS {first['peak_mb']} MB, idle process "
              f"{idle['peak_mb']} MB)")
        print(f"  second sync (no change)    {again:8.0f} tags/s  ({second['seconds']:.1f} s, "
              f"ratio {again / raw:.2f}; peak RSS {second['peak_mb']} MB)")
        if connection.vendor == "postgresql":
            figures.update(_workers(registry, service.url))
        record("sync", f"{TAGS} tags", **figures)
    finally:
        service.stop()


def _push(url):
    from hubmgr import devstack
    from hubmgr.registry.client import RegistryClient

    pusher = RegistryClient(url, pool_size=CONCURRENCY)
    repos = [f"bench/app{r}" for r in range(REPOSITORIES)]
    base = devstack.make_layer("bench-base", 4000)

    def push(i):
        repo = repos[i % REPOSITORIES]
        devstack.push_image(pusher, repo, [base, devstack.make_layer(f"b{i}", 200)],
                            tag=f"build-{i}", label=str(i))
        return repo, f"build-{i}"

    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        refs = list(pool.map(push, range(TAGS)))
    pusher.close()
    print(f"\npushed {TAGS:,} tags (distinct images) into {REPOSITORIES} repositories in "
          f"{time.perf_counter() - started:.1f} s")
    return refs


def _raw_rate(url, refs):
    """Images per second for the requests a first sync makes per new image: the manifest by
    tag, then its config blob, with the sync's concurrency and one pooled session."""
    import requests

    from hubmgr.registry.manifests import ACCEPT

    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=CONCURRENCY))

    def raw_get(ref):
        resp = session.get(f"{url}/v2/{ref[0]}/manifests/{ref[1]}",
                           headers={"Accept": ACCEPT}, timeout=30)
        resp.raise_for_status()
        config = resp.json()["config"]["digest"]
        session.get(f"{url}/v2/{ref[0]}/blobs/{config}", timeout=30).raise_for_status()

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(raw_get, refs[:200]))  # warm
        started = time.perf_counter()
        list(pool.map(raw_get, refs))
    session.close()
    return len(refs) / (time.perf_counter() - started)


def _child(what, registry_id):
    """Run a sync (or nothing, for the idle figure) in a fresh process: its time and peak RSS."""
    out = subprocess.run([sys.executable, "-m", "bench.sync", what, str(registry_id)],
                         cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"bench.sync {what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _workers(registry, url):
    """The first sync again, fanned out as per-repository tasks to 1, then 2 Celery workers
    (one task at a time each, --pool solo)."""
    from django.db.models import Count

    from hubmgr import celery_app, devstack
    from hubmgr.inventory.models import Repository, SyncRun
    from hubmgr.inventory.tasks import fan_out

    redis = devstack.start_redis(WORK / "redis-sync")
    celery_app.conf.broker_url = redis.url
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HUBMGR_") or k in ("HUBMGR_DATA_DIR", "HUBMGR_DATABASE_URL")}
    env.update(HUBMGR_REDIS_URL=redis.url, HUBMGR_SYNC_CONCURRENCY=str(CONCURRENCY))
    figures = {}
    try:
        for count in (1, 2):
            Repository.objects.filter(registry=registry).delete()
            workers = [_celery(env, f"sync-worker{n}", "worker", "--pool", "solo", "-n",
                               f"sync{n}@%h") for n in range(count)]
            try:
                devstack.wait_for(lambda: len(celery_app.control.ping(timeout=0.5)) == count,
                                  "the workers", timeout=60)
                started = time.perf_counter()
                run = fan_out(registry)
                devstack.wait_for(
                    lambda: SyncRun.objects.filter(pk=run.pk, finished_at__isnull=False).exists(),
                    "the fanned-out sync", timeout=1800)
                seconds = time.perf_counter() - started
            finally:
                for proc in workers:
                    proc.terminate()
                    proc.wait(30)
            run.refresh_from_db()
            assert run.tags == TAGS and not run.problems, (run.tags, run.problems[:3])
            by = dict(run.repository_syncs.values_list("worker").annotate(n=Count("id"))
                      .values_list("worker", "n"))
            figures[f"workers_{count}_per_s"] = round(TAGS / seconds)
            figures[f"workers_{count}_s"] = round(seconds, 1)
            print(f"  fanned out to {count} worker(s)  {TAGS / seconds:8.0f} tags/s  "
                  f"({seconds:.1f} s; repositories per worker: {sorted(by.values())})")
    finally:
        redis.stop()
    figures["workers_gain"] = round(figures["workers_2_per_s"] / figures["workers_1_per_s"], 2)
    return figures


def _celery(env, name, *args):
    log = open(WORK / f"{name}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "hubmgr", *args,
                             "--loglevel", "warning"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _peak_mb():
    """This process's peak RSS. Linux keeps ru_maxrss across exec (the forking bench's own
    size would show), so VmHWM, which starts afresh with the new program, comes first."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main(what, registry_id):
    """The child: `python -m bench.sync sync|idle REGISTRY_ID`, one JSON line on stdout."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hubmgr.settings")
    django.setup()
    from hubmgr.inventory.models import Registry
    from hubmgr.inventory.registries import client_for
    from hubmgr.inventory.sync.runs import sync_registry

    registry = Registry.objects.get(pk=registry_id)
    if what == "idle":
        print(json.dumps({"peak_mb": _peak_mb()}))
        return
    client = client_for(registry, pool_size=CONCURRENCY)
    started = time.perf_counter()
    run = sync_registry(registry, client, concurrency=CONCURRENCY)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "tags": run.tags, "fetched": run.manifests_fetched,
                      "problems": run.problems[:3], "peak_mb": _peak_mb(),
                      "settings": settings.SYNC_CONCURRENCY}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
