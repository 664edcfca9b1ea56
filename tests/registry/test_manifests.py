"""Reading manifests, configs and times: malformed input is a ManifestInvalid, never a crash."""

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubmgr.registry.errors import ManifestInvalid
from hubmgr.registry.manifests import (
    ACCEPT,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MAX_ANNOTATIONS,
    MAX_TEXT,
    OCI_INDEX,
    OCI_MANIFEST,
    SCHEMA1_SIGNED,
    SCHEMA1_TYPES,
    parse_config,
    parse_manifest,
    parse_time,
)
from hubmgr.units import human_size
from hubmgr.web.present import ago

DESC = {"mediaType": "x", "digest": "sha256:" + "1" * 64, "size": 10}
FIXTURES = Path(__file__).parents[1] / "fixtures" / "artifacts"
EMPTY_LAYER = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"


def fixture(name, media_type=""):
    return parse_manifest((FIXTURES / name).read_bytes(), media_type)


def image(**extra):
    return json.dumps({"config": DESC, "layers": [DESC], **extra}).encode()


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


# --- OCI 1.1 fields, foreign layers, schema1 -------------------------------------------------

def test_a_referrer_keeps_artifact_type_subject_and_annotations():
    manifest = fixture("notation-signature.json", OCI_MANIFEST)
    assert manifest.artifact_type == "application/vnd.cncf.notary.signature"
    assert manifest.subject.media_type == OCI_INDEX
    assert manifest.subject.digest == fixture("buildx-index.json").digest
    assert manifest.annotations["org.opencontainers.image.created"] == "2025-03-14T09:26:53Z"
    assert manifest.sizes_known
    assert manifest.config.media_type == "application/vnd.oci.empty.v1+json"


def test_referrers_list_entries_keep_their_artifact_type():
    index = fixture("referrers-fallback-index.json", OCI_INDEX)
    assert [c.artifact_type for c in index.children] == [
        "application/vnd.cncf.notary.signature", "application/spdx+json"]
    assert index.subject is None and index.artifact_type == ""


def test_an_index_may_carry_artifact_type_and_subject():
    body = json.dumps({"manifests": [DESC], "artifactType": "application/vnd.example+type",
                       "subject": DESC, "annotations": {"a": "b"}}).encode()
    index = parse_manifest(body, OCI_INDEX)
    assert index.artifact_type == "application/vnd.example+type"
    assert index.subject.digest == DESC["digest"] and index.annotations == {"a": "b"}


def test_a_foreign_layer_is_listed_but_not_stored():
    manifest = fixture("windows-foreign.json", DOCKER_MANIFEST)
    assert [layer.foreign for layer in manifest.layers] == [True, False]
    assert len(manifest.blobs) == 3
    assert sum(b.size for b in manifest.stored_blobs) == 1895 + 331376


@pytest.mark.parametrize("layer, foreign", [
    ({"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"}, True),
    ({"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"}, True),
    ({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
      "urls": ["https://example.com/layer"]}, True),
    ({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "urls": []}, False),
    ({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "urls": "x"}, False),
    ({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}, False),
])
def test_foreign_is_the_media_type_or_any_urls(layer, foreign):
    body = json.dumps({"config": DESC, "layers": [{**DESC, **layer}]}).encode()
    manifest = parse_manifest(body, OCI_MANIFEST)
    assert manifest.layers[0].foreign is foreign
    assert manifest.stored_blobs == manifest.blobs[:2 - foreign]


def test_index_children_are_never_foreign():
    body = json.dumps({"manifests": [{**DESC, "urls": ["https://example.com/m"]}]}).encode()
    assert not parse_manifest(body, OCI_INDEX).children[0].foreign


@pytest.mark.parametrize("subject", [
    "sha256:" + "1" * 64, [DESC], 7, {}, {**DESC, "digest": "sha256:XYZ"},
    {**DESC, "digest": "sha256:" + "1" * 63}, {**DESC, "size": -1}, {**DESC, "size": "10"},
])
def test_a_malformed_subject_is_none_and_the_manifest_still_reads(subject):
    manifest = parse_manifest(image(subject=subject), OCI_MANIFEST)
    assert manifest.subject is None and len(manifest.blobs) == 2


def test_a_long_artifact_type_is_cut():
    manifest = parse_manifest(image(artifactType="a/" + "b" * 4_998), OCI_MANIFEST)
    assert len(manifest.artifact_type) == MAX_TEXT and manifest.artifact_type.endswith("…")
    assert parse_manifest(image(artifactType=["x"]), OCI_MANIFEST).artifact_type == ""
    cleaned = parse_manifest(image(artifactType="a/b\x00\x1b[31m"), OCI_MANIFEST)
    assert cleaned.artifact_type == "a/b[31m"


def test_ten_thousand_annotations_keep_64_and_the_ones_we_read():
    many = {f"k{i}": "v" * 1000 for i in range(10_000)}
    many["vnd.docker.reference.type"] = "attestation-manifest"  # last in the object
    many["x" * 5000] = "long key"
    many["not-a-string"] = {"nested": True}
    started = time.monotonic()
    manifest = parse_manifest(json.dumps({
        "config": DESC, "layers": [{**DESC, "annotations": many}], "annotations": many,
    }).encode(), OCI_MANIFEST)
    assert time.monotonic() - started < 2
    for annotations in (manifest.annotations, manifest.layers[0].annotations):
        assert len(annotations) == MAX_ANNOTATIONS
        assert annotations["vnd.docker.reference.type"] == "attestation-manifest"
        assert all(len(k) <= MAX_TEXT and len(v) <= MAX_TEXT for k, v in annotations.items())


@pytest.mark.parametrize("annotations", [None, [], "x", 5])
def test_annotations_that_are_not_an_object_are_empty(annotations):
    manifest = parse_manifest(image(annotations=annotations), OCI_MANIFEST)
    assert manifest.annotations == {}


def test_a_schema1_manifest_reads_as_an_image_of_unknown_size():
    manifest = fixture("schema1.json", SCHEMA1_SIGNED)
    assert manifest.kind == "image" and manifest.media_type == SCHEMA1_SIGNED
    assert not manifest.sizes_known and manifest.platform == "linux/amd64"
    assert manifest.config is None
    assert [layer.digest for layer in manifest.layers][1] == EMPTY_LAYER  # base first
    assert len(manifest.stored_blobs) == 2 and all(b.size == 0 for b in manifest.blobs)


def test_schema1_keeps_distinct_layers_base_first():
    layers = [EMPTY_LAYER, "sha256:" + "b" * 64, EMPTY_LAYER, "sha256:" + "a" * 64]
    body = json.dumps({"schemaVersion": 1, "architecture": "arm64",
                       "fsLayers": [{"blobSum": d} for d in layers]}).encode()
    manifest = parse_manifest(body, SCHEMA1_TYPES[0])
    assert [b.digest for b in manifest.layers] == [layers[3], EMPTY_LAYER, layers[1]]
    assert manifest.platform == "linux/arm64"


@pytest.mark.parametrize("architecture", ["", "amd64/../x", "a" * 33, 64, None])
def test_schema1_platform_needs_a_plain_architecture(architecture):
    body = json.dumps({"schemaVersion": 1, "architecture": architecture,
                       "fsLayers": [{"blobSum": EMPTY_LAYER}]}).encode()
    assert parse_manifest(body, SCHEMA1_SIGNED).platform == ""


@pytest.mark.parametrize("body, reason", [
    ({"schemaVersion": 1, "fsLayers": [{"blobSum": EMPTY_LAYER}] * 20_000},
     "20000 fsLayers, more than 10000"),
    ({"schemaVersion": 1, "fsLayers": [{"blobSum": "sha256:XYZ"}]}, "fsLayer 0 has no valid"),
    ({"schemaVersion": 1, "fsLayers": ["x"]}, "fsLayer 0 has no valid"),
    ({"schemaVersion": 1}, "'fsLayers' list is missing"),
])
def test_malformed_schema1_says_what_is_wrong(body, reason):
    with pytest.raises(ManifestInvalid, match=reason):
        parse_manifest(json.dumps(body).encode(), SCHEMA1_SIGNED)


def test_accept_lists_schema1_last():
    types = [t.strip() for t in ACCEPT.split(",")]
    assert types[-2:] == list(SCHEMA1_TYPES)
    assert types.index(DOCKER_MANIFEST) < types.index(SCHEMA1_TYPES[0])


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from([
                        "config", "layers", "manifests", "digest", "size", "mediaType", "urls",
                        "subject", "artifactType", "annotations", "fsLayers", "blobSum",
                        "architecture"]), inner, max_size=4), max_leaves=12))
def test_any_json_with_the_new_fields_parses_or_raises_manifest_invalid(data):
    for media_type in (OCI_MANIFEST, OCI_INDEX, SCHEMA1_SIGNED):
        try:
            parse_manifest(json.dumps(data).encode(), media_type)
        except ManifestInvalid:
            pass
