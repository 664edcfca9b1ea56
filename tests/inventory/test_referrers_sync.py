"""A sync finds the referrers no tag reaches through the registry's referrers API (a proxy in
front of the real registry that answers it as the OCI distribution spec 1.1 says,
tests.support.referrers), and the inventory attaches them to their subject. Against the plain
registry (no such API: 404) it asks once and goes on. Whatever the API answers costs only the
subject asked about."""

import json

import pytest

from hubmgr.inventory.models import Manifest
from hubmgr.inventory.sync import crawl as crawl_module
from hubmgr.inventory.sync.crawl import MAX_PROBE_FAILURES, Crawler
from hubmgr.registry.client import FetchedManifest, RegistryClient
from hubmgr.registry.errors import RegistryResponseError
from hubmgr.registry.manifests import OCI_INDEX, OCI_MANIFEST, sha256_digest

from tests.support.helpers import image, multiarch, row, sync
from tests.support.referrers import push_referrer

SPDX = "application/spdx+json"
NOTARY = "application/vnd.cncf.notary.signature"


@pytest.fixture
def proxied(referrers_proxy):
    """A client that pushes through the referrers proxy, so that it learns the referrers."""
    client = RegistryClient(referrers_proxy.url)
    yield client
    client.close()


def referrer_problems(run):
    return [p for p in run.problems if "referrers" in p["error"]]


@pytest.mark.django_db
def test_a_referrer_pushed_by_digest_only_is_found_and_attached_to_its_subject(
        proxied, referrers_proxy):
    subject = image(proxied, "sig/app", tag="v1")
    sbom = push_referrer(proxied, "sig/app", subject, SPDX, b'{"spdxVersion": "SPDX-2.3"}')
    # A signature of that SBOM: a referrer of a referrer, reached through it.
    signature = push_referrer(proxied, "sig/app", sbom, NOTARY, b"jws")
    run = sync()
    assert run.error == "" and run.problems == []
    found = row("sig/app", sbom["digest"])
    assert found.artifact == "sbom" and found.subject == subject["digest"]
    assert found.is_attached and not found.is_top_level and found.tags == []
    signed = row("sig/app", signature["digest"])
    assert signed.artifact == "signature" and signed.subject == sbom["digest"]
    assert signed.is_attached and not signed.is_top_level
    assert list(Manifest.objects.filter(repository__name="sig/app").top_level()
                .values_list("digest", flat=True)) == [subject["digest"]]
    # What was read is not asked again: the next sync reads no new manifest.
    asked = referrers_proxy.referrer_requests()
    assert asked == 3  # the image, the SBOM, the signature
    again = sync()
    assert again.problems == [] and referrers_proxy.referrer_requests() == asked
    assert row("sig/app", sbom["digest"]).is_attached  # still there, reached by no tag


@pytest.mark.django_db
def test_the_referrers_of_an_index_and_its_images_are_found(proxied):
    index, kids = multiarch(proxied, "multi/app", tag="1.0")
    body = proxied.get_manifest("multi/app", index).body
    on_index = push_referrer(proxied, "multi/app", {
        "mediaType": OCI_INDEX, "digest": index, "size": len(body)}, NOTARY, b"jws index")
    on_child = push_referrer(proxied, "multi/app", kids[0], SPDX, b"sbom child")
    assert sync().problems == []
    assert row("multi/app", on_index["digest"]).subject == index
    assert row("multi/app", on_child["digest"]).subject == kids[0]["digest"]
    assert row("multi/app", on_child["digest"]).is_attached


@pytest.mark.django_db
def test_without_the_api_the_sync_asks_once_and_goes_on(fault_proxy, registry_client):
    multiarch(registry_client, "plain/app", tag="1.0")
    image(registry_client, "plain/app", tag="solo", seed="solo")
    image(registry_client, "plain/other", tag="v1", seed="other")
    run = sync()
    assert run.error == "" and run.problems == []
    assert fault_proxy.count("GET", r"/referrers/") == 1
    assert Manifest.objects.filter(fetched=True).count() == 5


@pytest.mark.django_db
def test_fetch_tasks_remember_a_registry_without_the_api(fault_proxy, registry_client):
    """Each notification's fetch task makes its own crawler: the first one's answer is kept
    for the next (inventory.tasks.fetch_manifests)."""
    from hubmgr.inventory.models import Repository
    from hubmgr.inventory.registries import default_registry
    from hubmgr.inventory.tasks import fetch_manifests

    repo = Repository.objects.create(registry=default_registry(), name="plain/app")
    for seed in ("a", "b"):
        pushed = image(registry_client, "plain/app", seed=seed)
        Manifest.objects.create(repository=repo, digest=pushed["digest"])
        assert fetch_manifests(repo.pk, [pushed["digest"]]) == 1
    assert fault_proxy.count("GET", r"/referrers/") == 1


@pytest.mark.django_db
def test_paged_referrers_are_all_found(proxied, referrers_proxy):
    subject = image(proxied, "paged/app", tag="v1")
    pushed = {push_referrer(proxied, "paged/app", subject, SPDX, f"sbom {n}".encode())["digest"]
              for n in range(5)}
    referrers_proxy.page_size = 2
    assert sync().problems == []
    assert set(Manifest.objects.filter(subject=subject["digest"])
               .values_list("digest", flat=True)) == pushed


@pytest.mark.django_db
@pytest.mark.parametrize("body, reason", [
    ("<html>oops</html>", "not valid JSON"),
    (json.dumps({"mediaType": OCI_MANIFEST, "manifests": []}), "not an OCI image index"),
    ('{"manifests": [' + "0," * (5 * 1024 * 1024) + "0]}", "larger than"),
])
def test_a_malformed_or_huge_answer_is_that_subjects_problem(
        proxied, referrers_proxy, body, reason):
    subject = image(proxied, "bad/app", tag="v1")
    referrers_proxy.add("GET", r"/referrers/", "body", body, times=1)
    run = sync()
    assert run.error == ""
    (problem,) = referrer_problems(run)
    assert problem["reference"] == f"bad/app@{subject['digest']}"
    assert reason in problem["error"]
    assert row("bad/app", subject["digest"]).fetched  # the subject itself is read


@pytest.mark.django_db
def test_past_the_cap_a_subjects_referrers_are_left_out_with_a_problem(
        proxied, monkeypatch):
    monkeypatch.setattr(crawl_module, "MAX_REFERRERS_FETCHED", 2)
    subject = image(proxied, "many/app", tag="v1")
    for n in range(3):
        push_referrer(proxied, "many/app", subject, SPDX, f"sbom {n}".encode())
    run = sync()
    (problem,) = referrer_problems(run)
    assert problem["reference"] == f"many/app@{subject['digest']}"
    assert "3 referrers of this manifest were not read yet; hubmgr read 2" in problem["error"]
    assert Manifest.objects.filter(subject=subject["digest"]).count() == 2


@pytest.mark.django_db
def test_a_listing_past_its_bound_is_a_problem(proxied, referrers_proxy, monkeypatch):
    from hubmgr.registry import client as client_module

    monkeypatch.setattr(client_module, "MAX_REFERRER_PAGES", 1)
    referrers_proxy.page_size = 1
    subject = image(proxied, "long/app", tag="v1")
    for n in range(2):
        push_referrer(proxied, "long/app", subject, SPDX, f"sbom {n}".encode())
    (problem,) = referrer_problems(sync())
    assert "lists more than 1 referrers of this manifest" in problem["error"]
    assert Manifest.objects.filter(subject=subject["digest"]).count() == 1


@pytest.mark.django_db
def test_after_failed_probes_the_sync_stops_asking(proxied, referrers_proxy):
    for n in range(MAX_PROBE_FAILURES + 3):
        image(proxied, "flaky/app", tag=f"v{n}", seed=f"flaky{n}")
    referrers_proxy.add("GET", r"/referrers/", "status", 500)
    run = sync()
    assert referrers_proxy.referrer_requests() == MAX_PROBE_FAILURES
    problems = referrer_problems(run)
    assert len(problems) == MAX_PROBE_FAILURES + 1
    assert "does not ask again" in problems[-1]["error"]
    assert Manifest.objects.filter(repository__name="flaky/app", fetched=True).count() == 6


# ---- the probe, without a registry ---------------------------------------------------------
class Images:
    """A client serving one small image per tag, with a referrers API that answers
    ``answer`` (None: the registry has none; an exception: it fails)."""

    def __init__(self, answer):
        self.answer = answer
        self.asked = []

    def get_manifest(self, repository, reference):
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
            "mediaType": "application/vnd.example.config", "digest": sha256_digest(
                reference.encode()), "size": 2}, "layers": []}).encode()
        return FetchedManifest(sha256_digest(body), OCI_MANIFEST, body)

    def referrers(self, repository, digest):
        self.asked.append(digest)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def crawl_tags(client, count=20, concurrency=8):
    crawler = Crawler(client, concurrency=concurrency)
    try:
        return crawler, crawler.crawl("probe/app", {f"t{n}": None for n in range(count)}, set())
    finally:
        crawler.close()


def test_a_registry_without_the_api_is_asked_once_however_many_manifests_are_read():
    client = Images(None)
    crawler, result = crawl_tags(client)
    assert len(result.fetched) == 20 and result.problems == []
    assert len(client.asked) == 1 and crawler.referrers_api is False


def test_failing_probes_go_one_at_a_time_and_stop():
    client = Images(RegistryResponseError("boom", status=500))
    crawler, result = crawl_tags(client)
    assert len(client.asked) == MAX_PROBE_FAILURES and crawler.referrers_api is False
    assert len(result.fetched) == 20
    assert len(result.problems) == MAX_PROBE_FAILURES + 1


@pytest.mark.django_db
def test_a_chain_of_referrers_is_followed_to_its_bound_only(proxied, monkeypatch):
    monkeypatch.setattr(crawl_module, "MAX_DEPTH", 1)
    subject = image(proxied, "deep/app", tag="v1")
    sbom = push_referrer(proxied, "deep/app", subject, SPDX, b"sbom")
    signature = push_referrer(proxied, "deep/app", sbom, NOTARY, b"jws")
    (problem,) = referrer_problems(sync())
    assert problem["reference"] == f"deep/app@{sbom['digest']}"
    assert "reached through 1 levels of referrers" in problem["error"]
    assert row("deep/app", sbom["digest"]).is_attached
    assert not Manifest.objects.filter(digest=signature["digest"]).exists()
