"""Deletion through a fault-injecting proxy in front of the real registry, with real Celery
workers on Redis: timeouts, resets, 503 and 429 are retried until done; a worker killed
mid-job leaves nothing stuck."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from hubmgr.deletion import jobs, tasks
from hubmgr.deletion.actions import plan_data
from hubmgr.deletion.graph import load_graph
from hubmgr.deletion.models import DeletionItem, DeletionJob, ItemStatus, JobStatus
from hubmgr.deletion.planner import plan

from tests.support.helpers import image, multiarch, repo, sync

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]  # the checkout


def make_job(repo_name, digests):
    r = repo(repo_name)
    graph, selected = load_graph(r, digests)
    return jobs.create_job(r, plan_data(plan(graph, selected)))


def wait_finished(job, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in DeletionJob.FINISHED:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job still {job.status}: "
                         f"{list(job.items.values_list('digest', 'status', 'last_error'))}")


def test_transient_failures_are_retried_until_every_item_is_done(
        fault_proxy, registry_client, celery_worker, settings):
    settings.DELETE_RETRY_BASE_SECONDS, settings.DELETE_RETRY_MAX_SECONDS = 0.1, 0.4
    settings.REGISTRY_TIMEOUT = 1
    index, kids = multiarch(registry_client, "faults/app", tag="1.0")
    images = [image(registry_client, "faults/app", tag=f"t{n}", seed=f"f{n}")["digest"]
              for n in range(4)]
    sync()
    fault_proxy.add("DELETE", r"/manifests/", "status", 503, times=2)
    fault_proxy.add("DELETE", r"/manifests/", "status", 429, times=1)
    fault_proxy.add("DELETE", r"/manifests/", "reset", times=1)
    fault_proxy.add("DELETE", r"/manifests/", "delay", 1.5, times=1)
    job = make_job("faults/app", [index] + images)
    tasks.schedule(job.pk, 0)
    job = wait_finished(job)
    assert job.status == JobStatus.DONE
    items = list(job.items.all())
    assert len(items) == 7 and {i.status for i in items} == {ItemStatus.DONE}
    assert sum(i.attempts for i in items) >= 7 + 4
    for digest in [index] + images + [k["digest"] for k in kids]:
        assert registry_client.head_manifest("faults/app", digest) is None


def test_a_job_shows_retrying_with_the_last_error_while_the_registry_fails(
        fault_proxy, registry_client, settings):
    settings.DELETE_RETRY_BASE_SECONDS = 30
    digest = image(registry_client, "faults/slow", tag="t")["digest"]
    sync()
    fault_proxy.add("DELETE", r"/manifests/", "status", 503)
    job = make_job("faults/slow", [digest])
    status = jobs.process_job(job.pk, _client())
    item = job.items.get()
    assert status == JobStatus.RETRYING and item.status == ItemStatus.RETRYING
    assert "HTTP 503" in item.last_error and item.next_attempt_at is not None


def test_the_panel_shows_a_retry_on_every_poll_and_the_job_page_keeps_its_error(
        fault_proxy, registry_client, settings, maint):
    settings.DELETE_RETRY_BASE_SECONDS = settings.DELETE_RETRY_MAX_SECONDS = 30
    digest = image(registry_client, "faults/again", tag="t")["digest"]
    sync()
    fault_proxy.add("DELETE", r"/manifests/", "status", 503, times=1)
    job = make_job("faults/again", [digest])
    assert jobs.process_job(job.pk, _client()) == JobStatus.RETRYING
    item = job.items.get()
    panel = maint.get(f"/jobs/{job.pk}/progress").content.decode()
    assert "retrying</span> t: last error: " in panel and "HTTP 503" in panel
    assert re.search(r"attempt 1 failed; next attempt at <time datetime=\"[^\"]+\">"
                     r"\d\d:\d\d:\d\d UTC</time>, in (1\d|2\d|30) s\)", panel), panel
    # A worker tries it again: the panel still shows the last error while the attempt runs.
    DeletionItem.objects.filter(pk=item.pk).update(status=ItemStatus.RUNNING,
                                                   attempts=2)
    panel = maint.get(f"/jobs/{job.pk}/progress").content.decode()
    assert "HTTP 503" in panel and "(attempt 2 under way)" in panel
    # The retry succeeds: the item is done and keeps the error it went through.
    DeletionItem.objects.filter(pk=item.pk).update(status=ItemStatus.RETRYING,
                                                   next_attempt_at=timezone.now())
    assert jobs.process_job(job.pk, _client()) == JobStatus.DONE
    item.refresh_from_db()
    assert item.status == ItemStatus.DONE and "HTTP 503" in item.last_error
    page = maint.get(f"/jobs/{job.pk}").content.decode()
    assert "HTTP 503" in page and "(before it succeeded)" in page
    assert "HTTP 503" not in maint.get(f"/jobs/{job.pk}/progress").content.decode()


def test_a_job_past_its_deadline_fails_the_item_with_the_reason(
        fault_proxy, registry_client, settings):
    settings.DELETE_DEADLINE_HOURS = 0
    digest = image(registry_client, "faults/late", tag="t")["digest"]
    sync()
    fault_proxy.add("DELETE", r"/manifests/", "status", 503)
    job = make_job("faults/late", [digest])
    assert jobs.process_job(job.pk, _client()) == JobStatus.FAILED
    assert job.items.get().last_error.startswith("gave up after 1 attempts at the deadline")


def _client():
    from hubmgr.inventory.registries import client_for, default_registry

    return client_for(default_registry())


def database_url():
    """The test database, as a URL another process can open."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def celery_env(tmp_path, registry_url, redis_url):
    """A worker's environment: this test's database, broker and registry, and the production
    defaults for everything else (leases, heartbeats, the sweep's cadence)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBMGR_")}
    return dict(env, DJANGO_SETTINGS_MODULE="hubmgr.settings",
                HUBMGR_DATABASE_URL=database_url(), HUBMGR_DATA_DIR=str(tmp_path),
                HUBMGR_REDIS_URL=redis_url, HUBMGR_REGISTRY_URL=registry_url,
                HUBMGR_DELETE_CONCURRENCY="1")


def start_celery(tmp_path, env, name, *args):
    log = open(tmp_path / f"{name}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "hubmgr", *args,
                             "--loglevel", "info"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def start_worker(tmp_path, env, name):
    return start_celery(tmp_path, env, name, "worker", "--pool", "solo", "-n", f"{name}@%h")


def start_beat(tmp_path, env):
    return start_celery(tmp_path, env, "beat", "beat",
                        "--schedule", str(tmp_path / "celerybeat-schedule"))


def stop(*procs):
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow  # about 40 s of waiting on production timing: started first among its kind
def test_a_killed_workers_job_resumes_within_a_minute_with_production_timing(
        fault_proxy, registry_client, redis_url, tmp_path):
    """SIGKILL a worker in the middle of a DELETE; with the default lease (20 s), heartbeat
    (5 s) and sweep cadence (15 s, from a real beat), another worker sends the job's next
    DELETE well within a minute, and the job ends with every item done."""
    digests = [image(registry_client, "faults/kill", tag=f"t{n}", seed=f"k{n}")["digest"]
               for n in range(6)]
    sync()
    fault_proxy.add("DELETE", r"/manifests/", "delay", 0.8)
    job = make_job("faults/kill", digests)
    env = celery_env(tmp_path, fault_proxy.url, redis_url)
    first, beat = start_worker(tmp_path, env, "first"), start_beat(tmp_path, env)
    second = None
    try:
        tasks.schedule(job.pk, 0)
        deadline = time.monotonic() + 60
        while fault_proxy.count("DELETE", r"/manifests/") < 2:  # the second is in flight
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.01)
        killed_at = time.monotonic()
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = start_worker(tmp_path, env, "second")
        assert job.items.filter(status=ItemStatus.RUNNING).count() == 1  # orphaned claim

        while (resumed := fault_proxy.first_after(killed_at, "DELETE", r"/manifests/")) is None:
            assert time.monotonic() - killed_at < 60, \
                (tmp_path / "second.log").read_text()[-3000:]
            time.sleep(0.05)
        assert resumed - killed_at < 60
        job = wait_finished(job)
    finally:
        stop(*[p for p in (first, second, beat) if p])
    assert job.status == JobStatus.DONE
    assert {i.status for i in job.items.all()} == {ItemStatus.DONE}
    tasks.sweep()  # a finished job is never woken again
    job.refresh_from_db()
    assert job.wake_at is None
    for digest in digests:
        assert registry_client.head_manifest("faults/kill", digest) is None


def test_a_live_worker_keeps_the_claim_of_a_delete_that_hangs_past_its_lease(
        fault_proxy, registry_client, settings):
    """A DELETE slower than a whole lease: the job loop renews the claim, so a sweep running
    meanwhile releases nothing and the item is sent once."""
    settings.DELETE_CLAIM_SECONDS = 2  # renewed every 0.5 s (the loop wakes every second)
    digest = image(registry_client, "faults/hang", tag="t")["digest"]
    sync()
    fault_proxy.add("DELETE", r"/manifests/", "delay", 5)
    job = make_job("faults/hang", [digest])
    stopping, released = threading.Event(), []

    def sweep_meanwhile():
        try:
            while not stopping.wait(0.2):
                released.extend(jobs.release_expired_claims())
        finally:
            connection.close()

    sweeper = threading.Thread(target=sweep_meanwhile)
    sweeper.start()
    try:
        assert jobs.process_job(job.pk, _client()) == JobStatus.DONE
    finally:
        stopping.set()
        sweeper.join()
    assert released == []
    item = job.items.get()
    assert item.status == ItemStatus.DONE and item.attempts == 1
    assert fault_proxy.count("DELETE", r"/manifests/") == 1


def test_a_sweep_does_not_multiply_wake_ups(registry_client, registry, redis_url, settings):
    digest = image(registry_client, "faults/once", tag="t")["digest"]
    sync()
    job = make_job("faults/once", [digest])
    tasks.schedule(job.pk, 30)
    first = DeletionJob.objects.get(pk=job.pk).wake_at
    tasks.schedule(job.pk, 30)  # a second run of the job finishing: no second chain
    tasks.sweep()  # the wake-up is pending, not lost
    assert DeletionJob.objects.get(pk=job.pk).wake_at == first


def test_a_redis_restart_loses_no_job(registry, registry_client, redis_service, settings):
    from celery.contrib.testing.worker import start_worker

    from hubmgr import celery_app
    from hubmgr.deletion import actions

    settings.DELETE_CLAIM_SECONDS = 1
    digest = image(registry_client, "faults/redis", tag="t")["digest"]
    sync()
    redis_service.stop()
    try:
        job = actions.start(repo("faults/redis"), [digest])  # the wake-up cannot be queued
    finally:
        redis_service.start()
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.items.get().attempts == 0
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=20):
        time.sleep(1.5)  # the lost wake-up is overdue, and no message woke the job
        assert DeletionJob.objects.get(pk=job.pk).status == JobStatus.QUEUED
        tasks.sweep()
        job = wait_finished(job)
    assert job.status == JobStatus.DONE
    assert registry_client.head_manifest("faults/redis", digest) is None
