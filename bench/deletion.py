"""Deletion jobs: DELETE rate against raw DELETEs, and recovery from a killed worker."""

import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connection

from .common import CONCURRENCY, ROOT, WORK, record


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
    from hubmgr.inventory.sync.runs import sync_registry
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
    job = jobs.create_job(repo, actions.plan_data(plan))
    started = time.perf_counter()
    status = jobs.process_job(job.pk, client, concurrency=CONCURRENCY, wait=True)
    rate = count / (time.perf_counter() - started)
    assert status == "done" and len(plan.going) == count, (status, len(plan.going))
    record("delete", f"{count} manifests", raw_per_s=round(raw), job_per_s=round(rate),
           ratio=round(rate / raw, 2), concurrency=CONCURRENCY)
    print(f"Deletion of {count:,} manifests, concurrency {CONCURRENCY}:")
    print(f"  raw DELETE calls       {raw:8.0f} /s")
    print(f"  deletion job           {rate:8.0f} /s  (ratio {rate / raw:.2f}; claim, re-check, "
          "DELETE, record and inventory update per item)")


def bench_kill(rounds=3):
    """Seconds from a worker's SIGKILL in the middle of a DELETE to the job's next DELETE,
    with the production lease, heartbeat and sweep cadence, real workers and a real beat."""
    from hubmgr import celery_app, devstack
    from tests.support.servers import FaultProxy

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
    record("kill", "kill to next DELETE", median_s=round(statistics.median(seconds), 1),
           max_s=round(max(seconds), 1), runs=[round(x, 1) for x in seconds])
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
    from hubmgr.inventory.sync.runs import sync_registry
    from hubmgr.registry.client import RegistryClient

    name = f"bench/kill{n}"
    base = devstack.make_layer("bench-kill", 2000)
    digests = [devstack_push(RegistryClient(registry_url), name, base, i) for i in range(6)]
    sync_registry(default_registry(), client_for(default_registry()), name)
    repo = Repository.objects.get(name=name)
    job = jobs.create_job(repo, actions.plan_data(actions.make_plan(repo, digests)))
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
