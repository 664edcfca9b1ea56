"""A registry with the OCI referrers API, for the tests: a proxy in front of the real
docker-registry (2.8 has no such API) that forwards everything and answers
GET /v2/<name>/referrers/<digest>[?artifactType=] itself, as the OCI distribution spec 1.1 says
(Listing Referrers): an OCI image index of the manifests pushed through it whose ``subject`` is
that digest, each with its artifactType (or, for an image manifest without one, its config's
media type) and its annotations; an empty list for a digest with none; Link rel="next" pages
when ``page_size`` is set; OCI-Filters-Applied when it filters. It learns the referrers from
the manifests pushed through it (it also answers their push with the OCI-Subject header) and
forgets one deleted through it. Faults added as on FaultProxy apply to the referrers path too.

``push_referrer`` pushes an artifact attached to a subject, as ``oras attach`` does."""

import io
import json
import re
from urllib.parse import parse_qs, urlencode, urlsplit

from hubmgr.registry.manifests import OCI_INDEX, OCI_MANIFEST, sha256_digest

from .servers import FaultProxy

EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
_REFERRERS = re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>[^/?]+)$")
_MANIFEST = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<reference>[^/?]+)$")


class ReferrersProxy(FaultProxy):
    """``page_size``: entries per page (None: all in one). ``filters``: whether it applies
    the artifactType filter (a registry SHOULD; a client must cope when it does not)."""

    def __init__(self, upstream):
        self.subjects: dict[tuple[str, str], dict[str, dict]] = {}  # (name, subject) -> entries
        self.page_size = None
        self.filters = True
        super().__init__(upstream)
        # The fault proxy's handler, answering the referrers path itself.
        self.server.RequestHandlerClass = type(
            "Handler", (_Referrers, self.server.RequestHandlerClass), {})

    def pushed(self, name, body):
        """Record a manifest with a subject, pushed to ``name``."""
        data, subject = json.loads(body), subject_of(body)
        entry = {"mediaType": data.get("mediaType", OCI_MANIFEST),
                 "digest": sha256_digest(body), "size": len(body)}
        artifact_type = data.get("artifactType") or (
            (data.get("config") or {}).get("mediaType") if "config" in data else None)
        if artifact_type:
            entry["artifactType"] = artifact_type
        if data.get("annotations"):
            entry["annotations"] = data["annotations"]
        with self.lock:
            self.subjects.setdefault((name, subject), {})[entry["digest"]] = entry

    def deleted(self, name, digest):
        """Forget a manifest deleted from ``name``: it refers to nothing any more."""
        with self.lock:
            for (repository, _), entries in self.subjects.items():
                if repository == name:
                    entries.pop(digest, None)

    def listing(self, name, subject, query):
        """(body, headers) of the referrers API's answer."""
        with self.lock:
            entries = list(self.subjects.get((name, subject), {}).values())
        headers = {"Content-Type": OCI_INDEX}
        wanted = query.get("artifactType", [""])[0]
        if wanted and self.filters:
            entries = [e for e in entries if e.get("artifactType") == wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
        start = int(query.get("page", ["0"])[0])
        if self.page_size:
            if start + self.page_size < len(entries):
                following = {**{k: v[0] for k, v in query.items()},
                             "page": str(start + self.page_size)}
                headers["Link"] = (f"</v2/{name}/referrers/{subject}?{urlencode(following)}>; "
                                   'rel="next"')
            entries = entries[start:start + self.page_size]
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        return json.dumps(body).encode(), headers

    def referrer_requests(self):
        return self.count("GET", r"/referrers/")


def subject_of(body) -> str | None:
    """The subject digest a pushed manifest names, or None."""
    try:
        return json.loads(body)["subject"]["digest"]
    except (ValueError, TypeError, KeyError):
        return None


class _Referrers:
    """Mixed into the fault proxy's handler (``proxy`` is the ReferrersProxy)."""

    def _handle(self):
        url = urlsplit(self.path)
        referrers = _REFERRERS.match(url.path) if self.command == "GET" else None
        if referrers:
            return self._referrers(referrers["name"], referrers["digest"],
                                   parse_qs(url.query))
        manifest = _MANIFEST.match(url.path)
        self.status, self.subject = None, None
        if not manifest or self.command not in ("PUT", "DELETE"):
            return super()._handle()
        # Read the body here, then hand it to the forwarding handler as if unread; _send
        # notes the registry's status.
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.subject = subject_of(body) if self.command == "PUT" else None
        stream, self.rfile = self.rfile, io.BytesIO(body)
        try:
            super()._handle()
        finally:
            self.rfile = stream
        if self.subject and self.status == 201:
            self.proxy.pushed(manifest["name"], body)
        elif self.command == "DELETE" and self.status == 202:
            self.proxy.deleted(manifest["name"], manifest["reference"])

    def _send(self, status, headers, content):
        self.status = status
        if self.command == "PUT" and status == 201 and getattr(self, "subject", None):
            headers = {**headers, "OCI-Subject": self.subject}
        super()._send(status, headers, content)

    # The fault proxy binds its methods to its own _handle: bind them to this one.
    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _handle

    def _referrers(self, name, digest, query):
        action = self.proxy.match(self.command, self.path)
        if action and action[0] == "status":
            payload = json.dumps({"errors": [{"code": "INJECTED", "message": "injected"}]})
            return self._send(action[1], {"Content-Type": "application/json"}, payload.encode())
        content, headers = self.proxy.listing(name, digest, query)
        if action and action[0] == "body":
            content = action[1].encode() if isinstance(action[1], str) else action[1]
        self._send(200, headers, content)


def push_referrer(client, repository, subject: dict, artifact_type, payload: bytes,
                  layer_type="application/octet-stream", annotations=None, tag=None) -> dict:
    """Push an OCI 1.1 artifact attached to ``subject`` (a descriptor: mediaType, digest,
    size), by digest unless ``tag``, as ``oras attach`` does: the empty config, one layer.
    Returns its descriptor."""
    config = client.push_blob(repository, b"{}")
    layer = client.push_blob(repository, payload)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                "config": {"mediaType": EMPTY_CONFIG, "digest": config, "size": 2,
                           "data": "e30="},
                "layers": [{"mediaType": layer_type, "digest": layer, "size": len(payload)}],
                "subject": {k: subject[k] for k in ("mediaType", "digest", "size")}}
    if annotations:
        manifest["annotations"] = annotations
    body = json.dumps(manifest).encode()
    digest = client.put_manifest(repository, tag or sha256_digest(body), body, OCI_MANIFEST)
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body)}
