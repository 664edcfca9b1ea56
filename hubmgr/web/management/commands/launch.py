"""`make run`: everything a laptop needs, in the foreground, stopped by Ctrl-C.

Checks its port first, before it starts anything. Starts a private Redis unless
HUBMGR_REDIS_URL is set, and a demo registry with sample images unless HUBMGR_REGISTRY_URL is
set; migrates; creates an `admin` user the first time; then runs the web server, a Celery
worker with beat, and a first sync. The first time it seeds the demo registry, it also gives
hubmgr the demo's past (demo_history): its push events, and its access log imported with
`import_pulls --complete`, so that Stale, Active and Never pulled all show.

Ctrl-C (or SIGTERM, SIGHUP) stops everything it started and exits 0. When a child stops by
itself, it says which one, with its exit code and its log, stops the others and exits 1. The
process ids (its own as "manage.py launch", and its children's) are in DATA_DIR/pids while it
runs. The children run in sessions of their own: a Ctrl-C at the terminal reaches only this
command, which stops them in order.

`manage.py launch --collect` garbage-collects the demo registry of the launch running on the
same data folder: it asks it by SIGUSR1 (the request and the answer are files in
DATA_DIR/registry), and the launch restarts its registry read-only, collects, restarts it
read-write and checks the reclaim, so the deletion jobs' pending reclaim turns to reclaimed.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from hubmgr import devstack
from hubmgr.deletion.models import DeletionJob
from hubmgr.inventory.pulls import envelopes
from hubmgr.inventory.pulls.notifications import MEDIA_TYPES
from hubmgr.registry.client import RegistryClient
from hubmgr.units import human_size, plural

LAUNCHER = "manage.py launch"  # its own name in DATA_DIR/pids
DEMO_REGISTRY = "the demo registry"
CELERY_ROOT_WARNING = "You're running the worker with superuser privileges"
COLLECT_WAIT = 300  # seconds `launch --collect` waits for the running launch's answer


class Command(BaseCommand):
    help = "Run hubmgr locally with its embedded defaults (what `make run` calls)."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000",
                            help="where the web server listens (make run PORT=8001 sets the "
                                 "port)")
        parser.add_argument("--collect", action="store_true",
                            help="garbage-collect the demo registry of the launch running on "
                                 "this data folder (HUBMGR_DATA_DIR), then exit")

    def handle(self, addr, collect=False, **options):
        data = Path(settings.DATA_DIR)
        if collect:
            return self._ask_collect(data)
        _check_free(addr)
        data.mkdir(parents=True, exist_ok=True)
        self.services, self.procs = [], []  # procs: (name, Popen)
        self.registry, self.collect_asked = None, False
        self.env = dict(os.environ)
        self.manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        # SIGINT too: Python leaves it ignored when it started so (a background job of a
        # script, such as each pass of `make test`), and Ctrl-C must stop this all the same.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _interrupt)
        signal.signal(signal.SIGUSR1, self._collect_signal)
        try:
            self._run(addr, data)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C cannot cut this short
            self.stdout.write("\nStopping…")
            self._stop(data)
        self.stdout.write("Stopped everything this command started.")

    def _stop(self, data):
        """The children first (the worker still reaches Redis while it stops), then the
        services; each group asked at once, given 15 s in all and then killed, so that a loaded
        machine stops in seconds, not in the sum of every child's time."""
        _ended([proc for _, proc in reversed(self.procs)])
        _ended([service.process for service in reversed(self.services)])
        (data / "pids").unlink(missing_ok=True)

    def _run(self, addr, data):
        env = self.env
        token = settings.WEBHOOK_TOKEN or _kept_secret(data / "webhook_token")
        env["HUBMGR_WEBHOOK_TOKEN"] = settings.WEBHOOK_TOKEN = token
        if not os.environ.get("HUBMGR_REDIS_URL"):
            redis = devstack.start_redis(data / "redis", _port(6390), detach=True)
            self.services.append(redis)
            env["HUBMGR_REDIS_URL"] = redis.url
            self.stdout.write(f"Redis (private): {redis.url}")
        seeded = None
        if not settings.REGISTRY_URL:
            seeded = self._start_demo_registry(data / "registry", addr, token)
        if not settings.VERBOSE:
            # Quiet by default: hubmgr's warnings, not a line per notification or job item.
            # HUBMGR_VERBOSE=1 (or an explicit HUBMGR_LOG_LEVEL) brings them back.
            env.setdefault("HUBMGR_LOG_LEVEL", "WARNING")
        call_command("migrate", verbosity=0)
        password = self._first_user(data)
        self._start_web_and_worker(addr, data)
        self._write_pids(data / "pids")
        devstack.wait_for(lambda: requests.get(f"http://{addr}/login/", timeout=1).ok,
                          "the web server", timeout=60)
        self._manage("sync", "--no-progress")
        if seeded is not None:
            self._import_demo_history(addr, data / "registry", seeded)
            # Only now: a launch stopped before this seeds again next time (the same images,
            # and the same past: events are applied once, times only move forward).
            (data / "registry" / "seeded").touch()
        # Still all there: a web server that could not bind its port (another process took
        # it after the check above) has stopped by now.
        self._check_children()
        self.stdout.write(self.style.SUCCESS(f"\nhubmgr is running: http://{addr}/"))
        if password:
            self.stdout.write(f"Log in as admin / {password} (saved in {data / 'admin_password'})")
        else:
            self.stdout.write("Log in with your user (python manage.py createsuperuser adds one).")
        self.stdout.write("Ctrl-C stops everything this command started.")
        self._watch(data)

    def _start_demo_registry(self, root, addr, token):
        """Start the demo registry; the first time, push the samples into it first, with no
        notifications (they would say everything was pushed just now: the demo's past comes
        from demo_history). Answers the samples pushed now, or None."""
        notify = {"notify_url": f"http://{addr}/hooks/registry", "notify_token": token}
        seeded = None
        if (root / "seeded").exists():
            registry = devstack.start_registry(root, _port(5000), detach=True, **notify)
        else:
            registry = devstack.start_registry(root, _port(5000), detach=True)
            self.services.append(registry)
            self.stdout.write("Pushing sample images into the demo registry…")
            seeded = devstack.seed_samples(RegistryClient(registry.url))
            self.services.remove(registry)
            registry = devstack.restart_registry(registry, **notify)
        registry.name = DEMO_REGISTRY
        self.services.append(registry)
        self.registry = registry
        self.env["HUBMGR_REGISTRY_URL"] = settings.REGISTRY_URL = registry.url
        self.stdout.write(f"Demo registry: {registry.url} (data in {registry.root})")
        return seeded

    def _start_web_and_worker(self, addr, data):
        # Without HUBMGR_VERBOSE, the children's standard output goes nowhere: it carries
        # runserver's banner and Celery's shutdown notices only. Their errors, warnings and
        # (verbose) request lines are on standard error, which stays this terminal's.
        quiet = not settings.VERBOSE
        out = subprocess.DEVNULL if quiet else None
        self.procs.append(("the web server", subprocess.Popen(
            self.manage + ["runserver", addr, "--noreload", "--skip-checks"],  # checked here
            env={**self.env, "DJANGO_RUNSERVER_HIDE_WARNING": "true"} if quiet else self.env,
            stdout=out, start_new_session=True)))
        # Celery warns (a SecurityWarning) on every start as root, against pickled tasks run
        # as root; hubmgr's worker accepts JSON only (Celery's default accept_content), so
        # that warning does not apply to it. Only it is filtered, by the start of its text.
        self.procs.append(("the Celery worker", subprocess.Popen(
            [sys.executable, "-W", f"ignore:{CELERY_ROOT_WARNING}", "-m", "celery",
             "-A", "hubmgr"] + (["--quiet"] if quiet else [])
            + ["worker", "--beat", "--loglevel", "warning", "--concurrency", "2",
               "--schedule", str(data / "celerybeat-schedule")],
            env=self.env, cwd=settings.BASE_DIR, stdout=out, start_new_session=True)))

    def _manage(self, *args, capture=False):
        """Run a management command in a process of its own, with the children's settings."""
        return subprocess.run(self.manage + list(args), env=self.env, check=False, text=True,
                              capture_output=capture, start_new_session=True)

    def _import_demo_history(self, addr, root, seeded):
        """The demo's past: its push events through the webhook (applied by the worker, or
        here), then its access log through `import_pulls --complete`."""
        now = datetime.now(timezone.utc) - timedelta(minutes=1)
        events, lines = devstack.demo_history(RegistryClient(self.registry.url), seeded, now)
        answer = requests.post(
            f"http://{addr}/hooks/registry", json={"events": events}, timeout=30,
            headers={"Authorization": f"Bearer {self.env['HUBMGR_WEBHOOK_TOKEN']}",
                     "Content-Type": MEDIA_TYPES[0]})
        if not answer.ok:
            raise CommandError(f"The demo's push events were refused: {answer.status_code} "
                               f"{answer.text[:200]}")
        devstack.wait_for(lambda: envelopes.backlog()["pending"] == 0,
                          "the demo's push events to be applied", timeout=60)
        log = root / "demo-access.log"
        log.write_text("\n".join(lines) + "\n")
        done = self._manage("import_pulls", "--complete", "--json", "--no-progress", str(log),
                            capture=True)
        if done.returncode:
            raise CommandError(f"The demo's access log ({log}) was not imported: "
                               f"{(done.stderr or done.stdout).strip()}")
        self._manage("snapshot", capture=True)  # the overview's figures, with the window
        summary = json.loads(done.stdout)
        window = summary["window"]
        since = (window["to"] or window["from"] or "")[:10]
        self.stdout.write(
            f"Imported the demo's pull history ({log}): "
            f"{plural(summary['applied'], 'pull')} of "
            f"{plural(summary['manifests_updated'], 'manifest')} over "
            f"{plural((now - datetime.fromisoformat(summary['first'])).days, 'day')}; "
            f"pulls observed since {since or 'never'}.")

    def _children(self):
        """(name, process, log file or None) of everything this command started."""
        return ([(s.name, s.process, s.log) for s in self.services]
                + [(name, proc, None) for name, proc in self.procs])

    def _write_pids(self, path):
        pids = {LAUNCHER: os.getpid()}
        pids.update((name, proc.pid) for name, proc, _ in self._children())
        path.write_text(json.dumps(pids))

    def _watch(self, data):
        """Return only by raising: when any child stops, name it, its exit code and its log.
        The caller's cleanup then stops the others. Collects the demo registry when asked."""
        while True:
            self._check_children()
            if self.collect_asked:
                self.collect_asked = False
                self._collect(data)
            time.sleep(0.5)

    def _check_children(self):
        for name, proc, log in self._children():
            code = proc.poll()
            if code is not None:
                where = f"its log is {log}" if log else "its output is above"
                raise CommandError(f"{name} (pid {proc.pid}) stopped: {_exit(code)}; "
                                   f"{where}. Everything else was stopped too.")

    # ---- garbage collection of the demo registry ---------------------------------------------
    def _collect_signal(self, signum, frame):
        self.collect_asked = True  # done by _watch, between its checks

    def _collect(self, data):
        request, answer = data / "registry" / "collect.request", data / "registry" / "collect.json"
        token = request.read_text().strip() if request.exists() else ""
        result = {"token": token}
        if self.registry is None:
            result["error"] = ("this launch runs no demo registry (HUBMGR_REGISTRY_URL is set): "
                               "collect that registry as docs/operating.md says")
        elif DeletionJob.objects.unfinished().exists():
            result["error"] = ("a deletion job is still running: collect the demo registry "
                               "when it has finished (the registry is read-only meanwhile)")
        else:
            result.update(self._collect_registry(data))
        _write_json(answer, result)
        if "error" in result:
            self.stderr.write(f"Garbage collection not done: {result['error']}")

    def _collect_registry(self, data) -> dict:
        self.stdout.write("Collecting the demo registry's garbage (read-only meanwhile)…")
        index = self.services.index(self.registry)
        try:
            registry, freed, error = devstack.collect_registry(self.registry)
        except RuntimeError as exc:  # it did not start again
            raise CommandError(f"{DEMO_REGISTRY} did not start again after garbage "
                               f"collection ({exc}); its log is {self.registry.log}. "
                               "Everything else was stopped too.") from None
        self.services[index] = self.registry = registry
        self._write_pids(data / "pids")
        if error:
            return {"error": f"docker-registry garbage-collect failed: {error}"}
        check = self._manage("check_reclaim", capture=True)
        reclaim = " ".join((check.stdout or "").split("\n")).strip()
        if check.returncode:
            reclaim = (check.stderr or check.stdout).strip()
        summary = (f"Collected the demo registry: {human_size(freed)} of blobs freed on disk. "
                   f"{reclaim}").strip()
        self.stdout.write(summary)
        return {"freed_bytes": freed, "summary": summary}

    def _ask_collect(self, data):
        """`launch --collect`: ask the launch running on ``data`` to collect, and wait."""
        try:
            pids = json.loads((data / "pids").read_text())
        except (OSError, ValueError):
            pids = {}
        launcher = pids.get(LAUNCHER)
        if not launcher or not _alive(launcher):
            raise CommandError(f"No `make run` is running on {data}: start it first (or set "
                               "HUBMGR_DATA_DIR to the data folder of the one running).")
        if DEMO_REGISTRY not in pids:
            raise CommandError("That `make run` uses the registry at HUBMGR_REGISTRY_URL, not a "
                               "demo registry of its own: collect that registry as "
                               "docs/operating.md says (Garbage collection).")
        token = secrets.token_hex(8)
        request, answer = data / "registry" / "collect.request", data / "registry" / "collect.json"
        answer.unlink(missing_ok=True)
        request.write_text(token)
        os.kill(launcher, signal.SIGUSR1)
        deadline = time.monotonic() + COLLECT_WAIT
        while True:
            try:
                result = json.loads(answer.read_text())
                if result.get("token") == token:
                    break
            except (OSError, ValueError):
                pass
            if not _alive(launcher):
                raise CommandError("The `make run` stopped before it answered; see its output.")
            if time.monotonic() > deadline:
                raise CommandError(f"No answer from the `make run` (pid {launcher}) within "
                                   f"{COLLECT_WAIT} s; see its output.")
            time.sleep(0.2)
        if "error" in result:
            raise CommandError(f"Garbage collection not done: {result['error']}")
        self.stdout.write(result["summary"])

    def _first_user(self, data):
        users = get_user_model().objects
        if users.exists():
            saved = data / "admin_password"
            return saved.read_text().strip() if saved.exists() and \
                users.filter(username="admin").exists() else ""
        password = _kept_secret(data / "admin_password", 12)
        users.create_superuser("admin", "", password)
        return password


def _ended(procs, grace=15.0):
    """Ask each of ``procs`` to stop (SIGTERM), wait for them together for ``grace`` seconds
    at most, and kill those still running."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_json(path: Path, value):
    """Whole or not at all: a reader never sees half of it."""
    part = path.with_suffix(".part")
    part.write_text(json.dumps(value))
    part.replace(path)


def _exit(code):
    """How a child ended, from its return code (negative: the signal that killed it)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _kept_secret(path: Path, length=32) -> str:
    if not path.exists():
        path.write_text(secrets.token_urlsafe(length))
        path.chmod(0o600)
    return path.read_text().strip()


def _check_free(addr):
    """CommandError, one line, when ``addr`` is not an address or another process listens
    there (it would answer for hubmgr, and get its registry's notifications)."""
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"--addr {addr} is not HOST:PORT, e.g. 127.0.0.1:8001.")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as runserver binds
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            other = int(port) + 1 if int(port) < 65535 else 8001
            raise CommandError(
                f"Port {port} ({addr}) is not free ({exc.strerror}): stop what listens there, "
                f"or pick another port: make run PORT={other} (manage.py launch --addr "
                f"{host}:{other}).") from None


def _port(preferred):
    """The preferred port when it is free, so URLs stay the same between runs."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return devstack.free_port()
