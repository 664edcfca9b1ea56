"""Real services for the tests: a private Redis, Debian's docker-registry, a Celery worker."""

import bcrypt
import pytest
from celery.contrib.testing.worker import start_worker
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from hubmgr import celery_app, devstack
from hubmgr.registry.client import RegistryClient

from .servers import FaultProxy, TokenServer

WEBHOOK_TOKEN = "test-webhook-token"


class PrivateRedis:
    """A private redis-server that a test may stop and start again on the same port."""

    def __init__(self, root):
        self.root = root
        self.service = devstack.start_redis(root)
        self.url = self.service.url
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stop(self):
        self.service.stop()

    def start(self):
        self.service = devstack.start_redis(self.root, self.port)


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory):
    """Always a private redis-server, so the tests never touch a shared one."""
    redis = PrivateRedis(tmp_path_factory.mktemp("redis"))
    celery_app.conf.broker_url = redis.url
    yield redis
    redis.stop()


@pytest.fixture(scope="session", autouse=True)
def redis_url(redis_service):
    return redis_service.url


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path):
    settings.WEBHOOK_TOKEN = WEBHOOK_TOKEN
    settings.REGISTRY_URL = ""
    settings.DATA_DIR = tmp_path
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def registry(tmp_path, settings):
    """A fresh docker-registry (delete enabled) that hubmgr is configured to manage."""
    service = devstack.start_registry(tmp_path / "registry")
    settings.REGISTRY_URL = service.url
    yield service
    service.stop()


@pytest.fixture
def registry_client(registry):
    client = RegistryClient(registry.url)
    yield client
    client.close()


@pytest.fixture
def notified_registry(tmp_path, settings, live_server):
    """A registry whose notifications go to the live test server's /hooks/registry."""
    service = devstack.start_registry(tmp_path / "registry",
                                      notify_url=f"{live_server.url}/hooks/registry",
                                      notify_token=WEBHOOK_TOKEN)
    settings.REGISTRY_URL = service.url
    yield service
    service.stop()


@pytest.fixture
def fault_proxy(registry, settings):
    """A fault-injecting proxy in front of the real registry; hubmgr talks to the proxy."""
    proxy = FaultProxy(registry.url)
    settings.REGISTRY_URL = proxy.url
    yield proxy
    proxy.close()


@pytest.fixture
def basic_registry(tmp_path):
    """A registry behind htpasswd basic auth: user robot, password s3cret."""
    htpasswd = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=5)).decode()
    htpasswd.write_text(f"robot:{hashed}\n")
    service = devstack.start_registry(tmp_path / "basic", htpasswd=htpasswd)
    yield service
    service.stop()


@pytest.fixture
def token_server(tmp_path):
    server = TokenServer(tmp_path, "robot", "s3cret")
    yield server
    server.close()


@pytest.fixture
def celery_worker(redis_url, transactional_db):
    """A real Celery worker (in a thread) consuming from the private Redis."""
    from hubmgr.inventory import tasks

    celery_app.control.purge()  # wake-ups queued by earlier tests are not this test's
    # ... and neither is their "a wake-up is queued" flag, nor a broker outage they caused,
    # nor the last wake-up call (the task it queued may be purged).
    tasks._wake_flag().delete(tasks.WAKE_KEY)
    tasks._broker_down_until[0] = 0.0
    tasks._woken[0] = -1e9
    with start_worker(celery_app, pool="solo", perform_ping_check=False,
                      shutdown_timeout=20) as worker:
        yield worker


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("viewer", password="pw-viewer-123")


@pytest.fixture
def maintainer(django_user_model):
    """A user with the delete permission (as the maintainers group gives)."""
    user = django_user_model.objects.create_user("maria", password="pw-maria-123")
    user.user_permissions.add(Permission.objects.get(codename="delete_images"))
    return user


@pytest.fixture
def maint(client, maintainer):
    """The test client, logged in as a maintainer."""
    client.force_login(maintainer)
    return client


@pytest.fixture
def logged_in(client, user):
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def _empty_cache():
    """The cache (local memory) outlives a test; a registry's cached health must not."""
    from django.core.cache import cache

    cache.clear()
