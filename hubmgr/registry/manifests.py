"""Parse manifests and image configs into plain data. No HTTP here."""

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from . import names
from .errors import ManifestInvalid

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
IMAGE, INDEX = "image", "index"  # what a parsed manifest is
IMAGE_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
# Docker schema1 (unsigned and signed). Registries with compatibility.schema1.enabled still
# hold them; distribution serves a stored one with the signed type whatever the request says.
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA1_TYPES = (SCHEMA1, SCHEMA1_SIGNED)
# Every manifest kind we read, so a registry never narrows a multi-arch tag to one platform.
# Schema1 comes last and is safe to list. distribution's manifest GET handler (2.x and v3,
# read in its sources) turns Accept into flags (supports[manifestSchema2],
# supports[manifestlistSchema], supports[ociSchema], ...), ignoring q-values and order, and
# rewrites a schema2 manifest or a manifest list into schema1 only when schema2 (or the list
# type) is absent; it has no flag for schema1 and serves a stored schema1 manifest to anyone.
# So listing schema1 changes nothing there, while a registry that does negotiate may then
# serve a stored schema1 manifest instead of refusing it; the types before it stay preferred.
ACCEPT = ", ".join(INDEX_TYPES + IMAGE_TYPES + SCHEMA1_TYPES)
# Layers a registry is not asked to store (Docker manifest v2-2 "foreign" layers, OCI
# non-distributable layers): clients fetch them from their urls.
FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
NONDISTRIBUTABLE_PREFIX = "application/vnd.oci.image.layer.nondistributable.v1.tar"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# Bounds on what a manifest may declare. The registry does not check declared sizes, so a
# pusher can write any number; these keep every size, and every sum of sizes, far inside a
# 64-bit column on SQLite and PostgreSQL.
MAX_BLOB_SIZE = 2**40  # 1 TiB for one layer or config
MAX_ENTRIES = 10_000  # layers of an image, or children of an index
MAX_TEXT = 255  # any string read from a manifest (media types, annotation keys and values)
MAX_ANNOTATIONS = 64  # annotations kept per manifest or descriptor
# Annotations hubmgr reads (artifacts.py uses these names). BuildKit's on the index entry of
# an attestation manifest; the predicate keys of BuildKit's and cosign's attestation layers
# and of a sigstore bundle; cosign's signature key.
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
BUILDX_PREDICATE = "in-toto.io/predicate-type"
COSIGN_PREDICATE = "predicateType"
BUNDLE_PREDICATE = "dev.sigstore.bundle.predicateType"
COSIGN_SIGNATURE = "dev.cosignproject.cosign/signature"
# Kept whatever their position, so a pusher's 10,000 other keys cannot push them out of the
# MAX_ANNOTATIONS kept.
READ_ANNOTATIONS = (
    REFERENCE_TYPE, REFERENCE_DIGEST, BUILDX_PREDICATE, COSIGN_PREDICATE, BUNDLE_PREDICATE,
    COSIGN_SIGNATURE, "org.opencontainers.image.created", "org.opencontainers.image.title",
    "org.opencontainers.image.version",
)
# "os/arch/variant" parts: short tokens such as linux, arm64, v8.
_PLATFORM_PART = re.compile(r"[A-Za-z0-9_.+-]{1,32}")
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: str = ""  # "os/arch[/variant]" for index children
    annotations: dict = field(default_factory=dict, compare=False, hash=False)
    artifact_type: str = ""  # OCI 1.1: set on referrers-list entries and artifact manifests
    # A layer the registry was not asked to store (foreign or non-distributable media type, or
    # any urls): listed with the image, never counted as stored or probed.
    foreign: bool = False


@dataclass
class Manifest:
    digest: str
    media_type: str
    size: int  # bytes of the manifest itself
    kind: str  # IMAGE or INDEX
    config: Descriptor | None = None
    layers: list[Descriptor] = field(default_factory=list)
    children: list[Descriptor] = field(default_factory=list)
    artifact_type: str = ""  # OCI 1.1 artifactType of an image manifest or an index
    subject: Descriptor | None = None  # OCI 1.1: the manifest this one is attached to
    annotations: dict = field(default_factory=dict)  # the manifest's own, bounded
    # False for schema1, whose fsLayers carry no sizes: a 0 there means "unknown".
    sizes_known: bool = True
    # Read from the manifest itself only for schema1 (which has no config blob to read it
    # from); "" otherwise, where the config or the index entry says it.
    platform: str = ""

    @property
    def blobs(self) -> list[Descriptor]:
        """Config and layers, the blobs an image declares."""
        return ([self.config] if self.config else []) + list(self.layers)

    @property
    def stored_blobs(self) -> list[Descriptor]:
        """The blobs the registry holds for this image: config and layers that are not
        foreign. What sizes, reclaim figures and blob probes count."""
        return [b for b in self.blobs if not b.foreign]


def platform_of(data) -> str:
    """"os/arch[/variant]" from a platform object or an image config; "" when absent or not
    made of short plain tokens."""
    if not isinstance(data, dict):
        return ""
    parts = [data.get("os"), data.get("architecture")]
    if data.get("variant"):
        parts.append(data["variant"])
    if not all(isinstance(p, str) and _PLATFORM_PART.fullmatch(p) for p in parts):
        return ""
    return "/".join(parts)


def text(value, limit=MAX_TEXT) -> str:
    """A string from a manifest, fit for a column: "" when not a string, else cleaned and cut
    to ``limit``. Cleaning looks at a bounded prefix only, so a 4 MiB value costs no more
    than a short one."""
    if not isinstance(value, str):
        return ""
    return names.clean(value[:limit * 4], limit)


def bounded_annotations(raw) -> dict:
    """At most MAX_ANNOTATIONS string-to-string pairs, keys and values cut to MAX_TEXT. The
    keys hubmgr reads come first, so their presence never depends on what else a pusher
    wrote; other keys follow in the manifest's order. Non-string values are dropped (the
    spec says string-string map)."""
    if not isinstance(raw, dict):
        return {}
    kept = {key: text(raw[key]) for key in READ_ANNOTATIONS if isinstance(raw.get(key), str)}
    for key, value in raw.items():
        if len(kept) >= MAX_ANNOTATIONS:
            break
        if isinstance(key, str) and isinstance(value, str):
            kept.setdefault(text(key), text(value))
    return kept


def is_foreign(media_type: str, urls) -> bool:
    """A layer the registry does not require to be stored. distribution's schema2 and OCI
    handlers (registry/storage/schema2manifesthandler.go, ocimanifesthandler.go) skip the
    blob-exists check for the foreign / non-distributable media types and for any descriptor
    with urls, so such a blob is not in the registry unless someone pushed it anyway."""
    return (media_type == FOREIGN_LAYER or media_type.startswith(NONDISTRIBUTABLE_PREFIX)
            or (isinstance(urls, list) and len(urls) > 0))


def _descriptor(raw, where, blob=False):
    if not isinstance(raw, dict):
        raise ManifestInvalid(f"{where} is not an object")
    digest, size = raw.get("digest"), raw.get("size")
    if not names.valid_digest(digest):
        raise ManifestInvalid(f"{where} has no valid digest ({names.shown(digest)})")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB_SIZE:
        raise ManifestInvalid(f"{where} ({digest}) declares a size of {names.shown(size, 30)} "
                              f"bytes, outside 0 to {MAX_BLOB_SIZE} (1 TiB)")
    media_type = text(raw.get("mediaType"))
    return Descriptor(media_type, digest, size, platform_of(raw.get("platform")),
                      bounded_annotations(raw.get("annotations")),
                      text(raw.get("artifactType")),
                      blob and is_foreign(media_type, raw.get("urls")))


def _subject(raw) -> Descriptor | None:
    """The OCI 1.1 subject, or None when absent or malformed: a bad subject is the pusher's
    claim about something else and must not make the manifest itself unreadable."""
    if raw is None:
        return None
    try:
        return _descriptor(raw, "subject")
    except ManifestInvalid:
        return None


def _schema1_platform(architecture) -> str:
    """Schema1 names only an architecture. Every schema1 image is a Linux one in practice
    (Windows images arrived with schema2), so "linux/<arch>" is a fair reading; the os in
    history[0].v1Compatibility is not parsed to keep this bounded and simple."""
    if isinstance(architecture, str) and _PLATFORM_PART.fullmatch(architecture):
        return f"linux/{architecture}"
    return ""


def _schema1(data, media_type, digest, size) -> Manifest:
    """Docker schema1 (distribution docs/spec/manifest-v2-1.md): fsLayers lists blobSums
    from the top layer down, repeating the empty throwaway layer. Its distinct layers, base
    first like schema2, with sizes unknown (0, and sizes_known False)."""
    fs_layers = _entries(data, "fsLayers")
    layers = {}
    for i in range(len(fs_layers) - 1, -1, -1):
        entry = fs_layers[i]
        blob_sum = entry.get("blobSum") if isinstance(entry, dict) else None
        if not names.valid_digest(blob_sum):
            raise ManifestInvalid(f"fsLayer {i} has no valid blobSum ({names.shown(blob_sum)})")
        layers.setdefault(blob_sum, Descriptor(DOCKER_LAYER, blob_sum, 0))
    return Manifest(digest, media_type, size, IMAGE, layers=list(layers.values()),
                    sizes_known=False, platform=_schema1_platform(data.get("architecture")))


def _entries(data, key):
    entries = data.get(key)
    if not isinstance(entries, list):
        raise ManifestInvalid(f"its {key!r} list is missing")
    if len(entries) > MAX_ENTRIES:
        raise ManifestInvalid(f"it lists {len(entries)} {key}, more than {MAX_ENTRIES}")
    return entries


def parse_manifest(body: bytes, media_type: str, digest: str | None = None) -> Manifest:
    """Read an image manifest, an index, or a Docker schema1 manifest (only when
    ``media_type`` or the body names schema1). Raises ManifestInvalid with the reason, and
    nothing else, whatever the body holds."""
    digest = digest or sha256_digest(body)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ManifestInvalid(f"manifest {digest} is not valid JSON: "
                              f"{names.clean(exc, 200)}") from None
    if not isinstance(data, dict):
        raise ManifestInvalid(f"manifest {digest} is not a JSON object")
    declared = data.get("mediaType") if isinstance(data.get("mediaType"), str) else ""
    media_type = (media_type or "").split(";")[0].strip() or declared
    if media_type not in INDEX_TYPES + IMAGE_TYPES + SCHEMA1_TYPES:
        media_type = declared or media_type
    # Schema1 is read only when named (the registry's Content-Type or the event's mediaType
    # always names it); a body without a type that merely looks like schema1 stays unsupported.
    own = {"artifact_type": text(data.get("artifactType")),
           "subject": _subject(data.get("subject")),
           "annotations": bounded_annotations(data.get("annotations"))}
    try:
        if media_type in INDEX_TYPES or (not media_type and "manifests" in data):
            children = _entries(data, "manifests")
            kids = [_descriptor(c, f"child {i}") for i, c in enumerate(children)]
            return Manifest(digest, media_type or OCI_INDEX, len(body), INDEX, children=kids,
                            **own)
        if media_type in IMAGE_TYPES or (not media_type and "config" in data):
            layers = _entries(data, "layers")
            config = _descriptor(data.get("config"), "config", blob=True)
            blobs = [_descriptor(layer, f"layer {i}", blob=True)
                     for i, layer in enumerate(layers)]
            return Manifest(digest, media_type or OCI_MANIFEST, len(body), IMAGE, config, blobs,
                            **own)
        if media_type in SCHEMA1_TYPES:
            return _schema1(data, media_type, digest, len(body))
    except ManifestInvalid as exc:
        raise ManifestInvalid(f"manifest {digest} is malformed: {exc}") from None
    raise ManifestInvalid(f"manifest {digest} has unsupported media type "
                          f"{names.shown(media_type)}")


def parse_referrers(body: bytes, media_type: str = "") -> list[Descriptor]:
    """The descriptors of a referrers API answer (OCI distribution spec 1.1, Listing
    Referrers): an OCI image index whose entries carry each referrer's ``artifactType`` and
    annotations, bounded as a manifest's are (at most MAX_ENTRIES entries). ``media_type``
    is the answer's Content-Type; the body's own ``mediaType``, when present, decides.
    Raises ManifestInvalid with the reason, and nothing else, whatever the body holds."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ManifestInvalid(f"not valid JSON: {names.clean(exc, 200)}") from None
    if not isinstance(data, dict):
        raise ManifestInvalid("not a JSON object")
    declared = data.get("mediaType", (media_type or "").split(";")[0].strip())
    if declared != OCI_INDEX:
        raise ManifestInvalid(f"not an OCI image index (media type {names.shown(declared)})")
    return [_descriptor(entry, f"referrer {i}")
            for i, entry in enumerate(_entries(data, "manifests"))]


@dataclass
class ImageConfig:
    platform: str = ""
    created: datetime | None = None


def parse_config(body: bytes) -> ImageConfig:
    """Platform and creation time from an image config blob; tolerant of missing fields."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ImageConfig()
    if not isinstance(data, dict):
        return ImageConfig()
    created = parse_time(data.get("created"))
    return ImageConfig(platform_of(data), created if plausible(created) else None)


def plausible(when: datetime | None, slack=timedelta(days=1)) -> bool:
    """Between 1970 and a day from now: a time a registry or an image can truly carry."""
    return when is not None and EARLIEST <= when <= datetime.now(timezone.utc) + slack


def parse_time(value) -> datetime | None:
    """RFC 3339 with any number of fractional digits (Go writes nanoseconds), in UTC; None
    for anything else, including times whose UTC form falls outside what Python holds."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    value = value.strip()
    if not value:
        return None
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    if "." in value:
        head, _, rest = value.partition(".")
        frac = ""
        while rest and rest[0].isdigit():
            frac, rest = frac + rest[0], rest[1:]
        value = f"{head}.{frac[:6].ljust(6, '0')}{rest}"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:
        return None
