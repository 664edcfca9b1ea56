"""What a manifest is to the people who pushed it (image, signature, attestation, SBOM, chart,
other artifact), who made it, and what it belongs to. Plain functions over parsed manifests
and tag names: no HTTP, no database.

Sources (each read, not remembered): OCI image-spec 1.1 manifest.md (``artifactType``,
``subject``, the empty config), OCI distribution-spec 1.1 spec.md (the referrers tag schema
``<alg>-<hex>``), cosign specs/SIGNATURE_SPEC.md (tags ``sha256-<hex>.sig``, simple signing)
and pkg/types (SBOM layer types), BuildKit docs/attestations/attestation-storage.md,
notaryproject signature-specification.md, Helm's OCI media types. The fixtures in
tests/fixtures/artifacts follow them.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import names
from .manifests import (
    BUILDX_PREDICATE, BUNDLE_PREDICATE, COSIGN_PREDICATE, COSIGN_SIGNATURE, IMAGE, INDEX,
    REFERENCE_DIGEST, REFERENCE_TYPE, Descriptor, Manifest)

SIGNATURE, ATTESTATION, SBOM = "signature", "attestation", "sbom"
CHART, ARTIFACT = "chart", "artifact"
KINDS = (IMAGE, INDEX, SIGNATURE, ATTESTATION, SBOM, CHART, ARTIFACT)
LABELS = {IMAGE: "Image", INDEX: "Image index", SIGNATURE: "Signature",
          ATTESTATION: "Attestation", SBOM: "SBOM", CHART: "Helm chart"}
COSIGN, NOTATION, BUILDX, HELM = "cosign", "notation", "buildx", "helm"
TOOLS = {COSIGN: "cosign", NOTATION: "Notation", BUILDX: "docker buildx", HELM: "Helm"}

# Media types, wherever they appear (artifactType, config or first layer), and their kind.
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
SPDX_JSON = "application/spdx+json"  # as oras and notation users attach an SPDX SBOM
NOTATION_SIGNATURE = "application/vnd.cncf.notary.signature"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
SIGSTORE_BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
SIGSTORE_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
IMAGE_CONFIGS = ("application/vnd.oci.image.config.v1+json",
                 "application/vnd.docker.container.image.v1+json")
_KIND_OF_TYPE = {
    HELM_CONFIG: CHART,
    HELM_CHART: CHART,
    NOTATION_SIGNATURE: SIGNATURE,
    SIMPLE_SIGNING: SIGNATURE,
    "application/vnd.dev.cosign.artifact.sig.v1+json": SIGNATURE,  # cosign OCI 1.1 mode
    IN_TOTO: ATTESTATION,
    DSSE: ATTESTATION,
    "application/vnd.dev.cosign.artifact.att.v1+json": ATTESTATION,
    "application/vnd.docker.attestation.config.v1+json": ATTESTATION,  # BuildKit's own config
    "application/vnd.dev.cosign.artifact.sbom.v1+json": SBOM,
    "application/vnd.syft+json": SBOM,
}
# SPDX and CycloneDX come in many spellings: text/spdx, spdx+json (cosign),
# application/spdx+json, text/spdx+json, application/vnd.cyclonedx+json / +xml.
_SBOM_WORDS = ("spdx", "cyclonedx")
# Made by a known tool when one of these types appears.
_TOOL_OF_TYPE = {
    HELM_CONFIG: HELM, NOTATION_SIGNATURE: NOTATION, SIMPLE_SIGNING: COSIGN,
    "application/vnd.dev.cosign.artifact.sig.v1+json": COSIGN,
    "application/vnd.dev.cosign.artifact.att.v1+json": COSIGN,
    "application/vnd.dev.cosign.artifact.sbom.v1+json": COSIGN,
}
# The value of REFERENCE_TYPE (manifests.py names the annotation keys) on BuildKit's index
# entry of an attestation manifest.
ATTESTATION_MANIFEST = "attestation-manifest"

_HEX = frozenset("0123456789abcdef")
_FALLBACK_PREFIX = "sha256-"
_FALLBACK_LEN = len(_FALLBACK_PREFIX) + 64
# The kind each cosign tag suffix names.
KIND_OF_COSIGN_TAG = {"sig": SIGNATURE, "att": ATTESTATION, "sbom": SBOM}
_COSIGN_MAX_LEN = _FALLBACK_LEN + len(".sbom")
MAX_PREDICATES = 8
# How far hubmgr follows a chain of subjects (a signature of an attestation of an image),
# referrers of referrers, or indexes inside indexes: a deeper chain, or one that loops, is
# not followed. The inventory, the table, the crawler and the deletion graph all use this.
MAX_DEPTH = 8


@dataclass(frozen=True)
class Artifact:
    """What one manifest is, for the table, the API and deletion."""

    kind: str  # one of KINDS
    media_type: str = ""  # the type that decided an artifact kind; "" for images and indexes
    tool: str = ""  # COSIGN, NOTATION, BUILDX, HELM or "" when not known
    subject: str = ""  # digest of what it belongs to; "" when it stands alone
    referrers_list: bool = False  # a referrers fallback index (tag sha256-<hex>)
    predicates: tuple[str, ...] = ()  # in-toto predicate types of an attestation

    @property
    def label(self) -> str:
        """The word in the table: the kind's label, or the media type of another artifact."""
        if self.referrers_list:
            return "Referrers list"
        if self.kind == ARTIFACT:
            return self.media_type or "Artifact"
        return LABELS[self.kind]

    @property
    def attached(self) -> bool:
        """Belongs to another manifest, and goes with it."""
        return bool(self.subject)


# What a row shows of the artifacts attached to it (or, for an index, to the images it lists).
SIGNED, HAS_SBOM, ATTESTED = "signed", "has SBOM", "attested"


def marks(attached: Iterable[Artifact]) -> list[str]:
    """The words an item's row shows at a glance for what is attached to it: signed, has
    SBOM (an SBOM, or an attestation whose predicate is an SPDX or CycloneDX document),
    attested (any other attestation, e.g. provenance)."""
    found = set()
    for artifact in attached:
        sbom_predicate = any(word in p.lower() for p in artifact.predicates
                             for word in _SBOM_WORDS)
        if artifact.kind == SIGNATURE:
            found.add(SIGNED)
        elif artifact.kind == SBOM or (artifact.kind == ATTESTATION and sbom_predicate):
            found.add(HAS_SBOM)
        if artifact.kind == ATTESTATION and any(
                not any(word in p.lower() for word in _SBOM_WORDS)
                for p in artifact.predicates or ("",)):
            found.add(ATTESTED)
    return [mark for mark in (SIGNED, HAS_SBOM, ATTESTED) if mark in found]


def cosign_tag(tag) -> tuple[str, str] | None:
    """(subject digest, "sig" | "att" | "sbom") for cosign's tag scheme
    ``sha256-<64 hex>.<suffix>``, else None. Length first, no regex: constant time on any
    input."""
    if not isinstance(tag, str) or not _FALLBACK_LEN + 4 <= len(tag) <= _COSIGN_MAX_LEN:
        return None
    head, dot, suffix = tag.rpartition(".")
    digest = fallback_tag(head) if dot and suffix in KIND_OF_COSIGN_TAG else None
    return (digest, suffix) if digest else None


def fallback_tag(tag) -> str | None:
    """The subject digest named by a referrers fallback tag ``sha256-<64 hex>``, else None.
    Only sha256: the tag schema cuts longer digests (sha512) to 64 characters, so their
    subject cannot be read back. Uppercase or short hex is not a digest and is refused."""
    if not isinstance(tag, str) or len(tag) != _FALLBACK_LEN:
        return None
    if not tag.startswith(_FALLBACK_PREFIX) or not _HEX.issuperset(tag[len(_FALLBACK_PREFIX):]):
        return None
    return "sha256:" + tag[len(_FALLBACK_PREFIX):]


def buildx_attestations(index: Manifest) -> dict[str, str]:
    """Child digest -> digest of what it attests, for each entry of ``index`` that BuildKit
    marks as an attestation manifest. The attested digest is normally a sibling in the same
    index; it is not checked here, so an attestation of a missing image reads as an orphan
    rather than as an image. "" when the annotation holds no valid digest."""
    found = {}
    for child in index.children:
        if child.annotations.get(REFERENCE_TYPE) == ATTESTATION_MANIFEST:
            subject = child.annotations.get(REFERENCE_DIGEST, "")
            found[child.digest] = subject if names.valid_digest(subject) else ""
    return found


def referrers_subject(index: Manifest, subject_of: Mapping[str, str]) -> str:
    """The one subject every entry of ``index`` refers to, given each known manifest's
    subject digest; "" when the entries are not all referrers of one subject. Recognises a
    referrers list that no tag names any more (the earlier versions a client leaves untagged
    each time it adds a referrer)."""
    subjects = {subject_of.get(child.digest, "") for child in index.children}
    if index.kind != INDEX or len(subjects) != 1:
        return ""
    return subjects.pop()


def classify(manifest: Manifest, *, tags: Iterable[str] = (),
             entry: Descriptor | None = None) -> Artifact:
    """What ``manifest`` is. ``tags`` are the tags pointing at it (cosign's and the
    referrers fallback scheme name a subject); ``entry`` is the descriptor an index lists it
    with (BuildKit marks attestations there, not in the manifest). The kind is decided by,
    in order: artifactType, config media type, first layer media type, BuildKit's entry
    annotations, cosign's tag suffix."""
    tags = list(tags)
    cosign = next(filter(None, map(cosign_tag, tags)), None)
    buildx = entry is not None and entry.annotations.get(REFERENCE_TYPE) == ATTESTATION_MANIFEST
    if manifest.kind == INDEX:
        return _classify_index(manifest, tags)
    kind, media_type = _own_kind(manifest)
    if kind == IMAGE and buildx:
        kind = ATTESTATION
    if kind == IMAGE and cosign:
        kind = KIND_OF_COSIGN_TAG[cosign[1]]
    subject = _subject(manifest, entry if buildx else None, cosign)
    return Artifact(kind, media_type if kind != IMAGE else "",
                    _tool(manifest, media_type, buildx, cosign), subject, False,
                    _predicates(manifest) if kind == ATTESTATION else ())


def _classify_index(index: Manifest, tags: list[str]) -> Artifact:
    """An index is an image index unless it declares an artifactType; a tag
    ``sha256-<hex>`` makes it that subject's referrers list."""
    listed = next(filter(None, map(fallback_tag, tags)), None)
    subject = index.subject.digest if index.subject else (listed or "")
    if index.artifact_type:
        kind = kind_of_type(index.artifact_type, index.annotations) or ARTIFACT
        return Artifact(kind, index.artifact_type, _TOOL_OF_TYPE.get(index.artifact_type, ""),
                        subject)
    return Artifact(INDEX, "", "", subject, referrers_list=bool(listed) and not index.subject)


def kind_of_type(media_type: str, annotations: Mapping[str, str] | None = None) -> str | None:
    """The artifact kind a media type names, or None when it names none we know. A sigstore
    bundle holds a signature or an attestation; its predicate annotation says which."""
    media_type = media_type.lower()
    if media_type in _KIND_OF_TYPE:
        return _KIND_OF_TYPE[media_type]
    if media_type.startswith(SIGSTORE_BUNDLE_PREFIX):
        signed = (annotations or {}).get(BUNDLE_PREDICATE) == SIGSTORE_SIGN_PREDICATE
        return SIGNATURE if signed else ATTESTATION
    if any(word in media_type for word in _SBOM_WORDS):
        return SBOM
    return None


def _own_kind(manifest: Manifest) -> tuple[str, str]:
    """(kind, deciding media type) from the manifest alone. An image config (what cosign
    and BuildKit use for their artifacts too) lets the first layer decide; the OCI empty
    config means the first layer names the artifact; any other config names it itself."""
    if manifest.artifact_type:
        kind = kind_of_type(manifest.artifact_type, manifest.annotations)
        return kind or ARTIFACT, manifest.artifact_type
    config = manifest.config.media_type if manifest.config else ""
    first = manifest.layers[0] if manifest.layers else None
    if config in IMAGE_CONFIGS or not config:
        kind = first and kind_of_type(first.media_type, first.annotations)
        return (kind, first.media_type) if kind else (IMAGE, "")
    if config == EMPTY_CONFIG:
        named = first.media_type if first and first.media_type != EMPTY_CONFIG else config
        return kind_of_type(named) or ARTIFACT, named
    return kind_of_type(config, manifest.annotations) or ARTIFACT, config


def _subject(manifest: Manifest, entry: Descriptor | None, cosign) -> str:
    """What it belongs to, first found of: the OCI subject field, BuildKit's reference
    digest, the digest in a cosign tag."""
    if manifest.subject:
        return manifest.subject.digest
    if entry is not None and names.valid_digest(entry.annotations.get(REFERENCE_DIGEST)):
        return entry.annotations[REFERENCE_DIGEST]
    return cosign[0] if cosign else ""


def _tool(manifest: Manifest, media_type: str, buildx: bool, cosign) -> str:
    """Who made it, where the manifest or its tag says so."""
    config = manifest.config.media_type if manifest.config else ""
    for known in (media_type.lower(), config.lower()):
        if known in _TOOL_OF_TYPE:
            return _TOOL_OF_TYPE[known]
    first = manifest.layers[0].annotations if manifest.layers else {}
    if buildx or BUILDX_PREDICATE in first:
        return BUILDX
    if (cosign or COSIGN_SIGNATURE in first or BUNDLE_PREDICATE in manifest.annotations
            or media_type.startswith(SIGSTORE_BUNDLE_PREFIX)):
        return COSIGN
    return ""


def _predicates(manifest: Manifest) -> tuple[str, ...]:
    """The in-toto predicate types an attestation declares (BuildKit and cosign put them in
    layer annotations, a sigstore bundle in the manifest's): tells an SBOM attestation from
    provenance without fetching the blobs. At most MAX_PREDICATES."""
    found = [manifest.annotations.get(BUNDLE_PREDICATE, "")]
    for layer in manifest.layers[:MAX_PREDICATES]:
        found += [layer.annotations.get(BUILDX_PREDICATE, ""),
                  layer.annotations.get(COSIGN_PREDICATE, "")]
    return tuple(dict.fromkeys(p for p in found if p))[:MAX_PREDICATES]
