"""The registry client against a real docker-registry: paging, manifests, auth, errors."""

import pytest

from hubmgr import devstack
from hubmgr.registry.client import RegistryClient
from hubmgr.registry.errors import (
    RegistryAuthError,
    RegistryNotFound,
    RegistryUnavailable,
)
from hubmgr.registry.manifests import OCI_INDEX


def small_image(client, repo, tag=None, seed="x", platform="linux/amd64"):
    return devstack.push_image(client, repo, [devstack.make_layer(seed, 300)], tag=tag,
                               platform=platform)


def test_catalog_follows_link_pages(registry_client):
    for n in range(5):
        small_image(registry_client, f"paging/repo{n}", tag="v1", seed=f"p{n}")
    assert list(registry_client.catalog(page_size=2)) == [f"paging/repo{n}" for n in range(5)]


def test_tags_of_a_missing_repository_is_empty(registry_client):
    assert registry_client.tags("does/not-exist") == []


def test_it_reads_a_multi_arch_index_not_one_platform(registry_client):
    kids = [small_image(registry_client, "multi/app", seed=p, platform=p)
            for p in ("linux/amd64", "linux/arm64/v8")]
    digest = devstack.push_index(registry_client, "multi/app", kids, tag="1.0")
    fetched = registry_client.get_manifest("multi/app", "1.0")
    assert fetched.digest == digest and fetched.media_type == OCI_INDEX
    manifest = fetched.parse()
    assert manifest.kind == "index"
    assert [c.platform for c in manifest.children] == ["linux/amd64", "linux/arm64/v8"]
    assert registry_client.head_manifest("multi/app", "1.0") == digest


def test_delete_answers_gone_the_second_time(registry_client):
    desc = small_image(registry_client, "del/me", tag="t")
    assert registry_client.delete_manifest("del/me", desc["digest"]) is True
    assert registry_client.delete_manifest("del/me", desc["digest"]) is False
    assert registry_client.head_manifest("del/me", desc["digest"]) is None


def test_a_missing_manifest_is_not_found(registry_client):
    small_image(registry_client, "nf/repo", tag="t")
    with pytest.raises(RegistryNotFound) as err:
        registry_client.get_manifest("nf/repo", "nope")
    assert err.value.code == "MANIFEST_UNKNOWN"


def test_a_registry_that_is_down_gives_an_actionable_error():
    client = RegistryClient(f"http://127.0.0.1:{devstack.free_port()}")
    with pytest.raises(RegistryUnavailable) as err:
        client.ping()
    assert "Cannot connect to the registry" in str(err.value)
    assert "HUBMGR_REGISTRY_URL" in str(err.value)
    assert err.value.transient


def test_a_slow_registry_times_out_with_a_message(fault_proxy):
    fault_proxy.add("GET", r"^/v2/$", "delay", 2)
    client = RegistryClient(fault_proxy.url, timeout=(1, 0.5))
    with pytest.raises(RegistryUnavailable) as err:
        client.ping()
    assert "did not answer" in str(err.value)


def test_basic_auth_with_the_right_password(basic_registry):
    client = RegistryClient(basic_registry.url, "robot", "s3cret")
    small_image(client, "basic/repo", tag="v1")
    assert client.tags("basic/repo") == ["v1"]
    assert list(client.catalog()) == ["basic/repo"]


def test_basic_auth_with_a_wrong_password_says_which_settings(basic_registry):
    client = RegistryClient(basic_registry.url, "robot", "wrong")
    with pytest.raises(RegistryAuthError) as err:
        client.ping()
    assert "HUBMGR_REGISTRY_PASSWORD" in str(err.value)


def test_basic_auth_without_credentials_asks_for_them(basic_registry):
    with pytest.raises(RegistryAuthError) as err:
        RegistryClient(basic_registry.url).ping()
    assert "asks for a login" in str(err.value)


@pytest.fixture
def token_registry(tmp_path, token_server):
    service = devstack.start_registry(tmp_path / "tokenreg", token_auth=token_server.registry_auth())
    yield service
    service.stop()


def test_bearer_token_flow_caches_tokens_per_scope(token_registry, token_server):
    client = RegistryClient(token_registry.url, "robot", "s3cret")
    small_image(client, "tok/repo", tag="v1")
    issued = token_server.issued
    assert client.tags("tok/repo") == ["v1"]
    assert client.get_manifest("tok/repo", "v1").parse().kind == "image"
    client.get_manifest("tok/repo", "v1")
    # One new token for the pull scope, then reuse.
    assert token_server.issued == issued + 1
    assert list(client.catalog()) == ["tok/repo"]


def test_bearer_token_refused_by_the_token_server(token_registry):
    client = RegistryClient(token_registry.url, "robot", "wrong")
    with pytest.raises(RegistryAuthError) as err:
        client.tags("tok/repo")
    assert "token server" in str(err.value) and "refused" in str(err.value)
