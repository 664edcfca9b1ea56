"""POST /hooks/registry: auth, validation, dedup, and the real registry's own events."""

import json
import subprocess
import time
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from hubmgr.inventory.models import Manifest, ProcessedEvent, QueuedEnvelope, Repository, Tag
from hubmgr.inventory.pulls import envelopes
from hubmgr.inventory.registries import default_registry
from hubmgr.registry import manifests
from hubmgr.registry.client import USER_AGENT, RegistryClient
from hubmgr.registry.manifests import OCI_MANIFEST

from tests.support.helpers import image, multiarch, sync, wait_until
from tests.support.notifications import (
    DIGEST, V1, V2, WEBHOOK_TOKEN, deliver, drain, event, post, pull,
)


@pytest.mark.django_db
@pytest.mark.parametrize("token", [None, "wrong"])
def test_a_wrong_or_missing_token_is_refused_and_writes_nothing(client, token):
    resp = post(client, [event()], token=token)
    assert resp.status_code == 401
    assert not Manifest.objects.exists() and not ProcessedEvent.objects.exists()


@pytest.mark.django_db
def test_no_token_configured_refuses_everything(client, settings):
    settings.WEBHOOK_TOKEN = ""
    resp = post(client, [event()], token="")
    assert resp.status_code == 401 and "HUBMGR_WEBHOOK_TOKEN" in resp.json()["error"]


@pytest.mark.django_db
@pytest.mark.parametrize("raw", ["not json", "[]", '{"events": "x"}', "[" * 100_000])
def test_a_body_that_is_no_envelope_is_a_400_and_writes_nothing(client, raw):
    resp = post(client, None, raw=raw)
    assert resp.status_code == 400 and "malformed notification" in resp.json()["error"]
    assert not Manifest.objects.exists() and not ProcessedEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("bad, reason", [
    ({"id": "x"}, "unknown action None"),
    ({**event(id="e2"), "timestamp": "yesterday"}, "no valid timestamp"),
    ({**event(id="e2"), "timestamp": "9999-12-31T23:59:59-05:00"}, "no valid timestamp"),
    (event(id="e2", digest=""), "a push without a digest"),
    (event(id="e2", repository="Team/UPPER"), "no valid target repository"),
    (event(id="e2", repository="a\nb"), "no valid target repository"),
    (event(id="e2", repository="a" * 300), "no valid target repository"),
    (event(id="e2", digest="sha256:../../../other/repo/manifests/" + "a" * 64),
     "not a valid digest"),
    (event(id="e2", tag="bad tag\x00"), "not a valid tag"),
])
def test_a_bad_event_is_recorded_and_skipped_and_the_rest_applied(client, bad, reason):
    assert deliver(client, [event(), bad]) == {"accepted": 1, "duplicates": 0, "rejected": 1}
    assert Manifest.objects.get().digest == DIGEST
    assert list(Repository.objects.values_list("name", flat=True)) == ["hook/app"]
    rejected = ProcessedEvent.objects.exclude(error="").get()
    assert rejected.event_id == bad["id"] and reason in rejected.error
    # Delivered again, it is not applied twice and still answers 2xx.
    assert deliver(client, [event(), bad]) == {"accepted": 0, "duplicates": 2, "rejected": 0}
    assert ProcessedEvent.objects.count() == 2


@pytest.mark.django_db
def test_a_garbled_redelivery_never_overwrites_an_applied_event(client):
    deliver(client, [event(id="same")])
    assert deliver(client, [{**event(id="same"), "action": "garbled"}]) == {
        "accepted": 0, "duplicates": 1, "rejected": 0}
    assert ProcessedEvent.objects.get(event_id="same").error == ""


@pytest.mark.django_db
def test_an_event_id_longer_than_its_column_still_dedups(client):
    long_id = "x" * 500
    assert deliver(client, [event(id=long_id)])["accepted"] == 1
    assert deliver(client, [event(id=long_id)]) == {"accepted": 0, "duplicates": 1,
                                                    "rejected": 0}
    assert ProcessedEvent.objects.get().event_id.startswith("sha256:")


@pytest.mark.django_db
def test_get_is_not_allowed(client):
    assert client.get("/hooks/registry").status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", [V1, V2])
def test_a_push_adds_the_manifest_and_tag_with_its_push_time(client, content_type):
    assert deliver(client, [event()], content_type=content_type)["accepted"] == 1
    m = Manifest.objects.get(digest=DIGEST)
    assert m.tags == ["v1"] and not m.fetched
    assert m.last_pushed == datetime(2026, 11, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert m.last_pushed_source == "push_event"


@pytest.mark.django_db
def test_events_are_applied_once_by_id(client):
    deliver(client, [event(action="pull", id="p1", ts="2026-11-02T00:00:00Z", method="GET")])
    deliver(client, [event(action="pull", id="p1", ts="2026-11-02T00:00:00Z", method="GET")])
    assert ProcessedEvent.objects.filter(event_id="p1").count() == 1
    # An older pull delivered late never moves "last pulled" back.
    deliver(client, [event(action="pull", id="p0", ts="2026-10-01T00:00:00Z", method="GET")])
    m = Manifest.objects.get(digest=DIGEST)
    assert m.last_pulled == datetime(2026, 11, 2, tzinfo=timezone.utc)


@pytest.mark.django_db
def test_pulls_by_our_crawler_and_heads_do_not_count(client, settings):
    deliver(client, [event()])
    deliver(client, [event(action="pull", id="c1", method="GET", useragent=USER_AGENT)])
    deliver(client, [event(action="pull", id="h1", method="HEAD")])
    assert Manifest.objects.get(digest=DIGEST).last_pulled is None
    settings.COUNT_HEAD_PULLS = True
    deliver(client, [event(action="pull", id="h2", method="HEAD")])
    assert Manifest.objects.get(digest=DIGEST).last_pulled is not None


@pytest.mark.django_db
def test_delete_events_remove_the_manifest_and_its_tags(client):
    deliver(client, [event(), event(id="e2", tag="latest")])
    assert Tag.objects.count() == 2
    deliver(client, [event(action="delete", id="d0", digest="", tag="latest", method="DELETE")])
    assert list(Tag.objects.values_list("name", flat=True)) == ["v1"]
    deliver(client, [event(action="delete", id="d1", tag="", method="DELETE")])
    assert not Manifest.objects.exists() and not Tag.objects.exists()
    assert Repository.objects.get(name="hook/app").item_count == 0


@pytest.mark.django_db
def test_blob_pushes_are_ignored(client):
    deliver(client, [event(media_type="application/octet-stream", tag="")])
    assert not Manifest.objects.exists()


def test_the_real_registry_reports_pushes_and_pulls(notified_registry, celery_worker,
                                                    logged_in):
    client = RegistryClient(notified_registry.url)
    index, kids = multiarch(client, "live/app", tag="2.0")
    untagged = image(client, "live/app", seed="untagged")  # by digest: only a push event tells

    def fetched():
        return Manifest.objects.filter(repository__name="live/app", fetched=True).count() == 4
    assert wait_until(fetched), list(Manifest.objects.values("digest", "fetched", "error"))
    idx = Manifest.objects.get(digest=index)
    assert idx.tags == ["2.0"] and idx.kind == "index" and idx.last_pushed_source == "push_event"
    assert idx.platform == "linux/amd64, linux/arm64" and idx.size > 0
    loose = Manifest.objects.get(digest=untagged["digest"])
    assert loose.is_top_level and loose.tags == [] and loose.platform == "linux/amd64"
    assert loose.last_pulled is None  # our own GETs while fetching do not count

    # A real client pull (skopeo) by tag: queued by the webhook, applied by the worker, on
    # the page within a couple of seconds.
    def never_pulled():
        page = logged_in.get("/repositories/live/app").content.decode()
        return page.count("Never")
    before = never_pulled()
    subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                    f"docker://{notified_registry.url.removeprefix('http://')}/live/app:2.0"],
                   check=True, capture_output=True)
    assert wait_until(lambda: never_pulled() == before - 1, timeout=2.5)
    assert Manifest.objects.get(digest=index).last_pulled is not None

    # A sync afterwards keeps the untagged image that only a push event revealed.
    sync()
    assert Manifest.objects.filter(digest=untagged["digest"]).exists()

    client.delete_manifest("live/app", untagged["digest"])
    assert wait_until(lambda: not Manifest.objects.filter(digest=untagged["digest"]).exists())


@pytest.mark.django_db
def test_lone_surrogates_and_controls_in_free_text_are_dropped(client):
    raw = json.dumps({"events": [event(media_type=OCI_MANIFEST + "\ud800\x00",
                                       useragent="\udfffdocker")]})
    assert deliver(client, None, raw=raw)["accepted"] == 1
    assert Manifest.objects.get().media_type == OCI_MANIFEST


# ---- the queue -------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_webhook_only_queues_and_the_worker_applies(client):
    resp = post(client, [event(), pull("p1", "2026-11-02T00:00:00Z")])
    assert resp.status_code == 200 and resp.json() == {"queued": 2}
    assert QueuedEnvelope.objects.get().events == 2
    assert not Manifest.objects.exists() and not ProcessedEvent.objects.exists()
    assert envelopes.backlog()["pending"] == 1
    assert drain() == {"accepted": 2, "duplicates": 0, "rejected": 0}
    assert not QueuedEnvelope.objects.exists()
    assert Manifest.objects.get().last_pulled == datetime(2026, 11, 2, tzinfo=timezone.utc)


@pytest.mark.django_db
@pytest.mark.parametrize("limit", [1, 3, 500])
def test_events_are_applied_once_across_redeliveries_and_batches(client, limit):
    for n in range(4):  # each delivered twice, and once more inside a later envelope
        post(client, [pull(f"p{n}", f"2026-11-0{n + 1}T00:00:00Z")])
        post(client, [pull(f"p{n}", f"2026-11-0{n + 1}T00:00:00Z")])
    post(client, [pull("p0", "2026-11-01T00:00:00Z"), pull("p9", "2026-11-09T00:00:00Z")])
    assert drain(limit=limit) == {"accepted": 5, "duplicates": 5, "rejected": 0}
    assert ProcessedEvent.objects.count() == 5
    assert Manifest.objects.get().last_pulled == datetime(2026, 11, 9, tzinfo=timezone.utc)


@pytest.mark.django_db
@pytest.mark.parametrize("limit", [1, 500])
def test_late_events_never_move_a_time_or_a_tag_back(client, limit):
    other = "sha256:" + "b" * 64
    post(client, [event(id="a1", ts="2026-11-05T00:00:00Z")])  # v1 -> a
    post(client, [event(id="b1", digest=other, ts="2026-11-06T00:00:00Z")])  # v1 -> b
    post(client, [pull("p2", "2026-11-07T00:00:00Z")])
    # Delivered late: an older push of v1 onto a, an older pull, an older push of a.
    post(client, [event(id="a0", ts="2026-11-04T00:00:00Z")])
    post(client, [pull("p1", "2026-11-03T00:00:00Z")])
    # An older delete of v1 (it was pushed again after it) leaves v1.
    post(client, [event(action="delete", id="d0", digest="", tag="v1",
                        ts="2026-11-05T12:00:00Z", method="DELETE")])
    drain(limit=limit)
    assert Tag.objects.get(name="v1").manifest.digest == other
    a = Manifest.objects.get(digest=DIGEST)
    assert a.last_pulled == datetime(2026, 11, 7, tzinfo=timezone.utc)
    assert a.last_pushed == datetime(2026, 11, 5, tzinfo=timezone.utc) and a.tags == []
    repo = Repository.objects.get(name="hook/app")
    assert (repo.item_count, repo.tagged_count) == (2, 1)
    # A newer delete does remove it.
    deliver(client, [event(action="delete", id="d1", digest="", tag="v1",
                           ts="2026-11-08T00:00:00Z", method="DELETE")])
    assert not Tag.objects.exists()


@pytest.mark.django_db
def test_a_poison_event_in_a_batch_costs_only_itself(client, monkeypatch):
    from hubmgr.inventory.pulls import notifications

    poison = "sha256:" + "f" * 64
    real = notifications.move_times

    def failing(column, times):
        if Manifest.objects.filter(pk__in=list(times), digest=poison).exists():
            raise OverflowError("the database refused it")
        return real(column, times)
    monkeypatch.setattr(notifications, "move_times", failing)
    post(client, [pull("p1", "2026-11-02T00:00:00Z")])
    post(client, [pull("bad", "2026-11-02T00:00:00Z", digest=poison)])
    post(client, [event(id="e2", tag="v2")])
    assert drain() == {"accepted": 2, "duplicates": 0, "rejected": 1}
    assert "OverflowError: the database refused it" in ProcessedEvent.objects.get(
        event_id="bad").error
    assert Manifest.objects.get(digest=DIGEST).tags == ["v2"]
    assert not Manifest.objects.filter(digest=poison).exists()
    assert not QueuedEnvelope.objects.exists()


@pytest.mark.django_db
def test_an_envelope_that_cannot_be_applied_is_kept_with_its_error_and_the_queue_goes_on(
        client, monkeypatch):
    from hubmgr.inventory.pulls import notifications

    real = envelopes.parse_envelope

    def failing(body):
        if b"broken" in body:
            raise RuntimeError("no such luck")
        return real(body)
    monkeypatch.setattr(envelopes, "parse_envelope", failing)
    post(client, [pull("broken", "2026-11-02T00:00:00Z")])
    post(client, [pull("p1", "2026-11-03T00:00:00Z")])
    assert drain()["accepted"] == 1
    kept = QueuedEnvelope.objects.get()
    assert "RuntimeError: no such luck" in kept.error
    assert envelopes.backlog() == {"pending": 0, "failed": 1, "oldest_seconds": 0}
    assert notifications  # the module stayed importable with the patch


@pytest.mark.django_db
def test_healthz_reports_the_queue(client, registry):
    post(client, [pull("p1", "2026-11-03T00:00:00Z")])
    body = client.get("/healthz").json()
    assert body["notification_queue"]["pending"] == 1


@pytest.mark.django_db
def test_the_webhook_skips_the_middleware_stack_but_checks_the_host(client):
    resp = post(client, [event()])
    assert resp.status_code == 200 and "Set-Cookie" not in resp
    bad = client.post("/hooks/registry", "{}", content_type=V1, HTTP_HOST="evil.example",
                      HTTP_AUTHORIZATION=f"Bearer {WEBHOOK_TOKEN}")
    assert bad.status_code == 400


# ---- counts kept incrementally equal counts made afresh ----------------------------------------
POOL = [f"sha256:{n:064x}" for n in range(1, 7)]  # the first two fetch as indexes
LAYERS = {f"sha256:{n:064x}": 1000 * n for n in range(100, 105)}
OPS = st.lists(st.one_of(
    st.tuples(st.just("push"), st.sampled_from(POOL), st.sampled_from(["", "a", "b", "c"]),
              st.integers(1, 9)),
    st.tuples(st.just("pull"), st.sampled_from(POOL), st.just(""), st.integers(1, 9)),
    st.tuples(st.just("delete"), st.sampled_from(POOL), st.just(""), st.integers(1, 9)),
    st.tuples(st.just("untag"), st.just(""), st.sampled_from(["a", "b", "c"]),
              st.integers(1, 9)),
    st.tuples(st.just("fetch"), st.sampled_from(POOL), st.just(""), st.just(0)),
), max_size=25)


def fetched(digest):
    """What a fetch of a pool digest reads: indexes of two images, images of a config and a
    layer or two shared between them."""
    from hubmgr.inventory.sync.crawl import Fetched
    from hubmgr.registry import manifests

    n = POOL.index(digest)
    if n < 2:
        kids = [manifests.Descriptor(OCI_MANIFEST, POOL[n + k], 500, "linux/amd64")
                for k in (2, 3)]
        return Fetched(digest, manifests.OCI_INDEX, manifests.Manifest(
            digest, manifests.OCI_INDEX, 300, manifests.INDEX, children=kids))
    layers = list(LAYERS)
    blobs = [manifests.Descriptor("x", d, LAYERS[d]) for d in (layers[n - 2], layers[n % 5])]
    config = manifests.Descriptor("c", f"sha256:{900 + n:064x}", 7 * n)
    return Fetched(digest, OCI_MANIFEST, manifests.Manifest(
        digest, OCI_MANIFEST, 300, manifests.IMAGE, config=config, layers=blobs))


def counted(repo):
    repo.refresh_from_db()
    rows = sorted(Manifest.objects.filter(repository=repo).values_list(
        "digest", "tags_text", "is_tagged", "is_top_level", "kind", "size"))
    return (repo.item_count, repo.tagged_count, repo.index_count, repo.total_size), rows


@pytest.mark.slow
@pytest.mark.django_db
def test_counts_kept_by_events_equal_a_full_recount(client):
    from hubmgr.inventory.catalog.store import refresh, writing

    examples = iter(range(10_000))

    @hsettings(max_examples=60, deadline=None, database=None,
               suppress_health_check=list(HealthCheck))
    @given(OPS, st.sampled_from([1, 2, 500]))
    def check(ops, limit):
        name = f"prop/r{next(examples)}"
        repo = Repository.objects.create(registry=default_registry(), name=name)
        for n, (action, digest, tag, day) in enumerate(ops):
            ts = f"2026-11-0{day}T00:00:00Z"
            if action == "fetch":
                drain(limit=limit)
                with writing(repo) as batch:
                    batch.store_fetched({digest: fetched(digest)}, {})
                continue
            media = manifests.OCI_INDEX if digest in POOL[:2] else OCI_MANIFEST
            body = event(action="delete" if action == "untag" else action, id=f"{name}-{n}",
                         digest=digest, tag=tag, repository=name, ts=ts, media_type=media,
                         method={"push": "PUT", "pull": "GET"}.get(action, "DELETE"))
            post(client, [body])
        drain(limit=limit)
        kept = counted(repo)
        refresh(repo)
        assert counted(repo) == kept

    check()


def test_events_stored_while_no_worker_runs_are_applied_when_one_starts(client, redis_url,
                                                                         transactional_db):
    from celery.contrib.testing.worker import start_worker

    from hubmgr import celery_app
    from hubmgr.inventory import tasks

    celery_app.control.purge()
    tasks.forget_wake_state()
    # A notification a stopped registry of an earlier test delivered while its live server
    # was being torn down can land after that test's flush (it did once: 4 envelopes for 3).
    QueuedEnvelope.objects.all().delete()
    ProcessedEvent.objects.all().delete()
    for n in range(3):  # the worker is down (none started yet): they wait in the table
        assert post(client, [pull(f"p{n}", f"2026-11-0{n + 1}T00:00:00Z")]).status_code == 200
    time.sleep(0.5)
    assert QueuedEnvelope.objects.count() == 3 and not Manifest.objects.exists()
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=20):
        assert wait_until(lambda: not QueuedEnvelope.objects.exists(), timeout=10)
    assert Manifest.objects.get().last_pulled == datetime(2026, 11, 3, tzinfo=timezone.utc)
    assert ProcessedEvent.objects.count() == 3


def test_a_web_process_calls_for_a_wake_up_at_most_every_tenth_of_a_second(monkeypatch):
    from hubmgr.inventory import tasks

    calls = []

    class Flag:
        def set(self, *args, **kwargs):
            calls.append(args)
            return False  # a task is queued already

        def delete(self, *args):
            pass

    monkeypatch.setattr(tasks, "wake_flag", Flag)
    tasks.forget_wake_state()
    for _ in range(50):
        tasks.wake()
    assert len(calls) == 1
    time.sleep(tasks.WAKE_QUIET_SECONDS)
    tasks.wake()
    assert len(calls) == 2


@pytest.mark.slow
def test_an_envelope_stored_while_the_queue_lingers_empty_is_applied(client, transactional_db):
    """The apply task ends only after finding the queue empty twice, a linger apart: an
    envelope whose web process skipped the wake-up (the task had been queued) is applied."""
    import threading

    from django.db import connection

    done = []

    def drain_lingering():
        try:
            done.append(envelopes.drain(default_registry(), linger=1.0))
        finally:
            connection.close()  # this thread's own

    lingering = threading.Thread(target=drain_lingering)
    lingering.start()
    time.sleep(0.3)  # the first look found it empty
    post(client, [pull("late", "2026-11-02T00:00:00Z")])
    lingering.join(10)
    assert done and done[0][0] and done[0][1].applied == 1
    assert not QueuedEnvelope.objects.exists()


@pytest.mark.django_db
def test_a_backlog_is_warned_of_once_not_at_every_sweep(client):
    import logging
    from datetime import timedelta

    from django.core.cache import cache
    from django.utils import timezone as tz

    class Lines(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append((record.levelname, record.getMessage()))

    lines = Lines()
    logger = logging.getLogger("hubmgr.notifications")
    logger.addHandler(lines)
    try:
        post(client, [pull("late", "2026-11-02T00:00:00Z")])
        QueuedEnvelope.objects.update(received_at=tz.now() - timedelta(minutes=2))
        for _ in range(3):
            assert envelopes.report_backlog()["pending"] == 1
        warnings = [m for level, m in lines.lines if level == "WARNING"]
        assert len(warnings) == 1 and "backlog pending=1" in warnings[0]
        cache.delete(envelopes.BACKLOG_WARNED_KEY)  # ten minutes later
        envelopes.report_backlog()
        assert len([m for level, m in lines.lines if level == "WARNING"]) == 2
    finally:
        logger.removeHandler(lines)
