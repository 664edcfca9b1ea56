"""Reading manifests, configs and times: malformed input is a ManifestInvalid, never a crash."""

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubmgr.registry.errors import ManifestInvalid
from hubmgr.registry.manifests import (
    DOCKER_LIST,
    OCI_MANIFEST,
    parse_config,
    parse_manifest,
    parse_time,
)
from hubmgr.units import human_size
from hubmgr.web.present import ago

DESC = {"mediaType": "x", "digest": "sha256:" + "1" * 64, "size": 10}


def test_an_index_lists_children_with_platforms():
    body = json.dumps({"manifests": [
        {**DESC, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {**DESC, "digest": "sha256:" + "2" * 64, "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}]}).encode()
    manifest = parse_manifest(body, DOCKER_LIST)
    assert manifest.kind == "index" and manifest.size == len(body)
    assert [c.platform for c in manifest.children] == ["linux/arm/v7", "unknown/unknown"]


def test_an_image_lists_config_and_layers():
    body = json.dumps({"config": DESC, "layers": [DESC, {**DESC, "size": 5}]}).encode()
    manifest = parse_manifest(body, OCI_MANIFEST)
    assert manifest.kind == "image" and [b.size for b in manifest.blobs] == [10, 10, 5]


@pytest.mark.parametrize("body, media_type, reason", [
    (b"{", OCI_MANIFEST, "not valid JSON"),
    (b"[]", OCI_MANIFEST, "not a JSON object"),
    (json.dumps({"layers": []}).encode(), OCI_MANIFEST, "config is not an object"),
    (json.dumps({"config": DESC, "layers": [{**DESC, "size": -1}]}).encode(), OCI_MANIFEST,
     "declares a size of -1 bytes"),
    (json.dumps({"config": DESC}).encode(), OCI_MANIFEST, "'layers' list is missing"),
    (json.dumps({"manifests": {}}).encode(), DOCKER_LIST, "'manifests' list is missing"),
    (json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), "", "unsupported media type"),
])
def test_malformed_manifests_say_what_is_wrong(body, media_type, reason):
    with pytest.raises(ManifestInvalid, match=reason):
        parse_manifest(body, media_type)


@given(st.binary(max_size=300))
def test_any_bytes_either_parse_or_raise_manifest_invalid(body):
    try:
        parse_manifest(body, OCI_MANIFEST)
    except ManifestInvalid:
        pass


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["config", "layers", "manifests", "digest",
                                                       "size", "platform", "os"]), inner,
                                      max_size=4), max_leaves=12))
def test_any_json_either_parses_or_raises_manifest_invalid(data):
    for media_type in (OCI_MANIFEST, DOCKER_LIST, ""):
        try:
            parse_manifest(json.dumps(data).encode(), media_type)
        except ManifestInvalid:
            pass


def test_config_gives_platform_and_created():
    cfg = parse_config(b'{"os": "linux", "architecture": "arm64", "variant": "v8", '
                       b'"created": "2026-01-02T03:04:05.123456789Z"}')
    assert cfg.platform == "linux/arm64/v8"
    assert cfg.created == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
    assert parse_config(b"garbage").platform == ""


@pytest.mark.parametrize("text, expected", [
    ("2026-11-01T10:00:00Z", datetime(2026, 11, 1, 10, tzinfo=timezone.utc)),
    ("2026-11-01T10:00:00.5+01:00", datetime(2026, 11, 1, 9, 0, 0, 500000, tzinfo=timezone.utc)),
    ("2026-11-01T10:00:00", datetime(2026, 11, 1, 10, tzinfo=timezone.utc)),
    ("yesterday", None), ("", None),
])
def test_parse_time(text, expected):
    assert parse_time(text) == expected


def test_human_units():
    assert human_size(999) == "999 B" and human_size(1500) == "1.5 kB"
    assert human_size(3_400_000) == "3.4 MB"
    now = datetime(2026, 11, 27, tzinfo=timezone.utc)
    assert ago(datetime(2026, 8, 20, tzinfo=timezone.utc), now) == "3 months ago"
    assert ago(datetime(2026, 11, 26, 23, 59, 30, tzinfo=timezone.utc), now) == "just now"
    assert ago(datetime(2025, 11, 27, tzinfo=timezone.utc), now) == "1 year ago"
