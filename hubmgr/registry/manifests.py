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
# Every manifest kind we read, so a registry never narrows a multi-arch tag to one platform.
ACCEPT = ", ".join(INDEX_TYPES + IMAGE_TYPES)
# Bounds on what a manifest may declare. The registry does not check declared sizes, so a
# pusher can write any number; these keep every size, and every sum of sizes, far inside a
# 64-bit column on SQLite and PostgreSQL.
MAX_BLOB_SIZE = 2**40  # 1 TiB for one layer or config
MAX_ENTRIES = 10_000  # layers of an image, or children of an index
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


@dataclass
class Manifest:
    digest: str
    media_type: str
    size: int  # bytes of the manifest itself
    kind: str  # IMAGE or INDEX
    config: Descriptor | None = None
    layers: list[Descriptor] = field(default_factory=list)
    children: list[Descriptor] = field(default_factory=list)

    @property
    def blobs(self) -> list[Descriptor]:
        """Config and layers, the blobs an image stores."""
        return ([self.config] if self.config else []) + list(self.layers)


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


def _descriptor(raw, where):
    if not isinstance(raw, dict):
        raise ManifestInvalid(f"{where} is not an object")
    digest, size = raw.get("digest"), raw.get("size")
    if not names.valid_digest(digest):
        raise ManifestInvalid(f"{where} has no valid digest ({names.shown(digest)})")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB_SIZE:
        raise ManifestInvalid(f"{where} ({digest}) declares a size of {names.shown(size, 30)} "
                              f"bytes, outside 0 to {MAX_BLOB_SIZE} (1 TiB)")
    annotations = raw.get("annotations") if isinstance(raw.get("annotations"), dict) else {}
    return Descriptor(names.clean(raw.get("mediaType", ""), 255), digest, size,
                      platform_of(raw.get("platform")), annotations)


def _entries(data, key):
    entries = data.get(key)
    if not isinstance(entries, list):
        raise ManifestInvalid(f"its {key!r} list is missing")
    if len(entries) > MAX_ENTRIES:
        raise ManifestInvalid(f"it lists {len(entries)} {key}, more than {MAX_ENTRIES}")
    return entries


def parse_manifest(body: bytes, media_type: str, digest: str | None = None) -> Manifest:
    """Read an image manifest or an index. Raises ManifestInvalid with the reason."""
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
    if media_type not in INDEX_TYPES + IMAGE_TYPES:
        media_type = declared or media_type
    try:
        if media_type in INDEX_TYPES or (not media_type and "manifests" in data):
            children = _entries(data, "manifests")
            kids = [_descriptor(c, f"child {i}") for i, c in enumerate(children)]
            return Manifest(digest, media_type or OCI_INDEX, len(body), INDEX, children=kids)
        if media_type in IMAGE_TYPES or (not media_type and "config" in data):
            layers = _entries(data, "layers")
            config = _descriptor(data.get("config"), "config")
            blobs = [_descriptor(layer, f"layer {i}") for i, layer in enumerate(layers)]
            return Manifest(digest, media_type or OCI_MANIFEST, len(body), IMAGE, config, blobs)
    except ManifestInvalid as exc:
        raise ManifestInvalid(f"manifest {digest} is malformed: {exc}") from None
    raise ManifestInvalid(f"manifest {digest} has unsupported media type "
                          f"{names.shown(media_type)}")


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
