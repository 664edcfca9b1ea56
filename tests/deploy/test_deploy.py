"""What running hubmgr for a team relies on: the compose file, .env.example, /healthz, roles."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.contrib.auth.models import Group

from hubmgr import devstack

from tests.support.factories import sample_repo

ROOT = Path(__file__).resolve().parents[2]  # the checkout


def test_every_setting_is_documented_in_env_example():
    settings_py = (ROOT / "hubmgr" / "settings.py").read_text()
    read = set(re.findall(r'env_\w+\("(HUBMGR_\w+)"', settings_py))
    assert len(read) >= 20
    documented = set(re.findall(r"\b(HUBMGR_\w+)=", (ROOT / ".env.example").read_text()))
    assert read - documented == set()


@pytest.mark.skipif(not shutil.which("docker-compose"),
                    reason="Debian's docker-compose is not installed (make test installs it)")
def test_the_compose_file_is_valid(tmp_path):
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = subprocess.run(["docker-compose", "config", "-q"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    services = subprocess.run(["docker-compose", "config", "--services"], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout.split()
    assert set(services) == {"web", "worker", "beat", "redis", "postgres", "registry"}


@pytest.mark.django_db
@pytest.mark.redis  # its broker must answer
def test_healthz_is_200_when_everything_answers(client, registry):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "database": "ok", "broker": "ok", "registry": "ok",
                           "notification_queue": {"pending": 0, "failed": 0,
                                                  "oldest_seconds": 0},
                           "notifications": "none received"}  # a warning: still 200


@pytest.mark.redis  # its broker must answer
@pytest.mark.django_db
def test_healthz_says_which_part_failed(client, settings):
    settings.REGISTRY_URL = f"http://127.0.0.1:{devstack.free_port()}"
    resp = client.get("/healthz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["database"] == "ok" and body["broker"] == "ok"
    assert "Cannot connect to the registry" in body["registry"]


@pytest.mark.django_db
def test_healthz_reports_a_broker_that_is_down(client, registry):
    from hubmgr import celery_app

    previous = celery_app.conf.broker_url
    celery_app.conf.broker_url = f"redis://127.0.0.1:{devstack.free_port()}/0"
    try:
        body = client.get("/healthz").json()
    finally:
        celery_app.conf.broker_url = previous
    assert body["status"] == "failing" and body["broker"] != "ok" and body["registry"] == "ok"


@pytest.mark.django_db
def test_the_maintainers_group_may_delete_and_viewers_may_not(client, django_user_model):
    sample_repo()
    group = Group.objects.get(name="maintainers")
    assert [p.codename for p in group.permissions.all()] == ["delete_images"]
    viewer = django_user_model.objects.create_user("v", password="pw-v-12345")
    maintainer = django_user_model.objects.create_user("m", password="pw-m-12345")
    maintainer.groups.add(group)
    body = {"all_matching": "1", "filter": "untagged"}
    client.force_login(viewer)
    assert client.get("/repositories/team/app").status_code == 200
    assert client.post("/repositories/team/app/-/preview", body).status_code == 403
    client.force_login(maintainer)
    assert client.post("/repositories/team/app/-/preview", body).status_code == 200


def test_importing_the_settings_writes_nothing_and_manage_py_makes_one_key(tmp_path):
    """The laptop's data folder and secret key are made by the entry points, once, and every
    process of the install then reads the same key."""
    import os
    import sys

    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBMGR_")}
    env.update(HUBMGR_DATA_DIR=str(data), DJANGO_SETTINGS_MODULE="hubmgr.settings")
    key = ["-c", "import django; django.setup(); from django.conf import settings; "
                 "print(settings.SECRET_KEY)"]

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True,
                              capture_output=True, text=True).stdout.strip()

    first, second = run(*key), run(*key)
    assert not data.exists() and first != second  # (a key of its own, for each process)
    run("manage.py", "check")
    made = (data / "secret_key").read_text().strip()
    assert oct((data / "secret_key").stat().st_mode & 0o777) == "0o600"
    run("manage.py", "check")  # a second time: the same key is kept
    assert run(*key) == run(*key) == made == (data / "secret_key").read_text().strip()
