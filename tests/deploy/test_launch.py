"""`make run` (manage.py launch) as a user runs it: a service that dies is named, with its log,
and nothing it started is left running."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
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

    def __init__(self, data, url=None, **environ):
        data.mkdir()
        (data / "registry").mkdir()
        (data / "registry" / "seeded").touch()  # no sample images: faster, and not the point
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBMGR_")}
        env.update(HUBMGR_DATA_DIR=str(data), PYTHONUNBUFFERED="1", **environ)
        self.data, self.output = data, []
        self.url = url or f"http://127.0.0.1:{devstack.free_port()}"
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "launch", "--addr", self.url.removeprefix("http://")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
    assert set(pids) == {"Redis", "the demo registry", "the web server", "the Celery worker"}

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


def verbose_launch(tmp_path, verbose):
    launch = Launch(tmp_path / "data", **({"HUBMGR_VERBOSE": "1"} if verbose else {}))
    try:
        launch.wait_for_output("hubmgr is running", timeout=120)
        for _ in range(3):
            assert launch.get("/login/").ok
        assert launch.get("/no-such-page").status_code == 404
        if verbose:
            launch.wait_for_output('"GET /login/ HTTP/1.1" 200', timeout=10)
        launch.wait_for_output('"GET /no-such-page HTTP/1.1" 404', timeout=10)  # always
        text = launch.text()
        assert text.count('"GET /login/ HTTP/1.1" 200') == (4 if verbose else 0), text
        assert ("This is a development server" in text) is verbose
        assert ("INFO hubmgr.sync sync run=" in text) is verbose
        # hubmgr's own lines are printed once, not again by the worker's root handler.
        assert "/ForkPoolWorker" not in text and "/MainProcess]" not in text
    finally:
        launch.close()


class AnswersEverything(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_launch_stops_and_says_so_when_its_port_is_taken_by_another_server(tmp_path):
    """Another process holds the port and would answer for it: launch says so and starts
    nothing, rather than saying hubmgr is running there."""
    other = serve(AnswersEverything)
    try:
        with one_stack_at_a_time():
            launch = Launch(tmp_path / "data", url=other.url)
            try:
                assert launch.proc.wait(120) != 0
                launch.reader.join(5)
                text = launch.text()
                assert "hubmgr is running" not in text
                assert f"{other.url.removeprefix('http://')} is already in use" in text, text
            finally:
                launch.close()
    finally:
        other.shutdown()
        other.server_close()
    assert started_from(tmp_path / "data") == []
