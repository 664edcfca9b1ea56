"""import_pulls: lines per second and peak memory for a BENCH_LOG_LINES-line access log
(default 1,000,000), imported in a fresh process.

The log mixes the three formats (combined 60 %, the registry's text 20 % and JSON 20 %):
pulls of 2,000 manifests in 10 repositories by digest and by tag (half the tags with a
recorded history), blob requests, HEADs, hubmgr's own GETs, pushes, unknown repositories and
a little garbage, in time order.
"""

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from bench.common import ROOT, WORK, record

LINES = int(os.environ.get("BENCH_LOG_LINES", 1_000_000))
REPOS, PER_REPO = 10, 200
T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)


def _digest(seed):
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def _inventory():
    from hubmgr.inventory.models import Manifest, Repository, Tag, TagHistory
    from hubmgr.inventory.registries import default_registry

    registry = default_registry()
    Repository.objects.filter(registry=registry, name__startswith="bench/imp-").delete()
    repos = Repository.objects.bulk_create(
        [Repository(registry=registry, name=f"bench/imp-{r}") for r in range(REPOS)])
    for repo in repos:
        rows = Manifest.objects.bulk_create(
            [Manifest(repository=repo, digest=_digest(f"{repo.name}-{n}"), fetched=True,
                      media_type="application/vnd.oci.image.manifest.v1+json")
             for n in range(PER_REPO)], batch_size=500)
        Tag.objects.bulk_create([Tag(repository=repo, name=f"t{n}", manifest=m, event_at=T0)
                                 for n, m in enumerate(rows)], batch_size=500)
        TagHistory.objects.bulk_create(
            [TagHistory(repository=repo, tag=f"t{n}", digest=m.digest, since=T0,
                        source="push_event") for n, m in enumerate(rows) if n % 2 == 0],
            batch_size=500)


def _write_log(path):
    rng = random.Random(9)
    with open(path, "w") as out:
        for n in range(LINES):
            when = T0 + timedelta(milliseconds=10 * n + rng.randrange(10))
            r, m = rng.randrange(REPOS), rng.randrange(PER_REPO)
            name = f"bench/imp-{r}"
            pick = rng.random()
            method, status, agent = "GET", 200, "docker/27.3.1 go/go1.22.7"
            if pick < 0.35:
                uri = f"/v2/{name}/manifests/{_digest(f'{name}-{m}')}"
            elif pick < 0.70:
                uri = f"/v2/{name}/manifests/t{m}"
            elif pick < 0.90:
                uri = f"/v2/{name}/blobs/{_digest(str(m))}"
            elif pick < 0.95:
                method, uri = "HEAD", f"/v2/{name}/manifests/t{m}"
            elif pick < 0.97:
                agent, uri = "hubmgr/0.1 (+registry inventory)", f"/v2/{name}/manifests/t{m}"
            elif pick < 0.98:
                method, status = "PUT", 201
                uri = f"/v2/{name}/manifests/{_digest(f'{name}-{m}')}"
            elif pick < 0.99:
                uri = f"/v2/nobody/r{m}/manifests/latest"
            else:
                out.write(f"garbage /manifests/ {n}\n")
                continue
            kind = n % 5
            if kind < 3:
                out.write(f'10.0.{r}.{m} - - [{when.strftime("%d/%b/%Y:%H:%M:%S +0000")}] '
                          f'"{method} {uri} HTTP/1.1" {status} 1234 "-" "{agent}"\n')
            elif kind == 3:
                out.write(f'time="{when.strftime("%Y-%m-%dT%H:%M:%S.%f")}123Z" level=info '
                          f'msg="response completed" go.version=go1.19.8 '
                          f'http.request.host="registry:5000" http.request.id={n} '
                          f'http.request.method={method} http.request.remoteaddr="10.0.0.1:1" '
                          f'http.request.uri="{uri}" http.request.useragent="{agent}" '
                          f'http.response.duration=1.2ms http.response.status={status} '
                          f'http.response.written=1234\n')
            else:
                out.write(json.dumps({
                    "go.version": "go1.19.8", "http.request.host": "registry:5000",
                    "http.request.method": method, "http.request.uri": uri,
                    "http.request.useragent": agent, "http.response.duration": "1.2ms",
                    "http.response.status": status, "level": "info",
                    "msg": "response completed",
                    "time": when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"}) + "\n")


def bench_importlog():
    print(f"\n[importlog] import_pulls of a {LINES:,}-line access log")
    _inventory()
    path = WORK / "access.log"
    started = time.perf_counter()
    _write_log(path)
    print(f"  log written in {time.perf_counter() - started:.1f} s "
          f"({path.stat().st_size / 2**20:.0f} MiB)")
    out = subprocess.run([sys.executable, "-m", "bench.importlog", str(path)], cwd=ROOT,
                         env=os.environ, check=True, capture_output=True, text=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    # A second import of the same log: nothing changes, and it is timed too.
    again = subprocess.run([sys.executable, "-m", "bench.importlog", str(path)], cwd=ROOT,
                           env=os.environ, check=True, capture_output=True, text=True)
    second = json.loads(again.stdout.strip().splitlines()[-1])
    path.unlink()
    rate = figures["lines"] / figures["seconds"]
    print(f"  {figures['lines']:,} lines in {figures['seconds']:.1f} s: {rate:,.0f} lines/s; "
          f"pulls {figures['pulls']:,}, applied {figures['applied']:,}, "
          f"manifests updated {figures['updated']:,}")
    print(f"  peak RSS {figures['rss_peak_mib']} MiB (growth during the import "
          f"{figures['rss_delta_mib']} MiB)")
    print(f"  again: {second['lines'] / second['seconds']:,.0f} lines/s, manifests updated "
          f"{second['updated']}")
    record("importlog", f"{LINES} lines", lines_per_s=round(rate),
           seconds=round(figures["seconds"], 2), rss_peak_mib=figures["rss_peak_mib"],
           rss_delta_mib=figures["rss_delta_mib"],
           again_lines_per_s=round(second["lines"] / second["seconds"]),
           again_updated=second["updated"])


def _measure(path):
    """In a fresh process: one import, its time and this process's peak memory."""
    import django

    django.setup()
    from bench.plan import _peak_rss_kib
    from hubmgr.inventory.pulls.pullimport import Importer
    from hubmgr.inventory.registries import default_registry

    registry = default_registry()
    before = _peak_rss_kib()
    started = time.perf_counter()
    summary = Importer(registry).run([path])
    seconds = time.perf_counter() - started
    peak = _peak_rss_kib()
    print(json.dumps({"lines": summary.lines, "seconds": seconds, "pulls": summary.pulls,
                      "applied": summary.applied, "updated": summary.manifests_updated,
                      "rss_peak_mib": round(peak / 1024, 1),
                      "rss_delta_mib": round((peak - before) / 1024, 1)}))


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hubmgr.settings")
    _measure(sys.argv[1])
