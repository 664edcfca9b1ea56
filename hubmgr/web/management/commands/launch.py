"""`make run`: everything a laptop needs, in the foreground, stopped by Ctrl-C.

Starts a private Redis unless HUBMGR_REDIS_URL is set, and a demo registry with sample images
unless HUBMGR_REGISTRY_URL is set; migrates; creates an `admin` user the first time; then runs
the web server, a Celery worker with beat, and a first sync. When any of these stops, it says
which one, with its exit code and its log, stops the others and exits with status 1. The
children's process ids are in DATA_DIR/pids while it runs.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from hubmgr import devstack
from hubmgr.registry.client import RegistryClient


class Command(BaseCommand):
    help = "Run hubmgr locally with its embedded defaults (what `make run` calls)."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000")

    def handle(self, addr, **options):
        _check_free(addr)
        data = Path(settings.DATA_DIR)
        data.mkdir(parents=True, exist_ok=True)
        self.services, self.procs = [], []  # procs: (name, Popen)
        env = dict(os.environ)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            self._run(addr, data, env)
        except KeyboardInterrupt:
            pass
        finally:
            self.stdout.write("\nStopping…")
            for _, proc in reversed(self.procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for _, proc in self.procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for service in reversed(self.services):
                service.stop()
            (data / "pids").unlink(missing_ok=True)

    def _run(self, addr, data, env):
        token = settings.WEBHOOK_TOKEN or _kept_secret(data / "webhook_token")
        env["HUBMGR_WEBHOOK_TOKEN"] = settings.WEBHOOK_TOKEN = token
        if not os.environ.get("HUBMGR_REDIS_URL"):
            redis = devstack.start_redis(data / "redis", _port(6390))
            self.services.append(redis)
            env["HUBMGR_REDIS_URL"] = redis.url
            self.stdout.write(f"Redis (private): {redis.url}")
        demo = not settings.REGISTRY_URL
        if demo:
            registry = devstack.start_registry(
                data / "registry", _port(5000),
                notify_url=f"http://{addr}/hooks/registry", notify_token=token)
            registry.name = "the demo registry"
            self.services.append(registry)
            env["HUBMGR_REGISTRY_URL"] = settings.REGISTRY_URL = registry.url
            self.stdout.write(f"Demo registry: {registry.url} (data in {registry.root})")

        if not settings.VERBOSE:
            # Quiet by default: hubmgr's warnings, not a line per notification or job item,
            # and runserver's warning that it is a development server (so is `make run`).
            # HUBMGR_VERBOSE=1 (or an explicit HUBMGR_LOG_LEVEL) brings them back.
            env.setdefault("HUBMGR_LOG_LEVEL", "WARNING")
            env.setdefault("DJANGO_RUNSERVER_HIDE_WARNING", "true")
        call_command("migrate", verbosity=0)
        password = self._first_user(data)
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        self.procs.append(("the web server", subprocess.Popen(
            manage + ["runserver", addr, "--noreload"], env=env)))
        self.procs.append(("the Celery worker", subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "hubmgr"] + ([] if settings.VERBOSE else
                                                                ["--quiet"])
            + ["worker", "--beat", "--loglevel", "warning", "--concurrency", "2",
               "--schedule", str(data / "celerybeat-schedule")],
            env=env, cwd=settings.BASE_DIR)))
        self._write_pids(data / "pids")
        devstack.wait_for(lambda: requests.get(f"http://{addr}/login/", timeout=1).ok,
                          "the web server", timeout=60)
        if demo and not (data / "registry" / "seeded").exists():
            self.stdout.write("Pushing sample images into the demo registry…")
            devstack.seed_samples(RegistryClient(settings.REGISTRY_URL))
            (data / "registry" / "seeded").touch()
        subprocess.run(manage + ["sync", "--no-progress"], env=env, check=False)
        # Still all there: a web server that could not bind its port (another process holds
        # it, and may even have answered for it above) has stopped by now.
        self._check_children()
        self.stdout.write(self.style.SUCCESS(f"\nhubmgr is running: http://{addr}/"))
        if password:
            self.stdout.write(f"Log in as admin / {password} (saved in {data / 'admin_password'})")
        else:
            self.stdout.write("Log in with your user (python manage.py createsuperuser adds one).")
        self.stdout.write("Ctrl-C stops everything this command started.")
        self._watch()

    def _children(self):
        """(name, process, log file or None) of everything this command started."""
        return ([(s.name, s.process, s.log) for s in self.services]
                + [(name, proc, None) for name, proc in self.procs])

    def _write_pids(self, path):
        path.write_text(json.dumps({name: proc.pid for name, proc, _ in self._children()}))

    def _watch(self):
        """Return only by raising: when any child stops, name it, its exit code and its log.
        The caller's cleanup then stops the others."""
        while True:
            self._check_children()
            time.sleep(0.5)

    def _check_children(self):
        for name, proc, log in self._children():
            code = proc.poll()
            if code is not None:
                where = f"its log is {log}" if log else "its output is above"
                raise CommandError(f"{name} (pid {proc.pid}) stopped: {_exit(code)}; "
                                   f"{where}. Everything else was stopped too.")

    def _first_user(self, data):
        users = get_user_model().objects
        if users.exists():
            saved = data / "admin_password"
            return saved.read_text().strip() if saved.exists() and \
                users.filter(username="admin").exists() else ""
        password = _kept_secret(data / "admin_password", 12)
        users.create_superuser("admin", "", password)
        return password


def _interrupt(signum, frame):
    raise KeyboardInterrupt


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
    """CommandError when another process listens on ``addr`` (it would answer for hubmgr)."""
    host, _, port = addr.rpartition(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as runserver binds
        try:
            sock.bind((host or "127.0.0.1", int(port)))
        except (OSError, ValueError) as exc:
            raise CommandError(f"{addr} is already in use or not an address ({exc}): stop "
                               "what listens there, or choose another with --addr, e.g. "
                               "manage.py launch --addr 127.0.0.1:8001") from None


def _port(preferred):
    """The preferred port when it is free, so URLs stay the same between runs."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return devstack.free_port()
