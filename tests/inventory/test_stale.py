"""Stale only on evidence: hubmgr calls an item Stale only when it has observed the registry's
pulls for the whole stale period; otherwise it says it does not know."""

import re
import subprocess
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from hubmgr import devstack
from hubmgr.inventory.catalog.store import refresh
from hubmgr.inventory.models import Manifest, Registry
from hubmgr.inventory.pulls import envelopes
from hubmgr.inventory.pulls.coverage import Coverage
from hubmgr.inventory.registries import default_registry
from hubmgr.registry.client import RegistryClient

from tests.support.factories import days_ago, make_image, make_index, make_repo, observe_pulls
from tests.support.helpers import image, sync, wait_until
from tests.support.notifications import WEBHOOK_TOKEN, event, post, pull

DAYS = settings.STALE_DAYS


def badges(html):
    """{first tag: badge} of the table's rows."""
    return {m.group(1): m.group(2) for m in re.finditer(
        r'<span class="tag">([^<]+)</span>.*?class="badge (stale|active|unknown)"', html, re.S)}


# ---- the rule --------------------------------------------------------------------------------
def row(pulled=None, pushed=None, source="push_event", first_seen=None):
    return Manifest(last_pulled=days_ago(pulled), last_pushed=days_ago(pushed),
                    last_pushed_source=source if pushed is not None else "",
                    first_seen=days_ago(first_seen) if first_seen is not None else None)


@pytest.mark.parametrize("window, item, stale", [
    (None, row(pushed=400), None),  # nothing observed: unknown, however old
    (None, row(pulled=3, pushed=400), False),  # a pull seen is evidence of use all the same
    (30, row(pushed=400), None),  # observed for a month: too short to tell
    (30, row(pushed=400, pulled=200), None),
    (30, row(pushed=10), False),
    (DAYS + 10, row(pushed=400), True),  # no pull or push seen in the whole period
    (DAYS + 10, row(pushed=400, pulled=DAYS + 1), True),
    (DAYS + 10, row(pushed=400, pulled=DAYS - 1), False),
    (DAYS + 10, row(pushed=5), False),
    (DAYS + 10, row(), True),  # pushed before the window began (else its push was seen)
    # A build time is not a push: an image built a year ago and never seen pushed.
    (DAYS + 10, row(pushed=2, source="image_created"), True),
    (30, row(pushed=2, source="image_created"), None),
    (DAYS + 10, row(pushed=2, source="access_log"), False),
])
def test_stale_needs_a_window_that_covers_the_stale_period(window, item, stale):
    registry = Registry(pulls_observed_since=days_ago(window))
    assert Coverage.of(registry).stale(item) is stale


@pytest.mark.parametrize("window, item, never", [
    (None, row(pushed=1, first_seen=1), False),
    (30, row(pushed=10, first_seen=10), True),  # pushed and first seen inside the window
    (30, row(pushed=40, first_seen=10), False),  # pushed before it: a pull may be missed
    (30, row(pushed=10, first_seen=40), False),  # known before the window (a re-push)
    (30, row(pushed=10, source="image_created", first_seen=10), False),
])
def test_never_pulled_only_where_the_window_covers_the_whole_life(window, item, never):
    registry = Registry(pulls_observed_since=days_ago(window))
    assert Coverage.of(registry).never_pulled(item) is never


ages = st.one_of(st.none(), st.integers(0, 2 * DAYS))


@pytest.mark.django_db
@hsettings(max_examples=25, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(window=ages, items=st.lists(st.tuples(ages, ages, st.sampled_from(
    ["push_event", "access_log", "image_created"])), max_size=8))
def test_the_stale_filter_selects_exactly_the_rows_called_stale(window, items):
    """The SQL filter and the rule the page shows agree, on either database."""
    Manifest.objects.all().delete()
    repo, _ = default_registry().repositories.get_or_create(name="prop/app")
    observe_pulls(window)
    for n, (pulled, pushed, source) in enumerate(items):
        Manifest.objects.create(repository=repo, digest=f"sha256:{n:064x}",
                                last_pulled=days_ago(pulled), last_pushed=days_ago(pushed),
                                last_pushed_source=source if pushed is not None else "")
    coverage = Coverage.of(default_registry())
    expected = {m.pk for m in Manifest.objects.filter(repository=repo) if coverage.stale(m)}
    assert set(Manifest.objects.filter(coverage.stale_q(), repository=repo)
               .values_list("pk", flat=True)) == expected


# ---- pages, API, health ----------------------------------------------------------------------
@pytest.mark.django_db
def test_without_notifications_nothing_is_stale_and_the_page_says_why(logged_in, settings):
    settings.WEBHOOK_TOKEN = "hook-secret"
    settings.REGISTRY_URL = "http://127.0.0.1:9"
    repo = make_repo("nodata/app")
    make_image(repo, "old", tags=["old"], pushed=400)
    make_image(repo, "pulled", tags=["pulled"], pushed=400, pulled=2)
    refresh(repo)
    html = logged_in.get("/repositories/nodata/app").content.decode()
    assert badges(html) == {"old": "unknown", "pulled": "active"}
    assert "No pull data" in html and ">Never<" not in html
    # The banner: the block to add, with this server's webhook URL; the token only for
    # maintainers (this user may not delete).
    assert "Add this to the registry's" in html
    assert "url: http://testserver/hooks/registry" in html
    assert "hook-secret" not in html and "Bearer HUBMGR_WEBHOOK_TOKEN" in html
    data = logged_in.get("/api/v1/repositories/nodata/app/images").json()
    assert data["pull_data_since"] is None
    assert {r["tags"][0]: r["stale"] for r in data["results"]} == {"old": None, "pulled": False}
    stale = logged_in.get("/api/v1/repositories/nodata/app/images?filter=stale").json()
    assert stale["count"] == 0 and stale["results"] == []
    health = logged_in.get("/healthz").json()
    assert health["notifications"] == "none received"


@pytest.mark.django_db
def test_maintainers_see_the_token_in_the_banner(client, maintainer, settings):
    settings.WEBHOOK_TOKEN = "hook-secret"
    settings.REGISTRY_URL = "http://127.0.0.1:9"
    make_repo("nodata/app")
    client.force_login(maintainer)
    html = client.get("/repositories/").content.decode()
    assert "Bearer hook-secret" in html


@pytest.mark.django_db
def test_with_a_long_window_old_items_are_stale_and_filterable(logged_in):
    since = observe_pulls(DAYS + 30).pulls_observed_since
    repo = make_repo("window/app")
    make_image(repo, "old", tags=["old"], pushed=400, pulled=DAYS + 5)
    make_image(repo, "used", tags=["used"], pushed=400, pulled=1)
    child = make_image(repo, "child", pushed=300)
    make_index(repo, "multi", [child], tags=["multi"], pushed=300)
    refresh(repo)
    html = logged_in.get("/repositories/window/app").content.decode()
    assert badges(html) == {"old": "stale", "used": "active", "multi": "stale"}
    assert "Add this to the registry's" not in html
    # multi was pushed before the window began: a pull before it would not have been seen.
    assert html.count(f"Not since {since:%Y-%m-%d}") == 1 and ">Never<" not in html
    page = logged_in.get("/repositories/window/app?filter=stale").content.decode()
    assert set(badges(page)) == {"old", "multi"}
    data = logged_in.get("/api/v1/repositories/window/app/images?filter=stale").json()
    assert data["count"] == 2 and data["pull_data_since"] == since.isoformat()
    assert all(r["stale"] is True for r in data["results"])
    multi = next(r for r in data["results"] if r["tags"] == ["multi"])
    assert multi["children"][0]["stale"] is True
    assert "received since" in logged_in.get("/healthz").json()["notifications"]


@pytest.mark.django_db
def test_a_build_time_is_not_shown_as_a_push(logged_in):
    observe_pulls(10)
    repo = make_repo("built/app")
    m = make_image(repo, "b", tags=["b"], pushed=300)
    Manifest.objects.filter(pk=m.pk).update(last_pushed_source="image_created")
    refresh(repo)
    html = logged_in.get("/repositories/built/app").content.decode()
    assert "Not seen" in html and "The image was built" in html
    assert ">10 months ago<" not in html
    item = logged_in.get("/api/v1/repositories/built/app/images").json()["results"][0]
    assert item["last_pushed_source"] == "image_created" and item["stale"] is None


# ---- the window ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_first_notification_opens_the_window_and_later_ones_leave_it(client):
    registry = default_registry()
    assert registry.pulls_observed_since is None
    first = (timezone.now() - timedelta(minutes=5)).replace(microsecond=0)
    post(client, [event(ts=first.isoformat().replace("+00:00", "Z"))])
    post(client, [pull("p1", "2026-11-02T00:00:00Z")])
    envelopes.drain(default_registry())
    registry.refresh_from_db()
    assert registry.notified_since == registry.pulls_observed_since == first
    post(client, [pull("p2", (first - timedelta(hours=1)).isoformat())])
    envelopes.drain(default_registry())
    registry.refresh_from_db()
    assert registry.notified_since == first


@pytest.mark.django_db
def test_a_registry_clock_years_behind_cannot_open_the_window_years_ago(client):
    post(client, [event(ts="2001-01-01T00:00:00Z")])
    envelopes.drain(default_registry())
    since = default_registry().pulls_observed_since
    assert timezone.now() - since < timedelta(days=1, minutes=1)


@pytest.mark.django_db
def test_an_earlier_window_from_imported_logs_stays(client):
    registry = observe_pulls(300)
    registry.notified_since = None
    registry.save()
    post(client, [event()])
    envelopes.drain(default_registry())
    registry.refresh_from_db()
    assert registry.notified_since is not None
    assert timezone.now() - registry.pulls_observed_since > timedelta(days=299)


# ---- against the real registry ---------------------------------------------------------------
def test_turning_notifications_on_against_the_real_registry(tmp_path, settings, live_server,
                                                             celery_worker, logged_in, user):
    """A registry without notifications: after a sync nothing is Stale and nothing is "Never"
    pulled. Notifications on: a pull makes its item active; the rest stay unknown until the
    window covers the stale period (the clock driven forward, not slept)."""
    root = tmp_path / "registry"
    plain = devstack.start_registry(root)
    settings.REGISTRY_URL = plain.url
    client = RegistryClient(plain.url)
    image(client, "turn/app", tag="a", seed="a")
    image(client, "turn/app", tag="b", seed="b")
    client.close()
    sync()
    html = logged_in.get("/repositories/turn/app").content.decode()
    assert badges(html) == {"a": "unknown", "b": "unknown"}
    assert ">Never<" not in html and "Add this to the registry's" in html
    plain.stop()

    notified = devstack.start_registry(root, notify_url=f"{live_server.url}/hooks/registry",
                                       notify_token=WEBHOOK_TOKEN)
    settings.REGISTRY_URL = notified.url
    try:
        subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                        f"docker://{notified.url.removeprefix('http://')}/turn/app:a"],
                       check=True, capture_output=True)
        assert wait_until(lambda: Manifest.objects.filter(
            repository__name="turn/app", last_pulled__isnull=False).exists(), timeout=10)
    finally:
        notified.stop()
    since = default_registry().pulls_observed_since
    assert since is not None and timezone.now() - since < timedelta(minutes=5)
    html = logged_in.get("/repositories/turn/app").content.decode()
    assert badges(html) == {"a": "active", "b": "unknown"}
    assert f"Not since {since:%Y-%m-%d}" in html and "Add this to the registry's" not in html
    api = "/api/v1/repositories/turn/app/images"

    def stale_by_tag():
        logged_in.force_login(user)  # (a session would have expired)
        return {r["tags"][0]: r["stale"] for r in logged_in.get(api).json()["results"]}

    with time_machine.travel(since + timedelta(days=DAYS - 1), tick=False):
        assert stale_by_tag() == {"a": False, "b": None}  # a pulled then; b: window too short
        assert logged_in.get(f"{api}?filter=stale").json()["count"] == 0
    with time_machine.travel(since + timedelta(days=DAYS + 1), tick=False):
        assert stale_by_tag() == {"a": True, "b": True}
        assert logged_in.get(f"{api}?filter=stale").json()["count"] == 2
        html = logged_in.get("/repositories/turn/app").content.decode()
        assert badges(html) == {"a": "stale", "b": "stale"}
