"""Sync throughput against the registry's raw manifest-GET rate, same run, same concurrency."""

import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from .common import CONCURRENCY, TAGS, WORK, record


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
        record("sync", f"{TAGS} tags", raw_gets_per_s=round(raw), first_sync_per_s=round(rate),
               ratio=round(rate / raw, 2), second_sync_per_s=round(again),
               second_ratio=round(again / raw, 2), concurrency=CONCURRENCY)
        print(f"Sync of {TAGS:,} tags, concurrency {CONCURRENCY}:")
        print(f"  raw manifest GETs      {raw:8.0f} /s")
        print(f"  first sync             {rate:8.0f} tags/s  ({elapsed:.1f} s, ratio "
              f"{rate / raw:.2f} to raw GETs; each new tag also needs its image config)")
        print(f"  second sync (no change){again:8.0f} tags/s  (ratio {again / raw:.2f})")
    finally:
        service.stop()
