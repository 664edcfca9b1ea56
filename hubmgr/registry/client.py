"""HTTP client for the distribution / OCI registry API. Knows nothing of Django."""

import json
import re
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from . import names
from .errors import (
    InvalidReference,
    ManifestInvalid,
    RegistryAuthError,
    RegistryError,
    RegistryNotFound,
    RegistryResponseError,
    RegistryUnavailable,
    RegistryUnsupported,
)
from .manifests import (
    ACCEPT, MAX_ENTRIES, OCI_INDEX, Descriptor, Manifest, parse_manifest, parse_referrers,
    sha256_digest)

USER_AGENT = "hubmgr/0.1 (+registry inventory)"
# distribution refuses manifests over 4 MiB; an image config is far smaller in practice.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 4 * 1024 * 1024
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_LINK_NEXT = re.compile(r"<([^>]+)>\s*;\s*rel=\"?next\"?")
# A referrers listing is read to at most this many entries over at most this many pages (each
# page bounded like a manifest): a subject with more costs no more than that.
MAX_REFERRERS = MAX_ENTRIES
MAX_REFERRER_PAGES = 10
# The answer header that says the registry applied an artifactType filter (spec 1.1).
FILTERS_APPLIED = "OCI-Filters-Applied"


@dataclass
class FetchedManifest:
    digest: str
    media_type: str
    body: bytes

    def parse(self) -> Manifest:
        return parse_manifest(self.body, self.media_type, self.digest)


@dataclass
class Referrers:
    """What the referrers API listed for one subject: each referrer's descriptor (digest,
    media type, artifactType, size, bounded annotations), each digest once. ``complete`` is
    False when the listing went on past MAX_REFERRERS entries or MAX_REFERRER_PAGES pages:
    hubmgr read no further."""

    descriptors: list[Descriptor] = field(default_factory=list)
    complete: bool = True


class RegistryClient:
    """One requests.Session per client; safe to share between threads."""

    def __init__(self, url, username="", password="", *, timeout=(3.05, 30),
                 user_agent=USER_AGENT, pool_size=16):
        self.url = url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = user_agent
        self._lock = threading.Lock()
        self._basic = False  # the registry asked for basic auth
        self._tokens = {}  # scope -> (token, expires_at)
        self._scope_for = {}  # (repository, method) -> scope the registry asked for

    # ---- low level -------------------------------------------------------------------------
    def _auth_header(self, key):
        with self._lock:
            if self._basic:
                return None
            scope = self._scope_for.get(key)
            token = self._tokens.get(scope) if scope is not None else None
        if token and token[1] > time.monotonic():
            return f"Bearer {token[0]}"
        return None

    def request(self, method, path, *, repository="", headers=None, data=None, stream=False,
                allow=(200,)):
        """Send one request, answering auth challenges once. Raises RegistryError."""
        url = path if path.startswith("http") else self.url + path
        key = (repository, method)
        headers = dict(headers or {})
        for attempt in (1, 2):
            bearer = self._auth_header(key)
            if bearer:
                headers["Authorization"] = bearer
            auth = (self.username, self.password) if self._basic and self.username else None
            try:
                resp = self.session.request(method, url, headers=headers, data=data, auth=auth,
                                            timeout=self.timeout, stream=stream,
                                            allow_redirects=True)
            except requests.Timeout:
                raise RegistryUnavailable(
                    f"The registry at {self.url} did not answer {method} {urlsplit(url).path} "
                    f"within {self.timeout[1]} s. Check that it is running and not overloaded.",
                    url=url) from None
            except requests.ConnectionError as exc:
                raise RegistryUnavailable(
                    f"Cannot connect to the registry at {self.url} ({_short(exc)}). Check that it "
                    "is running and that HUBMGR_REGISTRY_URL points at it.", url=url) from None
            if resp.status_code == 401 and attempt == 1:
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.close()
                self._answer_challenge(challenge, key, url)
                continue
            break
        if resp.status_code in allow:
            return resp
        raise self._error(resp, method, url)

    def _answer_challenge(self, challenge, key, url):
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if not self.username:
                raise RegistryAuthError(
                    f"The registry at {self.url} asks for a login. Set HUBMGR_REGISTRY_USERNAME "
                    "and HUBMGR_REGISTRY_PASSWORD.", url=url, status=401)
            with self._lock:
                self._basic = True
            return
        if scheme != "bearer":
            raise RegistryAuthError(
                f"The registry at {self.url} asks for an authentication scheme hubmgr does not "
                f"speak ({challenge or 'no WWW-Authenticate header'}).", url=url, status=401)
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.get("realm")
        if not realm:
            raise RegistryAuthError(f"The registry at {self.url} sent a bearer challenge "
                                    "without a realm.", url=url, status=401)
        scope = params.get("scope", "")
        query = {"service": params.get("service", "")}
        if scope:
            query["scope"] = scope
        auth = (self.username, self.password) if self.username else None
        try:
            resp = self.session.get(realm, params=query, auth=auth, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RegistryUnavailable(f"Cannot reach the registry's token server at {realm} "
                                      f"({_short(exc)}).", url=realm) from None
        if resp.status_code in (401, 403):
            raise RegistryAuthError(
                f"The registry's token server at {realm} refused hubmgr's credentials "
                f"({resp.status_code}). Check HUBMGR_REGISTRY_USERNAME and "
                "HUBMGR_REGISTRY_PASSWORD.", url=realm, status=resp.status_code)
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
            expires_in = int(body.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token = None
        if resp.status_code != 200 or not token:
            raise RegistryAuthError(f"The registry's token server at {realm} gave no token "
                                    f"(HTTP {resp.status_code}).", url=realm,
                                    status=resp.status_code)
        with self._lock:
            # Renew a little early so a token never expires in flight.
            self._tokens[scope] = (token, time.monotonic() + max(expires_in - 10, 5))
            self._scope_for[key] = scope

    def _error(self, resp, method, url):
        status = resp.status_code
        code, detail = "", ""
        try:
            errors = resp.json().get("errors") or []
            if errors:
                code = errors[0].get("code", "")
                detail = errors[0].get("message", "")
        except (ValueError, AttributeError):
            pass
        path = urlsplit(url).path
        what = f"{method} {path}"
        if status in (401, 403):
            return RegistryAuthError(
                f"The registry at {self.url} refused hubmgr's credentials for {what} ({status}"
                f"{' ' + code if code else ''}). Check HUBMGR_REGISTRY_USERNAME, "
                "HUBMGR_REGISTRY_PASSWORD and that account's permissions.",
                url=url, status=status, code=code)
        if status == 404:
            return RegistryNotFound(f"The registry has no {path} ({code or 'not found'}).",
                                    url=url, status=status, code=code or "NOT_FOUND")
        if code == "UNSUPPORTED" or status == 405:
            return RegistryUnsupported(
                f"The registry at {self.url} does not support {what} ({code or status}). For "
                "deletion, the registry needs storage.delete.enabled: true.",
                url=url, status=status, code=code or "UNSUPPORTED")
        return RegistryResponseError(
            f"The registry at {self.url} answered {what} with HTTP {status}"
            f"{' ' + code if code else ''}{': ' + detail if detail else ''}.",
            url=url, status=status, code=code)

    def _paged(self, path, key, repository=""):
        """Follow Link rel=next pages, yielding each page's list under ``key``."""
        while path:
            resp = self.request("GET", path, repository=repository)
            try:
                items = resp.json().get(key) or []
            except (ValueError, AttributeError):
                raise RegistryResponseError(f"The registry answered GET {path} with a body "
                                            "that is not JSON.", url=path) from None
            yield from items
            path = self._next_page(resp)

    def _next_page(self, resp):
        """The URL of the page after ``resp`` (its Link rel="next" header), or None. A link to
        another host raises: hubmgr never sends its credentials elsewhere."""
        match = _LINK_NEXT.search(resp.headers.get("Link", ""))
        path = urljoin(self.url + "/", match.group(1)) if match else None
        if path and urlsplit(path).netloc != urlsplit(self.url).netloc:
            raise RegistryResponseError(f"The registry's next-page link points at another "
                                        f"host ({names.shown(path)}); hubmgr stops there.",
                                        url=path)
        return path

    def _read(self, resp, limit, what):
        """The body of ``resp``, refusing one larger than ``limit`` bytes."""
        body = bytearray()
        for chunk in resp.iter_content(64 * 1024):
            body += chunk
            if len(body) > limit:
                resp.close()
                raise ManifestInvalid(f"The registry served {what} larger than {limit} bytes; "
                                      "hubmgr does not read it.", url=resp.url)
        return bytes(body)

    # ---- read API ----------------------------------------------------------------------------
    def ping(self):
        """GET /v2/: raises RegistryError unless the registry answers and accepts us."""
        self.request("GET", "/v2/")

    def catalog(self, page_size=100):
        return self._paged(f"/v2/_catalog?n={page_size}", "repositories")

    def tags(self, repository, page_size=1000):
        try:
            return list(self._paged(f"{_path(repository, 'tags/list')}?n={page_size}",
                                    "tags", repository))
        except RegistryNotFound as exc:
            if exc.code == "NAME_UNKNOWN":
                return []
            raise

    def get_manifest(self, repository, reference) -> FetchedManifest:
        resp = self.request("GET", _path(repository, "manifests", reference),
                            repository=repository, headers={"Accept": ACCEPT}, stream=True)
        body = self._read(resp, MAX_MANIFEST_BYTES, f"the manifest {repository}@{reference}")
        digest = resp.headers.get("Docker-Content-Digest") or sha256_digest(body)
        if not names.valid_digest(digest):
            digest = sha256_digest(body)
        if reference.startswith("sha256:") and sha256_digest(body) != reference:
            raise ManifestInvalid(f"The registry served {repository}@{reference} with content "
                                  "that does not match its digest.", url=resp.url)
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return FetchedManifest(digest, media_type, body)

    def referrers(self, repository, digest, artifact_type="") -> Referrers | None:
        """GET /v2/<repository>/referrers/<digest> (OCI distribution spec 1.1): the manifests
        of ``repository`` whose ``subject`` is ``digest``, optionally only those of
        ``artifact_type``, following Link rel="next" pages within MAX_REFERRERS entries and
        MAX_REFERRER_PAGES pages. None when the registry does not support the API: the spec
        forbids a registry that supports it to answer 404, and clients then fall back to the
        referrers tag ``sha256-<hex>`` (distribution 2.8 answers 404 "page not found"). A body
        that is not an OCI image index, or larger than a manifest may be, raises
        ManifestInvalid; other failures raise RegistryError as every read does."""
        path = _path(repository, "referrers", digest)
        if artifact_type:
            path += "?artifactType=" + quote(artifact_type, safe="")
        listed, pages = {}, 0
        while path:
            if pages == MAX_REFERRER_PAGES or len(listed) >= MAX_REFERRERS:
                return Referrers(list(listed.values()), complete=False)
            try:
                resp = self.request("GET", path, repository=repository,
                                    headers={"Accept": OCI_INDEX}, stream=True)
            except RegistryNotFound:
                if pages:  # a later page that went away: the listing changed under us
                    raise
                return None
            pages += 1
            what = f"the referrers of {repository}@{digest}"
            body = self._read(resp, MAX_MANIFEST_BYTES, f"a list of {what}")
            try:
                found = parse_referrers(body, resp.headers.get("Content-Type", ""))
            except ManifestInvalid as exc:
                raise ManifestInvalid(f"The registry sent an unreadable list of {what}: {exc}.",
                                      url=resp.url) from None
            applied = {f.strip() for f in resp.headers.get(FILTERS_APPLIED, "").split(",")}
            if artifact_type and "artifactType" not in applied:  # the registry did not filter
                found = [d for d in found if d.artifact_type == artifact_type]
            room = MAX_REFERRERS - len(listed)
            for descriptor in found[:room]:
                listed.setdefault(descriptor.digest, descriptor)
            if len(found) > room:
                return Referrers(list(listed.values()), complete=False)
            path = self._next_page(resp)
        return Referrers(list(listed.values()))

    def head_manifest(self, repository, reference) -> str | None:
        """The digest a reference points at, or None when the registry says it is gone."""
        try:
            resp = self.request("HEAD", _path(repository, "manifests", reference),
                                repository=repository, headers={"Accept": ACCEPT})
        except RegistryNotFound:
            return None
        digest = resp.headers.get("Docker-Content-Digest", "")
        if names.valid_digest(digest):
            return digest
        if names.valid_digest(reference):
            return reference
        raise RegistryResponseError(f"The registry answered HEAD {repository}:{reference} "
                                    f"without a valid digest ({names.shown(digest)}).",
                                    url=resp.url)

    def blob_exists(self, repository, digest) -> bool:
        """HEAD /v2/<repository>/blobs/<digest>: True when the registry serves the blob there,
        False on 404. A deleted manifest's config and layers keep answering 200 until the
        garbage collector removes them (a manifest's own digest is not a blob: always 404).
        Any other answer raises RegistryError."""
        resp = self.request("HEAD", _path(repository, "blobs", digest), repository=repository,
                            allow=(200, 404))
        resp.close()
        return resp.status_code == 200

    def get_blob(self, repository, digest) -> bytes:
        resp = self.request("GET", _path(repository, "blobs", digest), repository=repository,
                            stream=True)
        return self._read(resp, MAX_CONFIG_BYTES, f"the blob {repository}@{digest}")

    # ---- write API ---------------------------------------------------------------------------
    def delete_manifest(self, repository, digest) -> bool:
        """True when deleted now, False when it was already gone (404)."""
        try:
            if not names.valid_digest(digest):
                raise InvalidReference(f"{names.shown(digest)} is not a valid digest: "
                                       "hubmgr deletes manifests by digest only.")
            self.request("DELETE", _path(repository, "manifests", digest),
                         repository=repository, allow=(200, 202))
        except RegistryNotFound:
            return False
        return True

    def push_blob(self, repository, data: bytes) -> str:
        """Monolithic upload (POST then PUT); returns the digest."""
        digest = sha256_digest(data)
        resp = self.request("HEAD", _path(repository, "blobs", digest), repository=repository,
                            allow=(200, 404))
        if resp.status_code == 200:
            return digest
        resp = self.request("POST", _path(repository, "blobs/uploads/"),
                            repository=repository, allow=(202,))
        location = urljoin(self.url + "/", resp.headers["Location"])
        sep = "&" if "?" in location else "?"
        self.request("PUT", f"{location}{sep}digest={digest}", repository=repository,
                     headers={"Content-Type": "application/octet-stream"}, data=data,
                     allow=(201,))
        return digest

    def put_manifest(self, repository, reference, manifest: dict | bytes, media_type) -> str:
        body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        resp = self.request("PUT", _path(repository, "manifests", reference),
                            repository=repository, headers={"Content-Type": media_type},
                            data=body, allow=(201,))
        return resp.headers.get("Docker-Content-Digest") or sha256_digest(body)

    def close(self):
        self.session.close()


def _path(repository, what, reference=None):
    """/v2/<repository>/<what>[/<reference>], refusing a repository, tag or digest outside
    the distribution grammar: no URL is ever built from a value hubmgr did not validate."""
    if not names.valid_name(repository):
        raise InvalidReference(f"{names.shown(repository)} is not a valid repository name.")
    if reference is None:
        return f"/v2/{repository}/{what}"
    check = names.valid_reference if what == "manifests" else names.valid_digest
    if not check(reference):
        raise InvalidReference(f"{names.shown(reference)} is not a valid "
                               f"{'tag or digest' if what == 'manifests' else 'digest'}.")
    return f"/v2/{repository}/{what}/{reference}"


def _short(exc):
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out",
                   "No route to host", "Connection reset"):
        if marker in text:
            return marker.lower()
    return text[:160]


__all__ = ["RegistryClient", "RegistryError", "FetchedManifest", "Referrers", "USER_AGENT"]
