"""What every benchmark section shares: its knobs, a scratch folder, percentiles, and the
record of figures that `make bench` writes to bench/output/results.json."""

import json
import os
import time
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "output"
RESULTS_FILE = OUT / "results.json"
WORK = Path(os.environ["HUBMGR_DATA_DIR"])

MANIFESTS = int(os.environ.get("BENCH_MANIFESTS", 100_000))
TAGS = int(os.environ.get("BENCH_TAGS", 20_000))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", 8))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", 60))

_results = {}


def percentile(values, pct):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def record(section, case, **figures):
    """Keep one measured case (e.g. record("table", "htmx swap", p50_ms=3.1, p95_ms=4.0))
    for results.json."""
    _results.setdefault(section, {})[case] = figures


def write_results(database):
    """Merge this run's figures into results.json under its database. Runs of one `make bench`
    share BENCH_RUN_ID, so the SQLite and PostgreSQL runs land side by side; a new
    `make bench` starts the file afresh."""
    run_id = os.environ.get("BENCH_RUN_ID", "")
    try:
        data = json.loads(RESULTS_FILE.read_text())
    except (OSError, ValueError):
        data = {}
    if not run_id or data.get("run_id") != run_id:
        data = {"run_id": run_id, "started": time.strftime("%Y-%m-%d %H:%M %Z"),
                "cores": os.cpu_count(), "databases": {}}
    data["databases"][connection.vendor] = {"server": database, "manifests": MANIFESTS,
                                            "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
                                            "sections": _results}
    RESULTS_FILE.write_text(json.dumps(data, indent=2) + "\n")
