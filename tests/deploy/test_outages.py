"""Outages of the services hubmgr stands on: a Redis that hangs (stopped with SIGSTOP: it
accepts connections and never answers), and PostgreSQL dropping the app's connections."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from django.db import connection

from hubmgr import devstack
from hubmgr.policies.models import PolicyRun

from tests.support.factories import policy_inventory, sample_repo
from tests.support.helpers import image
from tests.support.notifications import WEBHOOK_TOKEN

ROOT = Path(__file__).resolve().parents[2]  # the checkout
ON_POSTGRES = os.environ.get("HUBMGR_DATABASE_URL", "").startswith("postgres")
# A page must answer as it does with Redis down (refused), not wait on a server that is hung.
BOUND_SECONDS = 10


@contextmanager
def hung(redis_service):
    """Redis stopped in its tracks: the kernel still completes TCP connections, nothing
    answers. Always continued afterwards, whatever the test did."""
    pid = redis_service.service.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def redis_cache(settings, redis_service):
    """The shared cache in the private Redis, as settings.py configures it with
    HUBMGR_REDIS_URL set (the compose stack)."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": redis_service.url, "KEY_PREFIX": "hubmgr-cache",
                                   "OPTIONS": settings.REDIS_CLIENT_OPTIONS}}


def timed(call):
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


@pytest.mark.django_db
def test_healthz_answers_quickly_that_a_hung_broker_is_failing(client, redis_service,
                                                               redis_cache):
    with hung(redis_service):
        resp, seconds = timed(lambda: client.get("/healthz"))
    assert seconds < BOUND_SECONDS, seconds
    body = resp.json()
    assert resp.status_code == 503 and body["database"] == "ok" and body["broker"] != "ok"
    assert client.get("/healthz").json()["broker"] == "ok"  # and well again once it answers


@pytest.mark.django_db
def test_starting_a_policy_run_on_a_hung_broker_is_a_quick_503(maint, redis_service,
                                                                redis_cache):
    policy_inventory()
    resp = maint.post("/api/v1/policies", json.dumps({
        "name": "builds", "include": "team/*", "remove_tag_regex": "^build-",
        "remove_tag_days": 0, "keep_last": 2, "remove_untagged_days": 7}),
        content_type="application/json")
    assert resp.status_code == 201, resp.content
    made = resp.json()
    with hung(redis_service):
        resp, seconds = timed(lambda: maint.post(f"{made['url']}/runs", "{}",
                                                 content_type="application/json"))
    assert seconds < BOUND_SECONDS, seconds
    assert resp.status_code == 503 and "unavailable" in resp.json()["error"]
    assert not PolicyRun.objects.exists()


@pytest.mark.django_db
def test_sync_now_on_a_hung_broker_says_so_quickly(maint, registry_client, redis_service,
                                                   redis_cache):
    image(registry_client, "team/app", tag="1.0")
    with hung(redis_service):
        resp, seconds = timed(lambda: maint.post("/sync/", HTTP_HX_REQUEST="true"))
    assert seconds < BOUND_SECONDS, seconds
    assert resp.status_code == 200
    assert "the task queue (Redis) is not answering" in resp.content.decode()


@pytest.mark.django_db
def test_the_image_table_answers_while_redis_hangs(logged_in, registry, redis_service,
                                                   redis_cache):
    sample_repo()
    with hung(redis_service):
        resp, seconds = timed(lambda: logged_in.get("/repositories/team/app"))
    assert seconds < BOUND_SECONDS, seconds
    assert resp.status_code == 200 and "team/app" in resp.content.decode()


@pytest.mark.django_db
def test_the_webhook_stores_an_envelope_while_redis_hangs(client, redis_service, redis_cache):
    from hubmgr.inventory import tasks
    from hubmgr.inventory.models import QueuedEnvelope

    tasks.forget_wake_state()
    body = json.dumps({"events": [{"id": "e1", "action": "pull", "timestamp":
                                   "2026-12-01T00:00:00Z", "target": {
                                       "repository": "team/app", "mediaType":
                                       "application/vnd.oci.image.manifest.v1+json",
                                       "digest": "sha256:" + "a" * 64}}]})
    with hung(redis_service):
        resp, seconds = timed(lambda: client.post(
            "/hooks/registry", body, content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {WEBHOOK_TOKEN}"))
    tasks.forget_wake_state()  # the hang paused wake-ups; later tests start afresh
    assert seconds < BOUND_SECONDS, seconds
    assert resp.status_code == 200 and QueuedEnvelope.objects.count() == 1


# ---- PostgreSQL dropping the app's connections ---------------------------------------------

@pytest.fixture
def gunicorn(tmp_path, settings):
    """hubmgr under gunicorn as the image runs it (its gunicorn.conf.py, threads that keep their
    database connections for CONN_MAX_AGE), on the test database."""
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    port = devstack.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBMGR_")}
    env.update(HUBMGR_DATABASE_URL=f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:"
                                   f"{db['PORT'] or 5432}/{db['NAME']}",
               HUBMGR_SECRET_KEY=settings.SECRET_KEY, HUBMGR_DATA_DIR=str(tmp_path))
    log = open(tmp_path / "gunicorn.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "hubmgr.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--threads", "4"], cwd=ROOT, env=env, stdout=log,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        devstack.wait_for(lambda: requests.get(f"{url}/login/", timeout=2), "gunicorn")
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


# SQLite has no server to drop connections, and keeps none between requests (CONN_MAX_AGE 0).
@pytest.mark.postgres
@pytest.mark.slow  # gunicorn in a process of its own
@pytest.mark.django_db(transaction=True)
def test_requests_after_the_database_drops_its_connections_all_answer(gunicorn, client, user):
    import psycopg

    sample_repo()
    client.force_login(user)
    cookies = {"sessionid": client.cookies["sessionid"].value}

    def fetch_all(n):
        """n requests for the image table (sessions, users, the inventory: all from the
        database), 4 at a time so that every thread holds a connection."""
        def one(_):
            resp = requests.get(f"{gunicorn}/repositories/team/app", cookies=cookies,
                                timeout=10, allow_redirects=False)
            return resp.status_code
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(one, range(n)))

    assert set(fetch_all(16)) == {200}
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432,
                         user=db["USER"], password=db["PASSWORD"] or None, dbname=db["NAME"],
                         autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s "
            "AND pid <> pg_backend_pid() AND pid <> %s",
            [db["NAME"], connection.connection.info.backend_pid]).fetchone()[0]
    assert killed >= 1  # gunicorn's threads' connections
    statuses = fetch_all(32)
    assert statuses == [200] * 32, statuses
