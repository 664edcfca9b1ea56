"""Running hubmgr for a team: web processes, workers and one beat as separate processes that
share only PostgreSQL and Redis, and the compose file that scales them."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection

from hubmgr import devstack
from hubmgr.deletion.models import DeletionJob
from hubmgr.inventory.models import SyncRun
from hubmgr.inventory.tasks import reconcile

from tests.support.helpers import image
from tests.support.notifications import WEBHOOK_TOKEN
from tests.support.servers import FaultProxy

ROOT = Path(__file__).resolve().parents[2]  # the checkout
ON_POSTGRES = os.environ.get("HUBMGR_DATABASE_URL", "").startswith("postgres")


def _database_url():
    """The URL of the test database (pytest-django's test_<name>), for the subprocesses."""
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Stack:
    """Processes of one deployment, each with its own empty HUBMGR_DATA_DIR."""

    def __init__(self, root, env):
        self.root, self.env, self.procs = root, env, {}

    def start(self, name, *args):
        data = self.root / name
        data.mkdir()
        log = open(data / "log", "wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", *args], cwd=ROOT, env={**self.env, "HUBMGR_DATA_DIR": str(data)},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def log(self, name):
        return (self.root / name / "log").read_text(errors="replace")

    def check_alive(self):
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited:\n{self.log(name)[-3000:]}"

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def stack(tmp_path, redis_url, registry):
    proxy = FaultProxy(registry.url)
    # Each repository's tag listing takes a while, so both workers get some of the sync.
    proxy.add("GET", r"/tags/list", "delay", 0.3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBMGR_")}
    env.update(HUBMGR_DATABASE_URL=_database_url(), HUBMGR_REDIS_URL=redis_url,
               HUBMGR_REGISTRY_URL=proxy.url, HUBMGR_SECRET_KEY="scale-out-test-key",
               HUBMGR_WEBHOOK_TOKEN=WEBHOOK_TOKEN, HUBMGR_DELETE_SWEEP_SECONDS="1",
               HUBMGR_LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
    stack = Stack(tmp_path / "stack", env)
    stack.root.mkdir()
    stack.proxy = proxy
    stack.ports = [devstack.free_port(), devstack.free_port()]
    try:
        for n, port in enumerate(stack.ports, 1):
            stack.start(f"web{n}", "gunicorn", "hubmgr.wsgi", "--bind", f"127.0.0.1:{port}",
                        "--workers", "1")
        for n in (1, 2):
            stack.start(f"worker{n}", "celery", "-A", "hubmgr", "worker", "--pool", "solo",
                        "-n", f"worker{n}@%h", "--loglevel", "info")
        stack.start("beat", "celery", "-A", "hubmgr", "beat", "--loglevel", "info",
                    "--schedule", str(stack.root / "beat" / "celerybeat-schedule"))
        yield stack
    finally:
        stack.stop()
        proxy.close()


def _login(session, base, username, password):
    session.get(f"{base}/login/", timeout=10)
    resp = session.post(f"{base}/login/", timeout=10, allow_redirects=False, data={
        "username": username, "password": password,
        "csrfmiddlewaretoken": session.cookies["csrftoken"]})
    assert resp.status_code == 302, resp.text[:500]


@pytest.mark.skipif(not ON_POSTGRES, reason="several processes write only to PostgreSQL "
                    "(SQLite allows one writer); run with HUBMGR_DATABASE_URL=postgres://...")
@pytest.mark.django_db(transaction=True)
def test_two_webs_two_workers_and_a_beat_share_only_postgres_and_redis(
        stack, registry_client, maintainer, redis_url):
    from hubmgr import celery_app

    names = [f"team/app{n}" for n in range(8)]
    digests = {name: image(registry_client, name, tag="v1", seed=name)["digest"]
               for name in names}
    celery_app.control.purge()
    devstack.wait_for(lambda: stack.check_alive() is None and len(
        celery_app.control.ping(timeout=0.5)) == 2, "two workers", timeout=60)

    # The periodic reconcile (what beat sends) fans the sync out over both workers.
    reconcile.delay()
    devstack.wait_for(lambda: SyncRun.objects.filter(finished_at__isnull=False).exists(),
                      "the fanned-out sync", timeout=60)
    run = SyncRun.objects.get()
    assert run.error == "" and run.problems == [] and run.tags == 8 and run.repositories == 8
    workers = dict(run.repository_syncs.values_list("name", "worker"))
    assert set(workers) == set(names)
    assert {w.split("@")[0] for w in workers.values()} == {"worker1", "worker2"}, workers

    # A session made on web 1 works on web 2; a deletion started on web 1 progresses (on the
    # workers) and web 2 shows it.
    web1, web2 = (f"http://127.0.0.1:{port}" for port in stack.ports)
    devstack.wait_for(lambda: requests.get(f"{web2}/healthz", timeout=5).ok, "web 2")
    # The web processes check passwords with the default hashers (the tests' is MD5).
    maintainer.password = PBKDF2PasswordHasher().encode("pw-maria-123", "scaleout", 1000)
    maintainer.save(update_fields=["password"])
    session = requests.Session()
    _login(session, web1, "maria", "pw-maria-123")
    assert "team/app3" in session.get(f"{web2}/repositories/", timeout=10).text
    resp = session.post(f"{web1}/api/v1/repositories/team/app3/deletions",
                        json={"digests": [digests["team/app3"]]},
                        headers={"X-CSRFToken": session.cookies["csrftoken"]}, timeout=10)
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    devstack.wait_for(lambda: session.get(f"{web2}/api/v1/deletions/{job_id}", timeout=5)
                      .json()["status"] == "done", "the deletion, seen on web 2", timeout=60)
    assert DeletionJob.objects.get(pk=job_id).created_by == maintainer
    assert registry_client.head_manifest("team/app3", digests["team/app3"]) is None
    page = session.get(f"{web2}/jobs/{job_id}", timeout=10)
    assert page.status_code == 200 and "team/app3" in page.text

    # The registry's health that pages show is cached in the shared Redis, not per process.
    import redis

    assert redis.Redis.from_url(redis_url).keys("*registry-health*")
    # Beat runs its schedule against the same broker (the sweep, every second here).
    devstack.wait_for(lambda: "deletion-sweep" in stack.log("beat"), "beat's sweep",
                      timeout=30)
    for name in ("web1", "web2", "worker1", "worker2"):
        assert os.listdir(stack.root / name) == ["log"], f"{name} wrote to its data folder"
    stack.check_alive()


# ---- the compose file ------------------------------------------------------------------------
def _compose_config(tmp_path):
    """`docker-compose config` (Debian's, a Python program) as a dict: its normalised YAML
    read by the YAML module docker-compose itself runs with."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    out = subprocess.run(["docker-compose", "config"], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    interpreter = Path(shutil.which("docker-compose")).read_text().splitlines()[0][2:].strip()
    parsed = subprocess.run([interpreter, "-c", "import json, sys, yaml; "
                             "print(json.dumps(yaml.safe_load(sys.stdin)))"],
                            input=out, capture_output=True, text=True, check=True).stdout
    return json.loads(parsed)


@pytest.mark.skipif(not shutil.which("docker-compose"),
                    reason="Debian's docker-compose is not installed (make test installs it)")
def test_the_compose_file_scales_workers_and_keeps_no_local_state(tmp_path):
    services = _compose_config(tmp_path)["services"]
    for name, service in services.items():
        assert "container_name" not in service, f"{name}: a fixed name cannot be scaled"
        assert "healthcheck" in service, f"{name} has no healthcheck"
    # Only the single web entry point and the demo registry publish a host port.
    assert {n for n, s in services.items() if s.get("ports")} == {"web", "registry"}
    hubmgr = ("web", "worker", "beat")
    for name in hubmgr:
        assert not services[name].get("volumes"), f"{name} keeps state on a volume"
        env = services[name]["environment"]
        assert env["HUBMGR_DATABASE_URL"].startswith("postgres://")
        assert env["HUBMGR_REDIS_URL"].startswith("redis://")
    assert len({services[n]["environment"]["HUBMGR_DATABASE_URL"] for n in hubmgr}) == 1
    assert len({services[n]["environment"]["HUBMGR_REDIS_URL"] for n in hubmgr}) == 1
    # Each worker container checks its own Celery node, whatever the scale.
    ping = services["worker"]["healthcheck"]["test"]
    assert "ping" in ping and any(re.search(r"celery@\$\$?HOSTNAME", part) for part in ping)
    assert "--schedule /tmp/" in str(services["beat"]["command"])
