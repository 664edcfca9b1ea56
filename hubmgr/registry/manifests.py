"""Parse manifests and image configs into plain data. No HTTP here."""

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .errors import ManifestInvalid

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
IMAGE_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
# Every manifest kind we read, so a registry never narrows a multi-arch tag to one platform.
ACCEPT = ", ".join(INDEX_TYPES + IMAGE_TYPES)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: str = ""  # "os/arch[/variant]" for index children
    annotations: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Manifest:
    digest: str
    media_type: str
    size: int  # bytes of the manifest itself
    kind: str  # "image" or "index"
    config: Descriptor | None = None
    layers: list[Descriptor] = field(default_factory=list)
    children: list[Descriptor] = field(default_factory=list)

    @property
    def blobs(self) -> list[Descriptor]:
        """Config and layers, the blobs an image stores."""
        return ([self.config] if self.config else []) + list(self.layers)


def _descriptor(raw, where):
    if not isinstance(raw, dict):
        raise ManifestInvalid(f"{where} is not an object")
    digest, size = raw.get("digest"), raw.get("size")
    if not isinstance(digest, str) or ":" not in digest:
        raise ManifestInvalid(f"{where} has no valid digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where} ({digest}) has no valid size")
    platform = ""
    plat = raw.get("platform")
    if isinstance(plat, dict) and plat.get("os") and plat.get("architecture"):
        platform = f"{plat['os']}/{plat['architecture']}"
        if plat.get("variant"):
            platform += f"/{plat['variant']}"
    annotations = raw.get("annotations") if isinstance(raw.get("annotations"), dict) else {}
    return Descriptor(str(raw.get("mediaType", "")), digest, size, platform, annotations)


def parse_manifest(body: bytes, media_type: str, digest: str | None = None) -> Manifest:
    """Read an image manifest or an index. Raises ManifestInvalid with the reason."""
    digest = digest or sha256_digest(body)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestInvalid(f"manifest {digest} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestInvalid(f"manifest {digest} is not a JSON object")
    media_type = (media_type or "").split(";")[0].strip() or data.get("mediaType", "")
    if media_type not in INDEX_TYPES + IMAGE_TYPES:
        media_type = data.get("mediaType") or media_type
    try:
        if media_type in INDEX_TYPES or (not media_type and "manifests" in data):
            children = data.get("manifests")
            if not isinstance(children, list):
                raise ManifestInvalid("its 'manifests' list is missing")
            kids = [_descriptor(c, f"child {i}") for i, c in enumerate(children)]
            return Manifest(digest, media_type or OCI_INDEX, len(body), "index", children=kids)
        if media_type in IMAGE_TYPES or (not media_type and "config" in data):
            layers = data.get("layers")
            if not isinstance(layers, list):
                raise ManifestInvalid("its 'layers' list is missing")
            config = _descriptor(data.get("config"), "config")
            blobs = [_descriptor(layer, f"layer {i}") for i, layer in enumerate(layers)]
            return Manifest(digest, media_type or OCI_MANIFEST, len(body), "image", config, blobs)
    except ManifestInvalid as exc:
        raise ManifestInvalid(f"manifest {digest} is malformed: {exc}") from None
    raise ManifestInvalid(f"manifest {digest} has unsupported media type {media_type!r}")


@dataclass
class ImageConfig:
    platform: str = ""
    created: datetime | None = None


def parse_config(body: bytes) -> ImageConfig:
    """Platform and creation time from an image config blob; tolerant of missing fields."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ImageConfig()
    if not isinstance(data, dict):
        return ImageConfig()
    platform = ""
    if data.get("os") and data.get("architecture"):
        platform = f"{data['os']}/{data['architecture']}"
        if data.get("variant"):
            platform += f"/{data['variant']}"
    created = None
    if isinstance(data.get("created"), str):
        created = parse_time(data["created"])
    return ImageConfig(platform, created)


def parse_time(value: str) -> datetime | None:
    """RFC 3339 with any number of fractional digits (Go writes nanoseconds)."""
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
    return parsed
