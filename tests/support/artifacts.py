"""Today's artifacts pushed to a real registry, shaped as the tools write them.

Each manifest starts from its fixture in tests/fixtures/artifacts (see its README: media types,
annotations, artifactType, subject, field order and JSON layout of the tool that writes it);
only what must be real changes: every config and layer is a real blob pushed first (so the
registry accepts the manifest, and its garbage collector and disk hold them), and every
manifest-to-manifest reference (index entries, ``subject``, referrers-list entries) names a
manifest pushed here (or one already in the registry, described by ``stored``). A foreign layer
stays as the fixture has it: the registry never stores it.

Each push returns a ``Pushed``: digest, manifest bytes, and the blobs the registry stores for
it (for an index, those of every manifest below), so tests assert sizes exactly.
"""

import base64
import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field

from hubmgr import devstack
from hubmgr.registry.manifests import (
    BUILDX_PREDICATE, COSIGN_SIGNATURE, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
    REFERENCE_DIGEST, sha256_digest)

from .helpers import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "artifacts"
# How each tool lays out its JSON (the fixtures' README): Go's json.Marshal (compact), or
# json.MarshalIndent with BuildKit's two spaces or Docker's three.
COMPACT, BUILDKIT, DOCKER = None, 2, 3
# The cosign tag suffixes and the fixture each kind starts from.
COSIGN_FIXTURES = {"sig": "cosign-signature.json", "att": "cosign-attestation.json",
                   "sbom": "cosign-sbom.json"}
SLSA = "https://slsa.dev/provenance/v0.2"
SPDX_PREDICATE = "https://spdx.dev/Document"
# The OCI empty config's content: the fixtures' ``data: e30=``.
EMPTY_JSON = b"{}"


@dataclass(frozen=True)
class Pushed:
    """One manifest as the registry stores it."""

    digest: str
    size: int  # bytes of the manifest
    media_type: str
    blobs: dict  # {digest: size} of the configs and layers stored for it (and below it)
    tag: str = ""
    foreign: dict = field(default_factory=dict)  # {digest: size} of layers never stored
    data: dict = field(default_factory=dict, compare=False)  # the manifest as pushed

    @property
    def stored_size(self) -> int:
        """The distinct blob bytes a size in the inventory must show."""
        return sum(self.blobs.values())


@dataclass(frozen=True)
class BuildxIndex:
    """`docker buildx build --platform linux/amd64,linux/arm64/v8` with its default provenance
    and SBOM attestations: an index of two images and one attestation manifest per image."""

    index: Pushed
    images: tuple  # linux/amd64, linux/arm64/v8
    attestations: tuple  # the attestation manifest of each image, in the same order

    @property
    def manifests(self) -> list:
        return [self.index, *self.images, *self.attestations]


@dataclass(frozen=True)
class Family:
    """A buildx index and all today's tools attach to it: cosign's signature, attestation and
    SBOM of the index, cosign's signature of its amd64 image, a notation signature and an
    SPDX SBOM as OCI 1.1 referrers, the referrers fallback index tagged ``sha256-<hex>``
    listing both, and the earlier version of it (the signature alone) left untagged when the
    SBOM was added."""

    build: BuildxIndex
    signature: Pushed
    attestation: Pushed
    sbom: Pushed
    child_signature: Pushed
    notation: Pushed
    spdx: Pushed
    earlier_list: Pushed
    referrers_list: Pushed

    @property
    def attached(self) -> list:
        """Everything attached to the index, at any depth (not the index's own images)."""
        return [self.signature, self.attestation, self.sbom, self.notation, self.spdx,
                self.earlier_list, self.referrers_list]

    @property
    def manifests(self) -> list:
        return [*self.build.manifests, *self.attached, self.child_signature]

    @property
    def blobs(self) -> dict:
        return union(self.manifests)


# ---- the tag schemes -------------------------------------------------------------------------
def referrers_tag(digest) -> str:
    """The referrers fallback tag of a subject (distribution spec 1.1: ``<alg>-<ref>``)."""
    return digest.replace(":", "-", 1)


def cosign_tag(digest, suffix) -> str:
    """cosign's tag for what it attaches to ``digest``: ``sha256-<hex>.sig|.att|.sbom``."""
    return f"{referrers_tag(digest)}.{suffix}"


# ---- the tools -------------------------------------------------------------------------------
def push_buildx_index(client, repo, tag="1.0", seed="app") -> BuildxIndex:
    data = template("buildx-index.json")
    entries = data["manifests"]
    images, attestations = [], []
    for entry, platform in zip(entries[:2], ("linux/amd64", "linux/arm64/v8")):
        images.append(push_buildx_image(client, repo, platform, f"{seed}-{platform}"))
        point(entry, images[-1])
    for entry, image in zip(entries[2:], images):
        attestations.append(push_buildx_attestation(client, repo, image))
        point(entry, attestations[-1])
        entry["annotations"][REFERENCE_DIGEST] = image.digest
    index = put(client, repo, data, OCI_INDEX, BUILDKIT, tag, below=images + attestations)
    return BuildxIndex(index, tuple(images), tuple(attestations))


def push_buildx_image(client, repo, platform="linux/amd64", seed="app") -> Pushed:
    data = template("buildx-image-amd64.json")
    layers = [devstack.make_layer(f"{seed}-base", 1500), devstack.make_layer(f"{seed}-app", 300)]
    for descriptor, layer in zip(data["layers"], layers):
        push_blob(client, repo, descriptor, layer)
    push_blob(client, repo, data["config"], image_config(platform, layers))
    return put(client, repo, data, OCI_MANIFEST, BUILDKIT)


def push_buildx_attestation(client, repo, image: Pushed) -> Pushed:
    """BuildKit's attestation manifest of ``image``: its SPDX SBOM and SLSA provenance as
    in-toto statements, under a config of platform unknown/unknown."""
    data = template("buildx-attestation-amd64.json")
    statements = [statement(repo, image.digest, layer["annotations"][BUILDX_PREDICATE])
                  for layer in data["layers"]]
    for descriptor, body in zip(data["layers"], statements):
        push_blob(client, repo, descriptor, body)
    config = {"architecture": "unknown", "os": "unknown", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [sha256_digest(s) for s in statements]}}
    push_blob(client, repo, data["config"], compact(config))
    return put(client, repo, data, OCI_MANIFEST, BUILDKIT)


def push_cosign(client, repo, subject_digest, suffix, tag="", signatures=1) -> Pushed:
    """cosign sign / attest / attach sbom: an image manifest with one layer, tagged
    ``sha256-<hex>.<suffix>`` for ``subject_digest`` (or ``tag``, for hostile tests). Each
    further ``signatures`` is one more layer, as cosign appends when it signs again: the same
    payload, another signature annotation."""
    data = template(COSIGN_FIXTURES[suffix])
    layer = data["layers"][0]
    payload = {"sig": simple_signing, "att": dsse_envelope, "sbom": spdx_document}[suffix](
        repo, subject_digest)
    push_blob(client, repo, layer, payload)
    for n in range(1, signatures):
        data["layers"].append(json.loads(json.dumps(layer)))
        data["layers"][-1]["annotations"][COSIGN_SIGNATURE] = b64(f"signature {n}".encode())
    push_blob(client, repo, data["config"], cosign_config(payload))
    return put(client, repo, data, OCI_MANIFEST, COMPACT,
               tag or cosign_tag(subject_digest, suffix))


def push_notation_signature(client, repo, subject: Pushed, signature=b"signature") -> Pushed:
    """notation sign on an OCI 1.1 registry client: a referrer by digest, untagged. Another
    ``signature`` (its bytes in the envelope) signs the same subject again."""
    data = template("notation-signature.json")
    push_blob(client, repo, data["config"], EMPTY_JSON)
    envelope = {"payload": b64(compact({"targetArtifact": {
        "mediaType": subject.media_type, "digest": subject.digest, "size": subject.size}})),
        "protected": b64(b'{"alg":"PS256","cty":"application/vnd.cncf.notary.payload.v1+json"}'),
        "header": {"x5c": [b64(b"certificate")]}, "signature": b64(signature)}
    push_blob(client, repo, data["layers"][0], compact(envelope))
    point(data["subject"], subject)
    return put(client, repo, data, OCI_MANIFEST, COMPACT)


def push_spdx_referrer(client, repo, subject: Pushed | None, artifact_type="",
                       tag="") -> Pushed:
    """oras attach --artifact-type application/spdx+json: a referrer by digest, untagged.
    Without a ``subject`` it is what ``oras push --artifact-type`` writes (tagged ``tag``);
    ``artifact_type`` replaces the fixture's (hostile tests)."""
    data = template("sbom-spdx-referrer.json")
    push_blob(client, repo, data["config"], EMPTY_JSON)
    push_blob(client, repo, data["layers"][0],
              spdx_document(repo, subject.digest if subject else tag))
    if subject is None:
        del data["subject"]
    else:
        point(data["subject"], subject)
    data["artifactType"] = artifact_type or data["artifactType"]
    return put(client, repo, data, OCI_MANIFEST, COMPACT, tag)


def push_referrers_list(client, repo, subject: Pushed, referrers) -> Pushed:
    """The referrers fallback index a client without the referrers API pushes to tag
    ``sha256-<hex>``: one entry per referrer, its artifactType and annotations copied.
    Pushing a longer list later leaves this one in the registry, untagged."""
    data = template("referrers-fallback-index.json")
    shape = data["manifests"][0]
    data["manifests"] = []
    for referrer in referrers:
        entry = dict(shape)
        point(entry, referrer)
        entry["annotations"] = referrer.data.get("annotations", {})
        entry["artifactType"] = referrer.data["artifactType"]
        data["manifests"].append(entry)
    return put(client, repo, data, OCI_INDEX, COMPACT, referrers_tag(subject.digest),
               below=referrers)


def push_helm_chart(client, repo, name="mychart", version="0.1.0") -> Pushed:
    """helm push: the chart's metadata as config, its .tgz as the one layer, tagged with its
    version; no mediaType field (the registry serves it as an OCI image manifest)."""
    data = template("helm-chart.json")
    chart = {"apiVersion": "v2", "description": "A Helm chart for Kubernetes", "name": name,
             "type": "application", "version": version}
    push_blob(client, repo, data["config"], compact(chart))
    push_blob(client, repo, data["layers"][0], tgz({
        f"{name}/Chart.yaml": f"apiVersion: v2\nname: {name}\nversion: {version}\n".encode(),
        f"{name}/values.yaml": b"replicaCount: 1\n"}))
    data["annotations"]["org.opencontainers.image.title"] = name
    data["annotations"]["org.opencontainers.image.version"] = version
    return put(client, repo, data, OCI_MANIFEST, COMPACT, version)


def push_windows_image(client, repo, tag="") -> Pushed:
    """A Windows image: its base layer foreign (the fixture's, with its urls; never pushed,
    the registry must allow foreign URLs), one stored layer. Docker's schema2 layout."""
    data = template("windows-foreign.json")
    foreign, layer = data["layers"]
    body = devstack.make_layer(f"{repo}-windows", 1200)
    push_blob(client, repo, layer, body)
    config = {"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.5576",
              "created": "2026-02-01T00:00:00Z", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [
                  sha256_digest(foreign["digest"].encode()),
                  sha256_digest(gzip.decompress(body))]}}
    push_blob(client, repo, data["config"], compact(config))
    return put(client, repo, data, DOCKER_MANIFEST, DOCKER, tag)


def push_nested_index(client, repo, windows: Pushed, image: Pushed, tag="nested"):
    """An OCI index (crane / regctl style) listing a Docker manifest list, which lists the
    Windows image, and ``image``. Returns (the outer index, the manifest list)."""
    child = template("nested-child-index.json")
    point(child["manifests"][0], windows)
    inner = put(client, repo, child, DOCKER_LIST, DOCKER, below=[windows])
    data = template("nested-index.json")
    point(data["manifests"][0], inner)
    point(data["manifests"][1], image)
    return put(client, repo, data, OCI_INDEX, COMPACT, tag, below=[inner, image]), inner


def push_family(client, repo, tag="1.0", seen=None) -> Family:
    """A buildx index tagged ``tag`` and all of ``Family``. ``seen`` is called once the first
    referrers list is tagged, before the SBOM's list replaces it: a test syncs there, as a
    sync or a push event shows hubmgr each version of the list."""
    build = push_buildx_index(client, repo, tag)
    index = build.index
    signature, attestation, sbom = (push_cosign(client, repo, index.digest, suffix)
                                    for suffix in ("sig", "att", "sbom"))
    child_signature = push_cosign(client, repo, build.images[0].digest, "sig")
    notation = push_notation_signature(client, repo, index)
    earlier = push_referrers_list(client, repo, index, [notation])
    if seen is not None:
        seen()
    spdx = push_spdx_referrer(client, repo, index)
    listed = push_referrers_list(client, repo, index, [notation, spdx])
    return Family(build, signature, attestation, sbom, child_signature, notation, spdx,
                  earlier, listed)


# ---- payloads --------------------------------------------------------------------------------
def image_config(platform, layers) -> bytes:
    os_name, arch, *variant = platform.split("/")
    config = {"architecture": arch, "os": os_name, "created": "2026-03-01T00:00:00Z",
              "config": {}, "rootfs": {"type": "layers", "diff_ids": [
                  sha256_digest(gzip.decompress(layer)) for layer in layers]}}
    if variant:
        config["variant"] = variant[0]
    return compact(config)


def cosign_config(payload: bytes) -> bytes:
    """go-containerregistry's config of cosign's artifacts: no platform, zero times."""
    return compact({"architecture": "", "created": "0001-01-01T00:00:00Z",
                    "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
                    "rootfs": {"type": "layers", "diff_ids": [sha256_digest(payload)]},
                    "config": {}})


def simple_signing(repo, digest) -> bytes:
    return compact({"critical": {"identity": {"docker-reference": repo},
                                 "image": {"docker-manifest-digest": digest},
                                 "type": "cosign container image signature"},
                    "optional": None})


def statement(repo, digest, predicate_type) -> bytes:
    """An in-toto statement about ``digest``."""
    return compact({"_type": "https://in-toto.io/Statement/v0.1",
                    "predicateType": predicate_type,
                    "subject": [{"name": f"pkg:docker/{repo}",
                                 "digest": {"sha256": digest.split(":", 1)[1]}}],
                    "predicate": {"note": f"{predicate_type} of {digest}"}})


def dsse_envelope(repo, digest) -> bytes:
    return compact({"payloadType": "application/vnd.in-toto+json",
                    "payload": b64(statement(repo, digest, SLSA)),
                    "signatures": [{"keyid": "", "sig": b64(b"signature")}]})


def spdx_document(repo, digest) -> bytes:
    return compact({"spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0",
                    "SPDXID": "SPDXRef-DOCUMENT", "name": f"{repo}@{digest}",
                    "packages": [{"SPDXID": "SPDXRef-Package-app", "name": "app"}]})


def tgz(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(content), 0
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(buf.getvalue(), mtime=0)


# ---- plumbing --------------------------------------------------------------------------------
def template(name) -> dict:
    """A fixture as a dict, its field order kept."""
    return json.loads((FIXTURES / name).read_text())


def layout(data, indent) -> bytes:
    """The bytes a tool writes: Go's compact json.Marshal, or MarshalIndent."""
    if indent is None:
        return compact(data)
    return json.dumps(data, indent=" " * indent).encode()


def compact(data) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def push_blob(client, repo, descriptor: dict, data: bytes):
    """Push ``data`` and point ``descriptor`` at it; its other fields stay as the tool writes
    them, in their order."""
    descriptor.update(digest=client.push_blob(repo, data), size=len(data))


def point(descriptor: dict, pushed: Pushed):
    """Point a manifest reference (index entry, subject) at ``pushed``."""
    descriptor.update(mediaType=pushed.media_type, digest=pushed.digest, size=pushed.size)


def put(client, repo, data, media_type, indent, tag="", below=()) -> Pushed:
    """PUT the manifest by ``tag`` (or by its digest) and describe it. ``below``: the
    manifests an index lists, whose blobs it counts."""
    body = layout(data, indent)
    digest = client.put_manifest(repo, tag or sha256_digest(body), body, media_type)
    assert digest == sha256_digest(body), "the registry stored other bytes than were sent"
    blobs, foreign = own_blobs(data)
    blobs.update(union(below))
    return Pushed(digest, len(body), media_type, blobs, tag, foreign, data)


def stored(client, repo, digest) -> Pushed:
    """A manifest already in the registry (devstack's images, say), to attach to or list: its
    own config and layers as its blobs (an index's children are not counted)."""
    fetched = client.get_manifest(repo, digest)
    data = json.loads(fetched.body)
    blobs, foreign = own_blobs(data)
    return Pushed(fetched.digest, len(fetched.body), fetched.media_type, blobs, "", foreign,
                  data)


def own_blobs(data) -> tuple[dict, dict]:
    """{digest: size} of a manifest's config and layers: those stored, those foreign."""
    blobs, foreign = {}, {}
    for descriptor in [data["config"], *data["layers"]] if "config" in data else []:
        where = foreign if descriptor.get("urls") else blobs
        where[descriptor["digest"]] = descriptor["size"]
    return blobs, foreign


def union(manifests) -> dict:
    """{digest: size} of the blobs stored for all ``manifests``."""
    blobs = {}
    for pushed in manifests:
        blobs.update(pushed.blobs)
    return blobs


def absent(label) -> Pushed:
    """A manifest never pushed anywhere (a hostile or stale subject): a valid digest, and the
    size and media type a subject descriptor names."""
    return Pushed("sha256:" + hashlib.sha256(label.encode()).hexdigest(), 1634, OCI_INDEX, {})
