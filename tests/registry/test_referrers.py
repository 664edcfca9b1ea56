"""The client's referrers API (OCI distribution spec 1.1, Listing Referrers): against a proxy
in front of the real registry that answers it as the spec says (tests.support.referrers), and
against the plain registry, which has no such API (2.8 answers 404)."""

import json

import pytest

from hubmgr import devstack
from hubmgr.registry import client as client_module
from hubmgr.registry.client import Referrers, RegistryClient
from hubmgr.registry.errors import ManifestInvalid, RegistryResponseError
from hubmgr.registry.manifests import (
    MAX_ANNOTATIONS, MAX_ENTRIES, MAX_TEXT, OCI_INDEX, OCI_MANIFEST, parse_referrers)

from tests.support.referrers import push_referrer

SPDX = "application/spdx+json"
NOTARY = "application/vnd.cncf.notary.signature"
DIGEST = "sha256:" + "b" * 64


@pytest.fixture
def proxied(referrers_proxy):
    """A client that talks to the registry through the referrers proxy."""
    client = RegistryClient(referrers_proxy.url)
    yield client
    client.close()


def subject(client, repo="ref/app", tag="v1"):
    return devstack.push_image(client, repo, [devstack.make_layer(f"{repo}-{tag}", 300)],
                               tag=tag)


def test_it_lists_referrers_pushed_by_digest_with_their_type_and_annotations(proxied):
    image = subject(proxied)
    sbom = push_referrer(proxied, "ref/app", image, SPDX, b'{"spdxVersion": "SPDX-2.3"}',
                         annotations={"org.opencontainers.image.created": "2026-11-01T00:00:00Z"})
    signature = push_referrer(proxied, "ref/app", image, NOTARY, b"jws")
    listing = proxied.referrers("ref/app", image["digest"])
    assert listing.complete
    found = {d.digest: d for d in listing.descriptors}
    assert set(found) == {sbom["digest"], signature["digest"]}
    assert found[sbom["digest"]].artifact_type == SPDX
    assert found[sbom["digest"]].media_type == OCI_MANIFEST
    assert found[sbom["digest"]].size == sbom["size"]
    assert found[sbom["digest"]].annotations == {
        "org.opencontainers.image.created": "2026-11-01T00:00:00Z"}
    assert found[signature["digest"]].artifact_type == NOTARY


def test_a_manifest_without_referrers_has_an_empty_list(proxied):
    image = subject(proxied)
    assert proxied.referrers("ref/app", image["digest"]) == Referrers([], complete=True)


def test_the_plain_registry_has_no_referrers_api(registry_client):
    image = subject(registry_client)
    assert registry_client.referrers("ref/app", image["digest"]) is None


def test_it_follows_link_pages(proxied, referrers_proxy):
    image = subject(proxied)
    pushed = {push_referrer(proxied, "ref/app", image, SPDX, f"sbom {n}".encode())["digest"]
              for n in range(5)}
    referrers_proxy.page_size = 2
    listing = proxied.referrers("ref/app", image["digest"])
    assert {d.digest for d in listing.descriptors} == pushed and listing.complete
    assert referrers_proxy.referrer_requests() == 3


def test_a_listing_longer_than_its_bound_is_read_to_the_bound_only(
        proxied, referrers_proxy, monkeypatch):
    monkeypatch.setattr(client_module, "MAX_REFERRER_PAGES", 2)
    image = subject(proxied)
    for n in range(3):
        push_referrer(proxied, "ref/app", image, SPDX, f"sbom {n}".encode())
    referrers_proxy.page_size = 1
    listing = proxied.referrers("ref/app", image["digest"])
    assert len(listing.descriptors) == 2 and not listing.complete
    assert referrers_proxy.referrer_requests() == 2


@pytest.mark.parametrize("filters", [True, False])
def test_it_lists_one_artifact_type_whether_or_not_the_registry_filters(
        proxied, referrers_proxy, filters):
    referrers_proxy.filters = filters
    image = subject(proxied)
    sbom = push_referrer(proxied, "ref/app", image, SPDX, b"sbom")
    push_referrer(proxied, "ref/app", image, NOTARY, b"jws")
    listing = proxied.referrers("ref/app", image["digest"], artifact_type=SPDX)
    assert [d.digest for d in listing.descriptors] == [sbom["digest"]]
    assert referrers_proxy.count("GET", r"/referrers/.*artifactType=application%2Fspdx%2Bjson")


@pytest.mark.parametrize("body, reason", [
    ("<html>not json</html>", "not valid JSON"),
    (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "manifests": []}),
     "not an OCI image index"),
    (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                 "manifests": [{"digest": "sha256:short", "size": 1}]}), "no valid digest"),
    ('{"manifests": [' + "0," * (5 * 1024 * 1024) + "0]}", "larger than"),
])
def test_a_malformed_or_huge_listing_is_a_typed_error(proxied, referrers_proxy, body, reason):
    image = subject(proxied)
    referrers_proxy.add("GET", r"/referrers/", "body", body)
    with pytest.raises(ManifestInvalid) as err:
        proxied.referrers("ref/app", image["digest"])
    assert reason in str(err.value) and "ref/app@" + image["digest"] in str(err.value)


def test_a_server_error_is_a_transient_typed_error(proxied, referrers_proxy):
    image = subject(proxied)
    referrers_proxy.add("GET", r"/referrers/", "status", 503)
    with pytest.raises(RegistryResponseError) as err:
        proxied.referrers("ref/app", image["digest"])
    assert err.value.transient and err.value.status == 503


# ---- parsing, without a registry -------------------------------------------------------------
def listing(entries, **extra):
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
                       **extra}).encode()


def entry(**extra):
    return {"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": 500, **extra}


def test_parse_referrers_bounds_what_a_pusher_wrote():
    annotations = {f"key{n}": "v" * 5000 for n in range(200)}
    (found,) = parse_referrers(listing([entry(artifactType="x" * 5000,
                                              annotations=annotations)]))
    assert len(found.artifact_type) == MAX_TEXT
    assert len(found.annotations) == MAX_ANNOTATIONS
    assert all(len(v) == MAX_TEXT for v in found.annotations.values())


def test_parse_referrers_refuses_more_entries_than_an_index_may_hold():
    with pytest.raises(ManifestInvalid, match="more than"):
        parse_referrers(listing([entry()] * (MAX_ENTRIES + 1)))


def test_parse_referrers_takes_the_content_type_when_the_body_names_none():
    body = json.dumps({"schemaVersion": 2, "manifests": [entry()]}).encode()
    assert [d.digest for d in parse_referrers(body, OCI_INDEX + "; charset=utf-8")] == [DIGEST]
    with pytest.raises(ManifestInvalid, match="not an OCI image index"):
        parse_referrers(body, "application/json")


@pytest.mark.parametrize("body", [b"", b"[]", b"\xff\xfe", b"[" * 100_000, b'{"manifests": 5}'])
def test_parse_referrers_raises_only_manifest_invalid(body):
    with pytest.raises(ManifestInvalid):
        parse_referrers(body, OCI_INDEX)
