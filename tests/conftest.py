"""Fixtures every area shares: real services (a private Redis, Debian's docker-registry, a
Celery worker, Chromium), users and their API tokens. Plain helpers live in tests/support/.

Markers follow from the fixtures a test uses (pytest_collection_modifyitems below), so they
cannot drift from what the test really starts; `make check` runs what needs none of them."""

import collections
import socket

import bcrypt
import pytest
from celery.contrib.testing.worker import start_worker
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from hubmgr import celery_app, datadir, devstack
from hubmgr.registry.client import RegistryClient
from hubmgr.web.models import ApiToken

from tests.support.browser import CHROMIUM, HAVE_CHROMIUM, LAUNCH_ARGS
from tests.support.factories import policy_inventory
from tests.support.notifications import WEBHOOK_TOKEN
from tests.support.referrers import ReferrersProxy
from tests.support.servers import FaultProxy, TokenServer

# A test that uses one of these fixtures (directly or through another) gets the marker.
FIXTURE_MARKERS = {
    "registry": "registry", "basic_registry": "registry", "notified_registry": "registry",
    "browser": "browser",
    "live_server": "live",
    "celery_worker": "worker",
    "redis_service": "redis",
}
# Markers that imply others: a worker consumes from Redis, a browser needs a live server.
IMPLIED = {"worker": {"redis"}, "browser": {"live"}}


def pytest_addoption(parser):
    parser.addoption(
        "--db-tests-only", action="store_true",
        help="deselect the tests that use no database (make test's PostgreSQL pass: they ran "
             "in its SQLite pass, and a test without the database is the same on both)")


def pytest_configure(config):
    """The data folder, as manage.py prepares it: the SQLite test database lives there."""
    datadir.prepare()


@pytest.hookimpl(tryfirst=True)  # the markers are set before `-m` selects by them
def pytest_collection_modifyitems(config, items):
    from django.conf import settings

    on_postgresql = "postgresql" in settings.DATABASES["default"]["ENGINE"]
    for item in items:
        names = {FIXTURE_MARKERS[f] for f in item.fixturenames if f in FIXTURE_MARKERS}
        for name in list(names):
            names |= IMPLIED.get(name, set())
        for name in sorted(names):
            if item.get_closest_marker(name) is None:
                item.add_marker(name)
        if "browser" in names and not HAVE_CHROMIUM:
            item.add_marker(pytest.mark.skip(
                reason="Debian's chromium is not installed (make test installs it)"))
        if item.get_closest_marker("postgres") and not on_postgresql:
            item.add_marker(pytest.mark.skip(reason="only meaningful on PostgreSQL"))
    if config.getoption("db_tests_only"):
        deselect_tests_without_database(config, items)
    if hasattr(config, "workerinput"):
        # Under pytest-xdist, the longest tests first, so that no worker draws one late and
        # runs alone at the end (test_no_envelope_gets_a_5xx takes minutes on PostgreSQL).
        # Within pytest-django's order (tests on a transaction before those that flush the
        # database, which loses the migrations' rows), whichever of the two sorts runs last;
        # stable: each module's tests keep their order and share their module fixtures.
        items.sort(key=lambda item: (django_order(item), 0 if item.get_closest_marker("slow")
                                     else 1 if HEAVY & {m.name for m in item.iter_markers()}
                                     else 2))


HEAVY = {"registry", "browser", "worker"}


def deselect_tests_without_database(config, items):
    """--db-tests-only: leave out the tests that use no database (no `db`, `transactional_db`
    or `live_server` fixture, no django_db marker: pytest-django refuses them the database,
    so they run the same whichever is configured). make test runs them in its SQLite pass
    only. A subprocess such a test starts is given no HUBMGR_DATABASE_URL (the launch and
    settings tests drop every HUBMGR_ variable), so it too is the same on both passes."""
    kept, dropped = [], []
    for item in items:
        no_database = django_order(item) == 2 and not item.get_closest_marker("postgres")
        (dropped if no_database else kept).append(item)
    if dropped:
        items[:] = kept
        config.hook.pytest_deselected(items=dropped)
    modules = collections.Counter(item.nodeid.split("::")[0] for item in dropped)
    # pytest-xdist does not pass deselections on to the controller: the summary comes from
    # the workers' output (pytest_testnodedown below).
    if hasattr(config, "workeroutput"):
        config.workeroutput["no_database_deselected"] = dict(modules)
    config.stash[NO_DATABASE_DESELECTED] = dict(modules)


NO_DATABASE_DESELECTED = pytest.StashKey[dict]()


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook
def pytest_testnodedown(node, error):
    """The controller keeps what a worker left out (each collected the same tests)."""
    modules = getattr(node, "workeroutput", {}).get("no_database_deselected")
    if modules is not None:
        node.config.stash[NO_DATABASE_DESELECTED] = modules


def pytest_terminal_summary(terminalreporter, config):
    modules = config.stash.get(NO_DATABASE_DESELECTED, None)
    if modules is None:
        return
    write = terminalreporter.write_line
    terminalreporter.section("tests left out by --db-tests-only")
    write(f"{sum(modules.values())} tests deselected because they use no database: they run "
          "in make test's SQLite pass only (docs/testing.md)")
    for module, count in sorted(modules.items()):
        write(f"  {count:3d}  {module}")


def django_order(item):
    """pytest-django's (and Django's) order: 0 on a rolled-back transaction, 1 flushing the
    database after it, 2 no database."""
    marker = item.get_closest_marker("django_db")
    transactional = bool(marker and (marker.kwargs.get("transaction")
                                     or marker.kwargs.get("reset_sequences")
                                     or any(marker.args[:1])))
    transactional |= bool({"transactional_db", "live_server"} & set(item.fixturenames))
    if transactional:
        return 1
    return 0 if marker or "db" in item.fixturenames else 2


class PrivateRedis:
    """A private redis-server that a test may stop and start again on the same port."""

    def __init__(self, root, port):
        self.root = root
        self.port = port
        self.service = devstack.start_redis(root, port)
        self.url = self.service.url

    def stop(self):
        self.service.stop()

    def start(self):
        self.service = devstack.start_redis(self.root, self.port)


@pytest.fixture(scope="session")
def _broker_port():
    """The port of this process's private Redis, chosen before any test runs. Celery's broker
    URL points there from the start, and Redis is started only when a test needs it (the
    `redis` marker), so the fast tier starts none: a test without the marker that tries the
    broker finds nothing listening, as with a broker down, and never a shared Redis."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    celery_app.conf.broker_url = f"redis://127.0.0.1:{port}/0"
    return port


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory, _broker_port):
    """A private redis-server on the broker's port, so the tests never touch a shared one."""
    redis = PrivateRedis(tmp_path_factory.mktemp("redis"), _broker_port)
    yield redis
    redis.stop()


@pytest.fixture(scope="session")
def redis_url(redis_service):
    return redis_service.url


@pytest.fixture(autouse=True)
def _broker(request, _broker_port):
    """Tests that use Redis start with no wake-up state left by an earlier test."""
    if request.node.get_closest_marker("redis"):
        from hubmgr.inventory import tasks

        request.getfixturevalue("redis_service")
        tasks.forget_wake_state()


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path):
    settings.WEBHOOK_TOKEN = WEBHOOK_TOKEN
    settings.REGISTRY_URL = ""
    settings.DATA_DIR = tmp_path
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _empty_cache():
    """The cache (local memory) outlives a test; a registry's cached health must not."""
    from django.core.cache import cache

    cache.clear()


# ---- the registry ----------------------------------------------------------------------------
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
def referrers_proxy(registry, settings):
    """The real registry behind a proxy that answers the OCI referrers API
    (tests.support.referrers); hubmgr talks to the proxy."""
    proxy = ReferrersProxy(registry.url)
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


# ---- Celery ----------------------------------------------------------------------------------
@pytest.fixture
def celery_worker(redis_url, transactional_db):
    """A real Celery worker (in a thread) consuming from the private Redis."""
    from hubmgr.inventory import tasks

    celery_app.control.purge()  # wake-ups queued by earlier tests are not this test's
    tasks.forget_wake_state()  # ... and neither is what this process knows of them
    with start_worker(celery_app, pool="solo", perform_ping_check=False,
                      shutdown_timeout=20) as worker:
        yield worker


# ---- Chromium --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    """Chromium, one per test module (Playwright's event loop lives as long as it does)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        browser.close()


# ---- users -----------------------------------------------------------------------------------
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


@pytest.fixture
def token(user):
    """A personal API token of `user` (a viewer)."""
    return ApiToken.issue(user)[1]


@pytest.fixture
def maintainer_token(maintainer):
    """A personal API token of `maintainer` (who may delete)."""
    return ApiToken.issue(maintainer)[1]


# ---- inventories -----------------------------------------------------------------------------
@pytest.fixture
def inventory(db):
    """The policy tests' inventory (tests.support.factories.policy_inventory)."""
    return policy_inventory()
