"""Local services for `make run`, the tests and the benchmarks.

Starts Debian's `docker-registry` and a private `redis-server` as child processes in a data
folder, and pushes a small sample of images through the registry API. Nothing here is used
when HUBMGR_REGISTRY_URL and HUBMGR_REDIS_URL point at real services.
"""

import gzip
import hashlib
import io
import json
import random
import shutil
import socket
import subprocess
import tarfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import requests

from hubmgr.registry import artifacts
from hubmgr.registry.manifests import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, sha256_digest

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - anything short of success means "not yet"
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.05)


@dataclass
class Service:
    process: subprocess.Popen
    url: str
    root: Path
    config_path: Path | None = None
    extra: dict = field(default_factory=dict)
    name: str = ""  # for messages: "the demo registry"
    log: Path | None = None  # where the service writes its log

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# distribution's validation.manifests.urls.allow: the URLs a manifest's foreign
# (non-distributable) layers may name. Without it, such a manifest is refused
# (MANIFEST_BLOB_UNKNOWN), as the layer is not stored.
FOREIGN_URLS = ["^https?://"]


def registry_config(root: Path, port: int, *, notify_url=None, notify_token=None,
                    htpasswd=None, token_auth=None, delete=True, log=None,
                    foreign_layers=False, readonly=False) -> dict:
    """A docker-registry config. ``foreign_layers`` accepts manifests whose foreign layers
    name http(s) URLs (Windows base images), off by default as in distribution; ``readonly``
    refuses pushes and deletes (storage.maintenance.readonly), as while it is collected."""
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "storage")},
            "delete": {"enabled": delete},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "hubmgr-local-only"},
    }
    if notify_url:
        config["notifications"] = {"endpoints": [{
            "name": "hubmgr",
            "url": notify_url,
            "headers": {"Authorization": [f"Bearer {notify_token}"]},
            "timeout": "10s",
            "threshold": 5,
            "backoff": "1s",
            "ignoredmediatypes": ["application/octet-stream"],
        }]}
    if readonly:
        config["storage"]["maintenance"] = {"readonly": {"enabled": True}}
    if foreign_layers:
        config["validation"] = {"manifests": {"urls": {"allow": FOREIGN_URLS}}}
    if log:  # e.g. an access log at info level, for import_pulls tests
        config["log"] = log
    if htpasswd:
        config["auth"] = {"htpasswd": {"realm": "hubmgr-test", "path": str(htpasswd)}}
    elif token_auth:
        config["auth"] = {"token": token_auth}
    return config


def start_registry(root: Path, port: int | None = None, *, detach=False, **options) -> Service:
    """Start `docker-registry serve` on loopback. YAML is a superset of JSON, so we write JSON.
    ``detach`` starts it in a session of its own, so a Ctrl-C at the terminal reaches only
    whoever started it (`make run` stops its children itself, in order). ``options`` go to
    ``registry_config`` and are kept, so that ``restart_registry`` can start it again."""
    if not Path(REGISTRY_BIN).exists():
        raise RuntimeError("docker-registry is not installed: run `apt-get install "
                           "docker-registry` (make run and make test do this as root)")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    config_path, log_path = root / "config.yml", root / "registry.log"
    # A free port picked here can be taken by another process before the registry binds it
    # (tests start several at once): then it exits at once saying so, and another is tried.
    for _ in range(1 if port else 3):
        chosen = port or free_port()
        config_path.write_text(json.dumps(registry_config(root, chosen, **options), indent=2))
        log = open(log_path, "ab")
        logged = log.tell()
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config_path)], stdout=log,
                                stderr=log, stdin=subprocess.DEVNULL, start_new_session=detach)
        url = f"http://127.0.0.1:{chosen}"
        service = Service(proc, url, root, config_path, name="the registry", log=log_path,
                          extra={"port": chosen, "detach": detach, "options": options})
        try:
            wait_for(lambda: proc.poll() is not None or requests.get(url + "/v2/", timeout=1)
                     .status_code in (200, 401), "docker-registry")
        except RuntimeError:  # running, and not answering
            service.stop()
            break
        if proc.poll() is None:
            return service
        with open(log_path, "rb") as written:
            written.seek(logged)
            if b"address already in use" not in written.read():
                break
    raise RuntimeError(f"docker-registry did not start; see {log_path}")


def restart_registry(service: Service, **changes) -> Service:
    """Stop ``service`` and start it again on its port and folder, with its options and
    ``changes`` (e.g. ``readonly=True``). Its name stays."""
    service.stop()
    options = {**service.extra["options"], **changes}
    again = start_registry(service.root, service.extra["port"], detach=service.extra["detach"],
                           **options)
    again.name = service.name
    return again


def collect_registry(service: Service) -> tuple[Service, int, str]:
    """Garbage-collect a registry this process started, as distribution wants it: restarted
    read-only while the collector runs, then restarted read-write, which also empties its
    blob descriptor cache (it would keep answering 200 for collected blobs; distribution
    issue 2945). Answers the registry as it runs again, the bytes of blob data freed on disk,
    and the collector's error ("" when it succeeded). RuntimeError when the registry does not
    start again."""
    before = blob_bytes(service.root)
    service = restart_registry(service, readonly=True)
    try:
        garbage_collect(service.config_path)
        error = ""
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or exc.stdout or "").strip().splitlines()
        error = lines[-1] if lines else f"exit code {exc.returncode}"
    service = restart_registry(service, readonly=False)
    return service, before - blob_bytes(service.root), error


def blob_bytes(root: Path) -> int:
    """Bytes of blob data a registry stores on disk (what its garbage collector frees)."""
    blobs = Path(root) / "storage" / "docker" / "registry" / "v2" / "blobs"
    return sum(p.stat().st_size for p in blobs.rglob("data") if p.is_file())


def garbage_collect(config_path: Path, delete_untagged=False) -> str:
    args = [REGISTRY_BIN, "garbage-collect", str(config_path)]
    if delete_untagged:
        args.insert(2, "--delete-untagged")
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def start_redis(root: Path, port: int | None = None, *, detach=False) -> Service:
    import redis

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = subprocess.Popen(
        [REDIS_BIN, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(root), "--logfile", str(root / "redis.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=detach)
    url = f"redis://127.0.0.1:{port}/0"
    service = Service(proc, url, root, name="Redis", log=root / "redis.log")
    try:
        wait_for(lambda: redis.Redis.from_url(url).ping(), "redis-server")
    except RuntimeError:
        service.stop()
        raise
    return service


# ---- sample images ---------------------------------------------------------------------------
def make_layer(seed: str, size: int = 2048) -> bytes:
    """A real gzipped tar layer of about ``size`` bytes whose content depends on ``seed``."""
    payload = random.Random(seed).randbytes(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"data/{seed.replace('/', '_')}.txt")
        info.size, info.mtime = len(payload), 0
        tar.addfile(info, io.BytesIO(payload))
    return gzip.compress(buf.getvalue(), mtime=0)


def push_image(client, repository, layers: list[bytes], *, platform="linux/amd64",
               created="2026-01-01T00:00:00Z", tag=None, oci=True, label="") -> dict:
    """Push an image (config + layers). Returns its manifest descriptor, platform included."""
    os_name, arch, *variant = platform.split("/")
    config = {"architecture": arch, "os": os_name, "created": created,
              "config": {"Labels": {"hubmgr.sample": label}} if label else {},
              "rootfs": {"type": "layers", "diff_ids": [
                  "sha256:" + hashlib.sha256(gzip.decompress(x)).hexdigest()
                  for x in layers]}}
    if variant:
        config["variant"] = variant[0]
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = client.push_blob(repository, config_bytes)
    layer_type = ("application/vnd.oci.image.layer.v1.tar+gzip" if oci
                  else "application/vnd.docker.image.rootfs.diff.tar.gzip")
    descriptors = [{"mediaType": layer_type, "digest": client.push_blob(repository, data),
                    "size": len(data)} for data in layers]
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json" if oci
                   else "application/vnd.docker.container.image.v1+json",
                   "digest": config_digest, "size": len(config_bytes)},
        "layers": descriptors,
    }
    body = json.dumps(manifest).encode()
    digest = client.put_manifest(repository, tag or sha256_digest(body), body, media_type)
    desc = {"mediaType": media_type, "digest": digest, "size": len(body),
            "platform": {"os": os_name, "architecture": arch}}
    if variant:
        desc["platform"]["variant"] = variant[0]
    return desc


def push_index(client, repository, children: list[dict], tag=None) -> str:
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
    return client.put_manifest(repository, tag or sha256_digest(body), body, OCI_INDEX)


def push_artifact(client, repository, layers: list[tuple[str, bytes]], *, config_type,
                  config=b"{}", artifact_type="", subject=None, tag=None) -> dict:
    """Push an OCI artifact manifest (``layers``: (media type, content)), with an OCI 1.1
    ``artifactType`` and ``subject`` (a manifest descriptor) when given. Returns its
    descriptor, ``artifactType`` included, as a referrers list names it."""
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type:
        manifest["artifactType"] = artifact_type
    manifest["config"] = {"mediaType": config_type, "size": len(config),
                          "digest": client.push_blob(repository, config)}
    manifest["layers"] = [{"mediaType": media_type, "size": len(data),
                           "digest": client.push_blob(repository, data)}
                          for media_type, data in layers]
    if subject:
        manifest["subject"] = subject
    body = json.dumps(manifest, separators=(",", ":")).encode()
    digest = client.put_manifest(repository, tag or sha256_digest(body), body, OCI_MANIFEST)
    desc = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body)}
    return {**desc, "artifactType": artifact_type} if artifact_type else desc


def seed_artifacts(client, repository, tag) -> dict:
    """What signing tools attach to the build ``tag`` names: cosign's signature (tag
    ``sha256-<hex>.sig``) and an SPDX SBOM as an OCI 1.1 referrer, which a registry without
    the referrers API lists in the fallback index tagged ``sha256-<hex>``. Returns the
    digests by name."""
    target = client.get_manifest(repository, tag)
    tagged = target.digest.replace(":", "-", 1)
    payload = json.dumps({"critical": {
        "identity": {"docker-reference": repository},
        "image": {"docker-manifest-digest": target.digest},
        "type": "cosign container image signature"}, "optional": None}).encode()
    signature = push_artifact(client, repository, [(artifacts.SIMPLE_SIGNING, payload)],
                              config_type=artifacts.IMAGE_CONFIGS[0], tag=f"{tagged}.sig")
    subject = {"mediaType": target.media_type, "digest": target.digest,
               "size": len(target.body)}
    sbom = push_artifact(client, repository, [(
        "application/vnd.oci.image.layer.v1.tar", json.dumps({
            "spdxVersion": "SPDX-2.3", "name": f"{repository}:{tag}"}).encode())],
        config_type=artifacts.EMPTY_CONFIG, artifact_type=artifacts.SPDX_JSON, subject=subject)
    listed = push_index(client, repository, [sbom], tag=tagged)
    return {"signature": signature["digest"], "sbom": sbom["digest"], "referrers": listed}


def push_chart(client, repository, name, version) -> str:
    """``helm push``: the chart's metadata as config, its package as the one layer, tagged
    with its version. Returns its digest."""
    package = make_layer(f"{name}-{version}", 3000)
    chart = json.dumps({"apiVersion": "v2", "name": name, "version": version}).encode()
    return push_artifact(client, repository, [(artifacts.HELM_CHART, package)],
                         config_type=artifacts.HELM_CONFIG, config=chart, tag=version)["digest"]


def seed_samples(client, scale: float = 1.0) -> dict:
    """Push a small, realistic sample: multi-arch indexes sharing a base layer, an untagged
    older index, plain images, several tags on one image, a signature and an SBOM attached
    to alpine:3.20, a Helm chart. ``scale`` shrinks the layers (tests use 0.01). Returns the
    pushed digests by name."""
    def layer(seed, size):
        return make_layer(seed, max(int(size * scale), 64))

    base = layer("alpine-base-layer", 3_400_000)
    out = {}
    for version, created in (("3.19", "2025-03-01T10:00:00Z"), ("3.20", "2026-06-01T10:00:00Z")):
        kids = [push_image(client, "library/alpine", [base, layer(f"alpine-{version}-{p}", 150_000)],
                           platform=p, created=created)
                for p in ("linux/amd64", "linux/arm64/v8")]
        out[f"alpine:{version}"] = push_index(client, "library/alpine", kids, tag=version)
    latest = client.get_manifest("library/alpine", "3.20")
    client.put_manifest("library/alpine", "latest", latest.body, latest.media_type)
    # An older build whose tag moved on: an untagged index and its children, known to hubmgr
    # only from push events.
    old = [push_image(client, "library/alpine", [base, layer(f"alpine-old-{p}", 140_000)],
                      platform=p, created="2024-11-01T10:00:00Z")
           for p in ("linux/amd64", "linux/arm64/v8")]
    out["alpine:old"] = push_index(client, "library/alpine", old)
    app_base = layer("python-runtime", 18_000_000)
    for n in range(1, 6):
        desc = push_image(client, "team/api", [app_base, layer(f"api-build-{n}", 400_000 + n * 25_000)],
                          created=f"2026-0{n}-15T09:30:00Z", tag=f"1.{n}.0", oci=n % 2 == 0)
        out[f"team/api:1.{n}.0"] = desc["digest"]
    stable = client.get_manifest("team/api", "1.5.0")
    client.put_manifest("team/api", "stable", stable.body, stable.media_type)
    for name in ("nightly-1", "nightly-2", "nightly-3"):
        out[f"team/worker:{name}"] = push_image(
            client, "team/worker", [app_base, layer(f"worker-{name}", 900_000)],
            created="2026-10-01T00:00:00Z", tag=name, platform="linux/arm64")["digest"]
    out.update({f"alpine:3.20 {name}": digest
                for name, digest in seed_artifacts(client, "library/alpine", "3.20").items()})
    out["charts/web:1.0.0"] = push_chart(client, "charts/web", "web", "1.0.0")
    return out


# ---- the demo's history ----------------------------------------------------------------------
# What the demo registry went through before `make run` first started it, in days before now:
# when each sample was pushed (after its image was built), and from when to when it was
# pulled, every so many hours. Every state of the table appears: pulled within the stale
# period (Active), pulled only before it (Stale), never pulled (Stale when pushed long ago,
# Active when lately). Some alpine build is pulled every 8 hours from the first push on, so
# the log has no gap: `import_pulls --complete` takes it to cover those 700 days.
# (seed_samples' name, repository, days ago pushed, (first pull, last pull, hours apart))
DEMO_HISTORY = (
    ("alpine:old", "library/alpine", 700, (700, 600, 8)),
    ("alpine:3.19", "library/alpine", 600, (600, 186, 8)),
    ("alpine:3.20", "library/alpine", 186, (186, 0, 8)),
    ("alpine:3.20 signature", "library/alpine", 186, None),
    ("alpine:3.20 sbom", "library/alpine", 186, None),
    ("alpine:3.20 referrers", "library/alpine", 186, None),
    ("team/api:1.1.0", "team/api", 320, (320, 300, 24)),
    ("team/api:1.2.0", "team/api", 290, None),
    ("team/api:1.3.0", "team/api", 260, (259, 150, 24 * 7)),
    ("team/api:1.4.0", "team/api", 230, None),
    ("team/api:1.5.0", "team/api", 200, (200, 0, 12)),
    ("charts/web:1.0.0", "charts/web", 250, None),
    ("team/worker:nightly-1", "team/worker", 3, None),
    ("team/worker:nightly-2", "team/worker", 2, None),
    ("team/worker:nightly-3", "team/worker", 1, (1, 0, 6)),
)
CLIENT_AGENT = "docker/27.3.1 go/go1.22.7 os/linux arch/amd64"


def demo_history(client, seeded: dict, now: datetime) -> tuple[list[dict], list[str]]:
    """The demo's past as a registry would have recorded it, from ``seeded`` (seed_samples'
    answer): the push events its notifications would have sent (each manifest, an index's
    images a second before it, with the tags that name it now) and its access log in the
    combined format (each push as a PUT, each pull as a GET of the manifest by digest, and of
    an index's first image after it). Answers (events, log lines), oldest first."""
    tags = defaultdict(list)
    for repository in {repo for _, repo, _, _ in DEMO_HISTORY}:
        for tag in client.tags(repository):
            tags[repository, client.head_manifest(repository, tag)].append(tag)
    events, requests_ = [], []
    for name, repository, pushed_days, pulls in DEMO_HISTORY:
        top = client.get_manifest(repository, seeded[name])
        body = json.loads(top.body)
        children = [(c["digest"], c["mediaType"], c["size"]) for c in body.get("manifests", [])
                    if body.get("mediaType") == OCI_INDEX and "platform" in c]
        pushed = now - timedelta(days=pushed_days)
        for n, (digest, media_type, size) in enumerate(children):
            when = pushed - timedelta(seconds=len(children) - n)
            events.append(_push_event(when, repository, digest, media_type, size, ""))
            requests_.append((when, "PUT", repository, digest, 201))
        for tag in tags[repository, top.digest] or [""]:
            events.append(_push_event(pushed, repository, top.digest, top.media_type,
                                      len(top.body), tag))
        requests_.append((pushed, "PUT", repository, top.digest, 201))
        if pulls:
            first, last, hours = pulls
            when = now - timedelta(days=first) + timedelta(minutes=7)
            while when <= now - timedelta(days=last):
                requests_.append((when, "GET", repository, top.digest, 200))
                if children:
                    requests_.append((when + timedelta(seconds=1), "GET", repository,
                                      children[0][0], 200))
                when += timedelta(hours=hours)
    events.sort(key=lambda e: e["timestamp"])
    requests_.sort()
    lines = [f'10.0.0.{7 + len(repo) % 5} - - [{when.strftime("%d/%b/%Y:%H:%M:%S +0000")}] '
             f'"{method} /v2/{repo}/manifests/{digest} HTTP/1.1" {status} '
             f'{0 if method == "PUT" else 1024} "-" "{CLIENT_AGENT}"'
             for when, method, repo, digest, status in requests_]
    return events, lines


def _push_event(when, repository, digest, media_type, size, tag) -> dict:
    target = {"mediaType": media_type, "digest": digest, "size": size, "length": size,
              "repository": repository}
    if tag:
        target["tag"] = tag
    named = hashlib.sha256(f"{repository}@{digest}:{tag}".encode()).hexdigest()
    return {"id": f"demo-{named[:32]}",
            "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "action": "push",
            "target": target, "request": {"method": "PUT", "useragent": CLIENT_AGENT},
            "actor": {}, "source": {"addr": "demo"}}
