"""`make run` (manage.py launch) as a user runs it: a service that dies is named, with its log,
and nothing it started is left running."""

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests

from hubmgr import devstack
from tests.support.servers import serve

ROOT = Path(__file__).resolve().parents[2]  # the checkout
# `manage.py launch` starts its own registry and Redis in processes of its own.
pytestmark = [pytest.mark.registry, pytest.mark.slow]


class Launch:
    """manage.py launch in a subprocess, its output collected as it comes."""

    def __init__(self, data, url=None, seed=False, **environ):
        data.mkdir()
        if not seed:  # no sample images (nor their history): faster, and mostly not the point
            (data / "registry").mkdir()
            (data / "registry" / "seeded").touch()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBMGR_")}
        env.update(HUBMGR_DATA_DIR=str(data), PYTHONUNBUFFERED="1", **environ)
        self.data, self.output = data, []
        self.url = url or f"http://127.0.0.1:{devstack.free_port()}"
        self.env = env
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "launch", "--addr", self.url.removeprefix("http://")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)  # a process group of its own, as a terminal gives make
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.output.append(line)

    def text(self):
        return "".join(self.output)

    def get(self, path):
        """GET a page of the stack; a failure to connect shows what launch printed."""
        try:
            return requests.get(f"{self.url}{path}", timeout=10)
        except requests.ConnectionError as exc:
            raise AssertionError(f"{exc}\n--- launch's output:\n{self.text()}") from None

    def wait_for_output(self, text, timeout):
        deadline = time.monotonic() + timeout
        while text not in self.text():
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.1)

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def started_from(data):
    """Processes whose command line names the data folder (registry, Redis, Celery)."""
    found = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


@contextmanager
def one_stack_at_a_time():
    """One launch stack at a time on this machine: `launch` prefers the same ports each time
    (5000, 6390...), and two stacks started at once (make test's SQLite and PostgreSQL
    passes) can both find one free and clash."""
    with open(Path(tempfile.gettempdir()) / "hubmgr-test-launch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture
def launch(tmp_path):
    with one_stack_at_a_time():
        launched = Launch(tmp_path / "data")
        yield launched
        launched.close()


def test_launch_stops_everything_and_names_the_registry_when_the_registry_dies(launch):
    launch.wait_for_output("hubmgr is running", timeout=120)
    pids = json.loads((launch.data / "pids").read_text())
    assert set(pids) == {"manage.py launch", "Redis", "the demo registry", "the web server",
                         "the Celery worker"}
    assert pids["manage.py launch"] == launch.proc.pid
    del pids["manage.py launch"]

    os.kill(pids["the demo registry"], signal.SIGKILL)
    code = launch.proc.wait(timeout=10)  # noticed within a second; stopping takes a few more
    launch.reader.join(5)
    output = launch.text()
    assert code != 0
    assert "the demo registry" in output and "killed by SIGKILL" in output
    assert str(launch.data / "registry" / "registry.log") in output
    assert [name for name, pid in pids.items() if alive(pid)] == []
    assert started_from(launch.data) == []
    assert not (launch.data / "pids").exists()


def test_launch_names_redis_and_its_log_when_redis_dies(launch):
    launch.wait_for_output("hubmgr is running", timeout=120)
    pids = json.loads((launch.data / "pids").read_text())
    del pids["manage.py launch"]
    started = time.monotonic()
    os.kill(pids["Redis"], signal.SIGKILL)
    assert launch.proc.wait(timeout=10) != 0
    launch.reader.join(5)
    assert time.monotonic() - started < 10
    assert "Redis" in launch.text() and str(launch.data / "redis" / "redis.log") in launch.text()
    assert [name for name, pid in pids.items() if alive(pid)] == []
    assert started_from(launch.data) == []


@pytest.mark.parametrize("verbose", [False, True])
def test_launch_prints_a_line_per_request_only_when_verbose(tmp_path, verbose):
    with one_stack_at_a_time():
        verbose_launch(tmp_path, verbose)


# What a normal start printed before issue 24: runserver's banner and Celery's warning as root.
BANNER = ("Performing system checks", "Starting development server", "Django version",
          "Quit the server with", "This is a development server", "SecurityWarning",
          "superuser privileges", "Warm shutdown")


def verbose_launch(tmp_path, verbose):
    launch = Launch(tmp_path / "data", **({"HUBMGR_VERBOSE": "1"} if verbose else {}))
    try:
        launch.wait_for_output("hubmgr is running", timeout=120)
        for _ in range(3):
            assert launch.get("/login/").ok
        assert launch.get("/no-such-page").status_code == 404
        favicon = launch.get("/favicon.ico")  # follows the redirect to the static file
        assert favicon.ok and favicon.headers["Content-Type"] == "image/svg+xml"
        if verbose:
            launch.wait_for_output('"GET /login/ HTTP/1.1" 200', timeout=10)
        launch.wait_for_output('"GET /no-such-page HTTP/1.1" 404', timeout=10)  # always
        text = launch.text()
        assert text.count('"GET /login/ HTTP/1.1" 200') == (4 if verbose else 0), text
        assert ("This is a development server" in text) is verbose
        assert ("INFO hubmgr.sync sync run=" in text) is verbose
        # hubmgr's own lines are printed once, not again by the worker's root handler.
        assert "/ForkPoolWorker" not in text and "/MainProcess]" not in text
        assert "/favicon.ico" not in text or verbose
        if not verbose:
            # A normal start: what it started, the one sync line, where to log in, the 404.
            assert [line for line in BANNER if line in text] == [], text
            assert "Synced 0 repositories, 0 tags; read 0 manifests" in text
            ctrl_c_stops_everything_with_status_0(launch)
    finally:
        launch.close()


def ctrl_c_stops_everything_with_status_0(launch):
    """As a terminal's Ctrl-C does, SIGINT to the whole process group `make run` runs in."""
    pids = json.loads((launch.data / "pids").read_text())
    os.killpg(launch.proc.pid, signal.SIGINT)
    try:
        code = launch.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("still running 60 s after SIGINT; it printed:\n" + launch.text())
    assert code == 0
    launch.reader.join(5)
    text = launch.text()
    assert "CommandError" not in text and "Traceback" not in text, text
    assert text.rstrip().endswith("Stopped everything this command started."), text
    assert [name for name, pid in pids.items() if alive(pid)] == []
    assert started_from(launch.data) == []
    assert not (launch.data / "pids").exists()


class AnswersEverything(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_launch_stops_and_says_so_when_its_port_is_taken_by_another_server(tmp_path):
    """Another process holds the port and would answer for it: launch says so, in one line
    naming the port and how to pick another, and starts nothing: no Redis, no registry, no
    sample images, rather than saying hubmgr is running there."""
    other = serve(AnswersEverything)
    port = other.url.rsplit(":", 1)[1]
    try:
        with one_stack_at_a_time():
            launch = Launch(tmp_path / "data", url=other.url, seed=True)
            try:
                assert launch.proc.wait(120) != 0
                launch.reader.join(5)
                lines = launch.text().strip().splitlines()
                assert len(lines) == 1, lines
                assert f"Port {port} (127.0.0.1:{port}) is not free" in lines[0]
                assert f"make run PORT={int(port) + 1}" in lines[0]
            finally:
                launch.close()
    finally:
        other.shutdown()
        other.server_close()
    assert started_from(tmp_path / "data") == []
    assert not (tmp_path / "data" / "registry").exists()
    assert not (tmp_path / "data" / "redis").exists()


def logged_in(launch):
    password = (launch.data / "admin_password").read_text().strip()
    session = requests.Session()
    page = session.get(f"{launch.url}/login/", timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    session.post(f"{launch.url}/login/", timeout=10, headers={"Referer": f"{launch.url}/login/"},
                 data={"username": "admin", "password": password, "csrfmiddlewaretoken": csrf})
    return session


def printed(launch, prefix):
    """What launch printed after ``prefix`` on its line, e.g. the demo registry's URL."""
    return re.search(rf"^{re.escape(prefix)}(\S+)", launch.text(), re.M).group(1)


def test_the_demo_shows_every_state_and_collecting_it_reclaims_a_deletion(tmp_path):
    """The first start seeds the demo registry and its past: Active, Stale and Never pulled
    items, none Unknown. `launch --collect` then frees what a deletion job deleted, on disk,
    and the job's pending reclaim turns to reclaimed."""
    with one_stack_at_a_time():
        launch = Launch(tmp_path / "data", seed=True)
        try:
            demo_and_collect(launch)
        finally:
            launch.close()


def demo_and_collect(launch):
    launch.wait_for_output("hubmgr is running", timeout=300)
    assert "Imported the demo's pull history" in launch.text()
    session = logged_in(launch)
    states, since = {}, None
    for repo in ("library/alpine", "team/api", "team/worker", "charts/web"):
        page = session.get(f"{launch.url}/api/v1/repositories/{repo}/images", timeout=10).json()
        since = page["pull_data_since"]
        for item in page["results"]:
            name = f"{repo}:{','.join(item['tags']) or 'untagged'}"
            states[name] = (item["stale"], item["never_pulled"])
    active, stale, never = (False, False), (True, False), (True, True)
    assert states == {
        "library/alpine:3.20,latest": active, "library/alpine:3.19": stale,
        "library/alpine:untagged": stale,  # the build 3.19 replaced, known from push events
        "team/api:1.5.0,stable": active, "team/api:1.4.0": never, "team/api:1.3.0": active,
        "team/api:1.2.0": never, "team/api:1.1.0": stale,
        "team/worker:nightly-3": active, "team/worker:nightly-2": (False, True),
        "team/worker:nightly-1": (False, True), "charts/web:1.0.0": never}
    assert datetime.fromisoformat(since) < datetime.now(timezone.utc) - timedelta(days=600)

    env = {**launch.env, "HUBMGR_REGISTRY_URL": printed(launch, "Demo registry: "),
           "HUBMGR_REDIS_URL": printed(launch, "Redis (private): ")}
    deleted = manage(env, "delete", "team/api", "--search", "1.1.0")
    job = int(re.search(r"^Job (\d+) done: 1 deleted", deleted, re.M).group(1))
    reclaim = session.get(f"{launch.url}/api/v1/deletions/{job}", timeout=10).json()["reclaim"]
    assert reclaim["state"] == "pending" and reclaim["freed_bytes"] > 0
    root = launch.data / "registry"
    before = devstack.blob_bytes(root)

    collected = manage(launch.env, "launch", "--collect")
    assert collected.startswith("Collected the demo registry:"), collected
    assert before - devstack.blob_bytes(root) == reclaim["freed_bytes"]
    after = session.get(f"{launch.url}/api/v1/deletions/{job}", timeout=10).json()["reclaim"]
    assert after["state"] == "reclaimed"
    assert after["reclaimed_bytes"] == reclaim["freed_bytes"]
    assert launch.get("/login/").ok and launch.proc.poll() is None  # still running
    pids = json.loads((launch.data / "pids").read_text())
    assert alive(pids["the demo registry"])  # the registry as it was started again


def manage(env, *args):
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
