"""Telling artifacts apart and finding what they belong to, on manifests shaped as the tools
write them (tests/fixtures/artifacts, see its README for the spec each follows)."""

import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubmgr.registry import artifacts
from hubmgr.registry.artifacts import (
    ARTIFACT,
    ATTESTATION,
    BUILDX,
    CHART,
    COSIGN,
    HELM,
    IMAGE,
    INDEX,
    NOTATION,
    SBOM,
    SIGNATURE,
    Artifact,
    buildx_attestations,
    classify,
    cosign_tag,
    fallback_tag,
    kind_of_type,
    referrers_subject,
)
from hubmgr.registry.errors import ManifestInvalid
from hubmgr.registry.manifests import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    SCHEMA1_SIGNED,
    Descriptor,
    parse_manifest,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "artifacts"
HEX = "063293fd4f8e25311c41e33ca109440bc03bae398383543fb4b225c04cad4b17"
SUBJECT = "sha256:" + HEX  # the buildx index every fixture artifact attaches to
AMD64 = "sha256:641ba212ecaf06cae727679928bedf2e8c4259733d33945f00285b3863799054"
MEDIA = {"buildx-index.json": OCI_INDEX, "referrers-fallback-index.json": OCI_INDEX,
         "nested-index.json": OCI_INDEX, "nested-child-index.json": DOCKER_LIST,
         "windows-foreign.json": DOCKER_MANIFEST, "schema1.json": SCHEMA1_SIGNED}


def fixture(name):
    return parse_manifest((FIXTURES / name).read_bytes(), MEDIA.get(name, OCI_MANIFEST))


def test_the_fixture_subject_is_the_buildx_index():
    assert fixture("buildx-index.json").digest == SUBJECT
    assert fixture("buildx-image-amd64.json").digest == AMD64


@pytest.mark.parametrize("name, tags, expected", [
    ("buildx-image-amd64.json", ["v1"], Artifact(IMAGE)),
    ("buildx-index.json", ["v1", "latest"], Artifact(INDEX)),
    ("nested-index.json", [], Artifact(INDEX)),
    ("windows-foreign.json", [], Artifact(IMAGE)),
    ("schema1.json", ["1.24"], Artifact(IMAGE)),
    ("helm-chart.json", ["0.1.0"],
     Artifact(CHART, "application/vnd.cncf.helm.config.v1+json", HELM)),
    ("cosign-signature.json", [f"sha256-{HEX}.sig"],
     Artifact(SIGNATURE, "application/vnd.dev.cosign.simplesigning.v1+json", COSIGN, SUBJECT)),
    ("cosign-attestation.json", [f"sha256-{HEX}.att"],
     Artifact(ATTESTATION, "application/vnd.dsse.envelope.v1+json", COSIGN, SUBJECT,
              predicates=("https://slsa.dev/provenance/v0.2",))),
    ("cosign-sbom.json", [f"sha256-{HEX}.sbom"], Artifact(SBOM, "spdx+json", COSIGN, SUBJECT)),
    ("notation-signature.json", [],
     Artifact(SIGNATURE, "application/vnd.cncf.notary.signature", NOTATION, SUBJECT)),
    ("sbom-spdx-referrer.json", [], Artifact(SBOM, "application/spdx+json", "", SUBJECT)),
    ("referrers-fallback-index.json", [f"sha256-{HEX}"],
     Artifact(INDEX, "", "", SUBJECT, referrers_list=True)),
])
def test_each_tool_s_manifest_is_what_it_is(name, tags, expected):
    assert classify(fixture(name), tags=tags) == expected


@pytest.mark.parametrize("name, label", [
    ("buildx-image-amd64.json", "Image"), ("buildx-index.json", "Image index"),
    ("helm-chart.json", "Helm chart"), ("cosign-signature.json", "Signature"),
    ("cosign-attestation.json", "Attestation"), ("sbom-spdx-referrer.json", "SBOM"),
    ("referrers-fallback-index.json", "Referrers list"),
])
def test_labels(name, label):
    tags = {"referrers-fallback-index.json": [f"sha256-{HEX}"],
            "cosign-attestation.json": [f"sha256-{HEX}.att"]}.get(name, [])
    assert classify(fixture(name), tags=tags).label == label


def test_a_buildx_attestation_is_known_from_its_index_entry():
    index = fixture("buildx-index.json")
    found = buildx_attestations(index)
    attestation = fixture("buildx-attestation-amd64.json")
    assert found[attestation.digest] == AMD64 and len(found) == 2
    assert set(found) <= {c.digest for c in index.children}
    entry = next(c for c in index.children if c.digest == attestation.digest)
    assert classify(attestation, entry=entry) == Artifact(
        ATTESTATION, "application/vnd.in-toto+json", BUILDX, AMD64,
        predicates=("https://spdx.dev/Document", "https://slsa.dev/provenance/v0.2"))


def test_a_buildx_attestation_read_alone_is_still_an_attestation_without_subject():
    artifact = classify(fixture("buildx-attestation-amd64.json"))
    assert (artifact.kind, artifact.tool, artifact.subject) == (ATTESTATION, BUILDX, "")


def test_the_entry_annotations_decide_when_the_manifest_looks_like_an_image():
    entry = Descriptor(OCI_MANIFEST, "sha256:" + "a" * 64, 10, "unknown/unknown",
                       {"vnd.docker.reference.type": "attestation-manifest",
                        "vnd.docker.reference.digest": AMD64})
    artifact = classify(fixture("buildx-image-amd64.json"), entry=entry)
    assert (artifact.kind, artifact.tool, artifact.subject) == (ATTESTATION, BUILDX, AMD64)


def test_an_attestation_entry_with_a_bad_reference_has_no_subject():
    body = json.dumps({"manifests": [
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 1,
         "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                         "vnd.docker.reference.digest": "sha256:NOPE"}},
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "2" * 64, "size": 1,
         "annotations": {"vnd.docker.reference.type": "something-else"}}]}).encode()
    assert buildx_attestations(parse_manifest(body, OCI_INDEX)) == {"sha256:" + "1" * 64: ""}


def test_the_referrers_list_names_one_subject():
    index = fixture("referrers-fallback-index.json")
    subject_of = {fixture(n).digest: classify(fixture(n)).subject
                  for n in ("notation-signature.json", "sbom-spdx-referrer.json")}
    assert referrers_subject(index, subject_of) == SUBJECT
    assert referrers_subject(index, {**subject_of, index.children[0].digest: AMD64}) == ""
    assert referrers_subject(index, {}) == ""
    assert referrers_subject(fixture("buildx-image-amd64.json"), subject_of) == ""


def test_a_subject_field_wins_over_a_tag():
    manifest = fixture("notation-signature.json")
    other = "b" * 64
    assert classify(manifest, tags=[f"sha256-{other}.sig"]).subject == SUBJECT


def test_a_cosign_tag_does_not_turn_an_artifact_of_another_kind():
    assert classify(fixture("helm-chart.json"), tags=[f"sha256-{HEX}.sig"]).kind == CHART


@pytest.mark.parametrize("manifest, kind, media_type", [
    ({"artifactType": "application/sarif+json"}, ARTIFACT, "application/sarif+json"),
    ({"artifactType": "application/vnd.cyclonedx+json"}, SBOM, "application/vnd.cyclonedx+json"),
    ({"config": "application/vnd.wasm.config.v0+json", "layer": "application/wasm"},
     ARTIFACT, "application/vnd.wasm.config.v0+json"),
    ({"config": "application/vnd.cncf.notary.signature"}, SIGNATURE,
     "application/vnd.cncf.notary.signature"),
    ({"config": "application/vnd.in-toto+json"}, ATTESTATION, "application/vnd.in-toto+json"),
    ({"config": "application/vnd.oci.empty.v1+json", "layer": "text/spdx"}, SBOM, "text/spdx"),
    ({"config": "application/vnd.oci.empty.v1+json", "layer": "application/vnd.cyclonedx+xml"},
     SBOM, "application/vnd.cyclonedx+xml"),
    ({"config": "application/vnd.oci.empty.v1+json", "layer": "application/x-custom"},
     ARTIFACT, "application/x-custom"),
    ({"config": "application/vnd.oci.empty.v1+json",
      "layer": "application/vnd.oci.empty.v1+json"},
     ARTIFACT, "application/vnd.oci.empty.v1+json"),
    ({"artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"}, ATTESTATION,
     "application/vnd.dev.sigstore.bundle.v0.3+json"),
    ({"artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
      "annotations": {"dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1"}},
     SIGNATURE, "application/vnd.dev.sigstore.bundle.v0.3+json"),
    ({"config": "application/vnd.docker.container.image.v1+json",
      "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip"}, IMAGE, ""),
])
def test_kinds_from_artifact_type_config_and_layer(manifest, kind, media_type):
    body = {"config": {"mediaType": manifest.get("config", "application/vnd.oci.empty.v1+json"),
                       "digest": "sha256:" + "1" * 64, "size": 2},
            "layers": [{"mediaType": manifest.get("layer", "application/octet-stream"),
                        "digest": "sha256:" + "2" * 64, "size": 3}]}
    for key in ("artifactType", "annotations"):
        if key in manifest:
            body[key] = manifest[key]
    artifact = classify(parse_manifest(json.dumps(body).encode(), OCI_MANIFEST))
    assert (artifact.kind, artifact.media_type) == (kind, media_type)
    assert artifact.label == (media_type if kind == ARTIFACT else artifacts.LABELS[kind])


def test_an_index_with_an_artifact_type_is_that_artifact():
    body = json.dumps({"artifactType": "application/vnd.example.bundle",
                       "manifests": [], "subject": {"mediaType": OCI_MANIFEST,
                                                    "digest": AMD64, "size": 670}}).encode()
    artifact = classify(parse_manifest(body, OCI_INDEX), tags=[f"sha256-{HEX}"])
    assert artifact == Artifact(ARTIFACT, "application/vnd.example.bundle", "", AMD64)
    assert artifact.label == "application/vnd.example.bundle" and artifact.attached


def test_kind_of_type_ignores_case_and_unknowns():
    assert kind_of_type("Application/SPDX+JSON") == SBOM
    assert kind_of_type("application/octet-stream") is None


# --- tag schemes, hostile tags ---------------------------------------------------------------

@pytest.mark.parametrize("tag, expected", [
    (f"sha256-{HEX}.sig", (SUBJECT, "sig")),
    (f"sha256-{HEX}.att", (SUBJECT, "att")),
    (f"sha256-{HEX}.sbom", (SUBJECT, "sbom")),
    (f"sha256-{HEX}", None),
    (f"sha256-{HEX}.sigx", None),
    (f"sha256-{HEX}.SIG", None),
    (f"sha256-{HEX[:63]}.sig", None),
    (f"sha256-{HEX}a.sig", None),
    (f"sha256-{HEX.upper()}.sig", None),
    (f"sha256-{'g' * 64}.sig", None),
    (f"sha512-{HEX}.sig", None),
    (f"sha256:{HEX}.sig", None),
    (f"x.sha256-{HEX}.sig", None),
    ("latest", None), ("", None), (None, None), (42, None),
])
def test_cosign_tag(tag, expected):
    assert cosign_tag(tag) == expected


@pytest.mark.parametrize("tag, expected", [
    (f"sha256-{HEX}", SUBJECT),
    (f"sha256-{HEX}.sig", None),
    (f"sha256-{HEX[:63]}", None),
    (f"sha256-{HEX}0", None),
    (f"sha256-{HEX.upper()}", None),
    (f"sha256-{HEX[:62]}-x", None),
    (f"sha512-{HEX}", None),
    ("v1.0", None), (None, None),
])
def test_fallback_tag(tag, expected):
    assert fallback_tag(tag) == expected


def test_huge_tags_are_refused_at_once():
    huge = [f"sha256-{HEX}" + "a" * 100_000 + ".sig", "sha256-" + "a" * 100_000,
            "." * 100_000, "a" * 99_999 + ".sbom"]
    started = time.monotonic()
    for _ in range(100):
        for tag in huge:
            assert cosign_tag(tag) is None and fallback_tag(tag) is None
    assert time.monotonic() - started < 0.5


@given(st.text(max_size=90))
def test_any_text_is_a_tag_or_none(tag):
    found = cosign_tag(tag)
    assert found is None or (tag == f"sha256-{found[0][7:]}.{found[1]}")
    digest = fallback_tag(tag)
    assert digest is None or tag == "sha256-" + digest[7:]


# --- hostile manifests -----------------------------------------------------------------------

def test_a_5000_character_artifact_type_is_an_artifact_named_by_its_cut_type():
    body = json.dumps({"artifactType": "application/" + "x" * 5_000,
                       "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                  "digest": "sha256:" + "1" * 64, "size": 2},
                       "layers": []}).encode()
    artifact = classify(parse_manifest(body, OCI_MANIFEST))
    assert artifact.kind == ARTIFACT and len(artifact.label) == 255


def test_a_bad_subject_leaves_a_standalone_artifact():
    body = json.loads((FIXTURES / "notation-signature.json").read_bytes())
    body["subject"] = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "A" * 64, "size": 1}
    artifact = classify(parse_manifest(json.dumps(body).encode(), OCI_MANIFEST))
    assert artifact.kind == SIGNATURE and artifact.subject == "" and not artifact.attached


def test_ten_thousand_annotations_still_classify():
    annotations = {f"k{i}": "v" for i in range(10_000)}
    annotations["vnd.docker.reference.type"] = "attestation-manifest"
    annotations["vnd.docker.reference.digest"] = AMD64
    body = json.dumps({"manifests": [{"mediaType": OCI_MANIFEST, "digest": "sha256:" + "1" * 64,
                                      "size": 1, "annotations": annotations}]}).encode()
    index = parse_manifest(body, OCI_INDEX)
    assert buildx_attestations(index) == {"sha256:" + "1" * 64: AMD64}


def test_a_schema1_body_of_20000_layers_is_manifest_invalid():
    layer = {"blobSum": "sha256:" + "1" * 64}
    body = json.dumps({"schemaVersion": 1, "fsLayers": [layer] * 20_000}).encode()
    with pytest.raises(ManifestInvalid, match="more than 10000"):
        parse_manifest(body, SCHEMA1_SIGNED)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from([
                        "config", "layers", "manifests", "mediaType", "digest", "size",
                        "subject", "artifactType", "annotations", "vnd.docker.reference.type",
                        "vnd.docker.reference.digest", "predicateType"]), inner, max_size=4),
                    max_leaves=12),
       st.text(max_size=80))
def test_whatever_parses_classifies_without_raising(data, tag):
    for media_type in (OCI_MANIFEST, OCI_INDEX):
        try:
            manifest = parse_manifest(json.dumps(data).encode(), media_type)
        except ManifestInvalid:
            continue
        artifact = classify(manifest, tags=[tag])
        assert artifact.kind in artifacts.KINDS and isinstance(artifact.label, str)
        if manifest.kind == INDEX:
            buildx_attestations(manifest)
            referrers_subject(manifest, {})
