"""Artifacts pushed to a real registry as today's tools push them, with real blobs, for the
deletion tests: a cosign signature (tag ``sha256-<hex>.sig``), an OCI 1.1 referrer (a
``subject``, the empty config), and the referrers fallback index a client without the
referrers API keeps at tag ``sha256-<hex>``. Shapes from cosign's specs/SIGNATURE_SPEC.md and
the OCI image and distribution specs 1.1 (see tests/fixtures/artifacts/README.md)."""

import hashlib
import json

from hubmgr.registry.artifacts import EMPTY_CONFIG, NOTATION_SIGNATURE, SIMPLE_SIGNING
from hubmgr.registry.manifests import sha256_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = b"{}"  # the OCI empty descriptor's content: data e30=, size 2


def descriptor(client, repository, digest) -> dict:
    """The descriptor of a manifest the registry holds (for a subject or an index entry)."""
    fetched = client.get_manifest(repository, digest)
    return {"mediaType": fetched.media_type, "digest": digest, "size": len(fetched.body)}


def fallback_tag(digest) -> str:
    return digest.replace(":", "-")


def _put(client, repository, manifest, tag=None) -> dict:
    body = json.dumps(manifest, separators=(",", ":")).encode()
    media_type = manifest["mediaType"]
    digest = client.put_manifest(repository, tag or sha256_digest(body), body, media_type)
    found = {"mediaType": media_type, "digest": digest, "size": len(body)}
    if "artifactType" in manifest:
        found["artifactType"] = manifest["artifactType"]
    return found


def push_cosign_signature(client, repository, subject, seed="sig", signatures=1) -> dict:
    """cosign sign: an image whose layers are simple-signing payloads naming ``subject``, with
    a real config, at tag ``sha256-<hex>.sig``. Signing again makes a new manifest with one
    more layer and moves the tag (``signatures``). Returns its descriptor."""
    layers = []
    for n in range(signatures):
        payload = json.dumps({"critical": {
            "identity": {"docker-reference": f"127.0.0.1/{repository}"},
            "image": {"docker-manifest-digest": subject}, "type": "cosign container image "
            "signature"}, "optional": {"seed": f"{seed}-{n}"}}).encode()
        layers.append({"mediaType": SIMPLE_SIGNING, "size": len(payload),
                       "digest": client.push_blob(repository, payload),
                       "annotations": {"dev.cosignproject.cosign/signature": f"MEU{seed}{n}="}})
    config = json.dumps({"architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z",
                         "os": "", "rootfs": {"type": "layers", "diff_ids": [
                             "sha256:" + hashlib.sha256(seed.encode() + bytes([n])).hexdigest()
                             for n in range(signatures)]}}).encode()
    return _put(client, repository, {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "size": len(config), "digest": client.push_blob(repository, config)},
        "layers": layers}, tag=fallback_tag(subject) + ".sig")


def push_referrer(client, repository, subject: dict, artifact_type=NOTATION_SIGNATURE,
                  layer_type="application/jose+json", seed="referrer") -> dict:
    """An OCI 1.1 referrer of ``subject`` (a descriptor), pushed by digest as notation or oras
    push one: ``artifactType``, the empty config, one layer. Returns its descriptor (with
    its artifactType, as a referrers list entry carries it)."""
    data = json.dumps({"payload": seed, "signature": hashlib.sha256(seed.encode()).hexdigest()}
                      ).encode()
    return _put(client, repository, {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_CONFIG, "digest": client.push_blob(repository, EMPTY),
                   "size": len(EMPTY), "data": "e30="},
        "layers": [{"mediaType": layer_type, "digest": client.push_blob(repository, data),
                    "size": len(data)}],
        "subject": {key: subject[key] for key in ("mediaType", "digest", "size")},
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}})


def push_fallback_index(client, repository, subject_digest, referrers: list[dict]) -> dict:
    """The referrers list at tag ``sha256-<hex>`` of the subject: one entry per referrer, as
    a client pushes it on a registry without the referrers API (each new referrer pushes a
    new list and moves the tag). Returns its descriptor."""
    return _put(client, repository, {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                     "manifests": referrers},
                tag=fallback_tag(subject_digest))
