"""`make bench`: the figures the issues name, measured on this machine.

Sections (BENCH_ONLY=name runs one; several may be comma separated):
- table: server time (p50/p95) of the Image Management table and the images API for one
  repository of BENCH_MANIFESTS manifests, with SQL queries per request.
- plan: the deletion plan (load + plan, planner alone, peak memory) for a tenth of a
  100,000-manifest repository, and of BENCH_MANIFESTS when larger; a preview at 10,000.
- repos: the repositories page and API at 10,000 repositories.
- sync: sync throughput from a local docker-registry (BENCH_TAGS images, default 20,000)
  against the raw rate of the same requests (manifest and config GETs), measured in the same
  run with the same concurrency; a second sync with no change; the sync process's peak RSS;
  on PostgreSQL, the sync fanned out to 1 and then 2 Celery workers.
- delete: a deletion job's DELETE rate against raw DELETEs.
- ingest: notifications per second through the webhook (gunicorn, 2 workers of 8 threads) with
  a real Celery worker applying them, one event per POST, and the time until they are visible.
- importlog: import_pulls of a 1,000,000-line access log (three formats): lines per second and
  the importing process's peak memory.
- kill: the time from a worker's SIGKILL to its job's next DELETE (real workers and beat).
- policies: a cleanup policy's dry run over BENCH_MANIFESTS manifests in 1,000 repositories.
- images: the registry-wide table (/images) and GET /api/v1/images, every sort and filter, on
  the overview's inventory (BENCH_MANIFESTS manifests in 10,000 repositories).
- overview: the registry overview (and a repository's storage page) at BENCH_MANIFESTS
  manifests in 10,000 repositories with a year of daily snapshots; and the snapshot's time.

BENCH_DATABASE_URL runs on that database instead of a throw-away SQLite file. Figures are
printed and also written to bench/output/results.json. Scratch files live in a throw-away
folder under bench/output/.
"""

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "output"
OUT.mkdir(parents=True, exist_ok=True)
WORK = Path(tempfile.mkdtemp(prefix="run-", dir=OUT))
os.environ["HUBMGR_DATA_DIR"] = str(WORK)
os.environ.pop("HUBMGR_DATABASE_URL", None)
if os.environ.get("BENCH_DATABASE_URL"):
    os.environ["HUBMGR_DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
os.environ.pop("HUBMGR_REGISTRY_URL", None)
os.environ.setdefault("HUBMGR_LOG_LEVEL", "WARNING")  # no log line per deleted item
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hubmgr.settings")
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench import (  # noqa: E402
    deletion, images, importlog, ingest, overview, plan, policies, repos, sync, table)
from bench.common import write_results  # noqa: E402

SECTIONS = {
    "table": [table.bench_table],
    "plan": [plan.bench_plan],
    "repos": [repos.bench_repositories],
    "sync": [sync.bench_sync],
    "delete": [deletion.bench_delete],
    "kill": [deletion.bench_kill],
    "ingest": [ingest.bench_ingest],
    "importlog": [importlog.bench_importlog],
    "policies": [policies.bench_policies],
    "overview": [overview.bench_overview],
    "images": [images.bench_images],
}


def database_name():
    if connection.vendor == "sqlite":
        return f"SQLite {connection.Database.sqlite_version}"
    version = connection.cursor().connection.info.server_version
    return f"PostgreSQL {version // 10000}.{version % 10000}"


def main():
    database = database_name()
    print(f"hubmgr bench, {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} cores, "
          f"Python {sys.version.split()[0]}, {database}")
    only = [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        sys.exit(f"BENCH_ONLY: unknown section(s) {', '.join(sorted(unknown))}; "
                 f"choose from {', '.join(SECTIONS)}")
    call_command("migrate", verbosity=0)
    try:
        for name, steps in SECTIONS.items():
            if not only or name in only:
                for step in steps:
                    step()
    finally:
        write_results(database)
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
