"""Notification ingest: events per second through the webhook under gunicorn (2 workers of 8
threads, as in docker-compose.yml), with a real Celery worker applying the queue, against one
repository of BENCH_MANIFESTS manifests.

The mix is the registry's: one event per POST, 80% pulls and 20% pushes (with tags) of
manifests hubmgr knows, a tenth of the pushes a signature pushed again at its cosign tag, unique
ids, increasing timestamps. Load comes from a few client
processes (threads with keep-alive connections, http.client), paced at BENCH_INGEST_RATE
events/s (0: as fast as they can) for BENCH_INGEST_SECONDS. A probe pull every half second
measures how long an event takes to be visible in the database (what the page reads). CPU
seconds of the load generator, gunicorn and the worker are reported, since all share the
machine's cores.
"""

import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from hubmgr.registry.artifacts import SIGNATURE
from hubmgr.registry.manifests import OCI_INDEX, OCI_MANIFEST

from .common import MANIFESTS, ROOT, WORK, percentile, record
from .dataset import SIGNATURE_MANIFEST_SIZE, attached_digest, carrier_of, cosign_tag
from .table import digest_of

RATE = float(os.environ.get("BENCH_INGEST_RATE", 1000))
SECONDS = float(os.environ.get("BENCH_INGEST_SECONDS", 25))
PROCESSES = int(os.environ.get("BENCH_INGEST_PROCESSES", 2))
CONNECTIONS = int(os.environ.get("BENCH_INGEST_CONNECTIONS", 8))  # in all
GUNICORN_ARGS = os.environ.get("BENCH_GUNICORN_ARGS", "-w 2 --threads 8").split()
TOKEN = "bench-webhook-token"
REPOSITORY = "bench/big"  # table.build_inventory's
ARTIFACT_PUSHES = 0.1  # the share of pushes that push a signature again


def bench_ingest():
    from hubmgr import devstack
    from hubmgr.inventory.models import Repository

    repo = Repository.objects.filter(name=REPOSITORY).first()
    if repo is None:
        from bench.table import build_inventory

        started = time.perf_counter()
        repo = build_inventory(MANIFESTS)
        print(f"built an inventory of {MANIFESTS:,} manifests in "
              f"{time.perf_counter() - started:.1f} s")
    n = repo.manifests.filter(artifact="").count()  # the n of build_inventory(n)
    redis = devstack.start_redis(WORK / "redis-ingest")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HUBMGR_") or k in ("HUBMGR_DATA_DIR", "HUBMGR_DATABASE_URL")}
    env.update(HUBMGR_REDIS_URL=redis.url, HUBMGR_WEBHOOK_TOKEN=TOKEN,
               HUBMGR_LOG_LEVEL="WARNING", DJANGO_SETTINGS_MODULE="hubmgr.settings")
    port = devstack.free_port()
    log = open(WORK / "gunicorn.log", "ab")
    web = subprocess.Popen([str(ROOT / ".venv/bin/gunicorn"), "hubmgr.wsgi", *GUNICORN_ARGS,
                            "--bind", f"127.0.0.1:{port}"], cwd=ROOT, env=env, stdout=log,
                           stderr=subprocess.STDOUT)
    worker = _celery(env)
    try:
        devstack.wait_for(lambda: _answers(port), "gunicorn", timeout=60)
        _warm(port, n)
        result = _run(port, n, web.pid, worker.pid)
    finally:
        for proc in (web, worker):
            proc.terminate()
            proc.wait(30)
        redis.stop()
    _report(result, n)


def _celery(env):
    log = open(WORK / "ingest-worker.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "hubmgr", "worker",
                             "--concurrency", "2", "--loglevel", "warning"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def _answers(port):
    try:
        return _post(http.client.HTTPConnection("127.0.0.1", port, timeout=5), [])[0] == 200
    except OSError:
        return False


def _post(conn, events):
    """POST one envelope on a keep-alive connection; once more on a fresh connection when the
    server had closed the idle one."""
    body = json.dumps({"events": events})
    headers = {"Authorization": f"Bearer {TOKEN}",
               "Content-Type": "application/vnd.docker.distribution.events.v1+json"}
    for attempt in (1, 2):
        started = time.perf_counter()
        try:
            conn.request("POST", "/hooks/registry", body, headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status, time.perf_counter() - started
        except (ConnectionError, http.client.BadStatusLine):
            conn.close()
            if attempt == 2:
                raise


def _stamp(when=None):
    return datetime.fromtimestamp(when or time.time(), timezone.utc).isoformat() \
        .replace("+00:00", "Z")


def make_event(event_id, n, rng, when=None, action=None, index=None):
    """A pull (80%) or a push with a tag (20%) of a top-level manifest of build_inventory(n):
    indexes are its first tenth, their children the next two tenths. A tenth of the pushes
    (of randomly chosen items) are cosign signing an item again: the push of its signature's
    manifest at its cosign tag ``sha256-<hex>.sig``."""
    n_index = n // 10
    top = n - 2 * n_index
    chosen = index is None
    if chosen:
        index = rng.randrange(top)
        index = index if index < n_index else index + 2 * n_index
    action = action or ("pull" if rng.random() < 0.8 else "push")
    target = {"mediaType": OCI_INDEX if index < n_index else OCI_MANIFEST,
              "repository": REPOSITORY, "digest": digest_of(index), "size": 1234}
    useragent = "docker/27.3.1 go/go1.22.7"
    signed = carrier_of(index)
    if action == "push" and chosen and rng.random() < ARTIFACT_PUSHES and (
            signed < n_index or 3 * n_index <= signed < n):
        target = {"mediaType": OCI_MANIFEST, "repository": REPOSITORY,
                  "size": SIGNATURE_MANIFEST_SIZE,
                  "digest": attached_digest(REPOSITORY, digest_of(signed), SIGNATURE),
                  "tag": cosign_tag(digest_of(signed))}
        useragent = "cosign/v2.4.1 (linux; amd64) go-containerregistry/v0.20.2"
    elif action == "push":  # its own tag again, or a rolling tag moved onto it
        target["tag"] = f"v{index}" if rng.random() < 0.5 else f"roll{rng.randrange(200)}"
    return {"id": event_id, "timestamp": _stamp(when), "action": action, "target": target,
            "request": {"id": event_id, "addr": "10.0.0.9", "host": "registry",
                        "method": "GET" if action == "pull" else "PUT",
                        "useragent": useragent},
            "actor": {}, "source": {"addr": "registry:5000", "instanceID": "bench"}}


def _warm(port, n):
    """A few requests per gunicorn worker, so imports and connections are not measured."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    rng = random.Random(1)
    for k in range(20):
        _post(conn, [make_event(f"warm-{k}", n, rng)])
    conn.close()
    from hubmgr.inventory.models import QueuedEnvelope

    while QueuedEnvelope.objects.filter(error="").exists():
        time.sleep(0.05)


def load_main():
    """One load-generator process: threads posting one event each, paced. Prints JSON."""
    spec = json.loads(sys.stdin.read())
    rng_seed, threads = spec["seed"], spec["threads"]
    per_thread = spec["rate"] / threads if spec["rate"] else 0
    start_at, stop_at = spec["start_at"], spec["start_at"] + spec["seconds"]
    results = []

    def run(k):
        rng = random.Random(rng_seed * 1000 + k)
        conn = http.client.HTTPConnection("127.0.0.1", spec["port"], timeout=60)
        latencies, errors, sent = [], 0, 0
        while time.time() < start_at:
            time.sleep(0.001)
        while True:
            now = time.time()
            if now >= stop_at:
                break
            if per_thread:
                due = start_at + sent / per_thread
                if due > now:
                    time.sleep(due - now)
            event = make_event(f"load-{spec['run']}-{rng_seed}-{k}-{sent}", spec["n"], rng)
            try:
                status, took = _post(conn, [event])
            except (OSError, http.client.HTTPException):
                conn.close()
                status, took = 0, 0
            sent += 1
            if status == 200:
                latencies.append(took)
            else:
                errors += 1
        results.append((latencies, errors))

    pool = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    cpu = os.times()
    print(json.dumps({"latencies": [x for lat, _ in results for x in lat],
                      "errors": sum(e for _, e in results),
                      "cpu_s": cpu.user + cpu.system}))


def _cpu_seconds(pid):
    """CPU seconds (user + system) of a process and its live children."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass
    return total


def _machine_busy():
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _run(port, n, gunicorn_pid, worker_pid):
    from hubmgr.inventory.models import Manifest, ProcessedEvent, QueuedEnvelope

    events_before = ProcessedEvent.objects.count()
    start_at = time.time() + 1.0
    threads = max(1, CONNECTIONS // PROCESSES)
    procs = []
    for p in range(PROCESSES):
        spec = {"seed": p + 1, "run": int(start_at), "threads": threads,
                "rate": RATE / PROCESSES if RATE else 0,
                "port": port, "n": n, "start_at": start_at, "seconds": SECONDS}
        proc = subprocess.Popen([sys.executable, "-c", "from bench.ingest import load_main; "
                                 "load_main()"], cwd=ROOT, env=os.environ.copy(),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        proc.stdin.write(json.dumps(spec))
        proc.stdin.close()
        procs.append(proc)
    while time.time() < start_at:
        time.sleep(0.01)
    cpu_web = _cpu_seconds(gunicorn_pid)
    cpu_worker = _cpu_seconds(worker_pid)
    busy0, all0 = _machine_busy()
    probes = _probe(port, n, start_at + SECONDS)
    outputs = [json.loads(proc.stdout.read()) for proc in procs]
    for proc in procs:
        proc.wait()
    stopped = start_at + SECONDS  # when the load generators stopped sending
    cpu_web = _cpu_seconds(gunicorn_pid) - cpu_web
    cpu_worker = _cpu_seconds(worker_pid) - cpu_worker
    busy1, all1 = _machine_busy()
    while QueuedEnvelope.objects.filter(error="").exists():
        time.sleep(0.02)
    drained = time.time()
    latencies = [x for o in outputs for x in o["latencies"]]
    applied = ProcessedEvent.objects.count() - events_before
    last = Manifest.objects.filter(repository__name=REPOSITORY).order_by("-last_pulled") \
        .values_list("last_pulled", flat=True).first()
    return {"sent": len(latencies), "errors": sum(o["errors"] for o in outputs),
            "applied": applied, "probes": probes, "latencies": latencies,
            "load_cpu_s": sum(o["cpu_s"] for o in outputs), "web_cpu_s": cpu_web,
            "worker_cpu_s": cpu_worker, "machine_busy": (busy1 - busy0) / (all1 - all0),
            "seconds": SECONDS, "drain_s": drained - stopped, "applied_until": drained - start_at,
            "last_pulled": last}


def _probe(port, n, until):
    """Every half second a pull of one manifest, then the time until the database shows it."""
    from hubmgr.inventory.models import Manifest

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    index = n - 1  # a top-level image
    lags, k = [], 0
    while time.time() < until - 0.5:
        sent_at = time.time()
        event = make_event(f"probe-{k}-{sent_at}", n, None, when=sent_at, action="pull",
                           index=index)
        _post(conn, [event])
        when = datetime.fromtimestamp(sent_at, timezone.utc)
        while not Manifest.objects.filter(repository__name=REPOSITORY,
                                          digest=digest_of(index),
                                          last_pulled__gte=when).exists():
            time.sleep(0.01)
            if time.time() - sent_at > 30:
                break
        lags.append(time.time() - sent_at)
        k += 1
        time.sleep(max(0.0, sent_at + 0.5 - time.time()))
    return lags


def _report(r, n):
    from django.db import connection

    sent, seconds = r["sent"], r["seconds"]
    lat = r["latencies"] or [0]
    probes = r["probes"] or [0]
    accepted = sent / seconds
    applied = r["applied"] / r["applied_until"]
    pace = f"paced at {RATE:.0f}/s" if RATE else "unpaced"
    record("ingest", f"{n} manifests, {pace}", events_per_s=round(accepted),
           applied_per_s=round(applied), sent=sent, errors=r["errors"],
           p50_ms=round(percentile(lat, 50) * 1000, 1),
           p95_ms=round(percentile(lat, 95) * 1000, 1),
           visible_p50_s=round(statistics.median(probes), 2),
           visible_max_s=round(max(probes), 2), drain_after_stop_s=round(r["drain_s"], 2),
           load_cpu_cores=round(r["load_cpu_s"] / seconds, 2),
           web_cpu_cores=round(r["web_cpu_s"] / seconds, 2),
           worker_cpu_cores=round(r["worker_cpu_s"] / seconds, 2),
           machine_busy=round(r["machine_busy"], 2), gunicorn=" ".join(GUNICORN_ARGS),
           connections=CONNECTIONS, processes=PROCESSES)
    print(f"\nNotification ingest, {n:,} manifests, {connection.vendor}, gunicorn "
          f"{' '.join(GUNICORN_ARGS)}, {CONNECTIONS} connections in {PROCESSES} client "
          f"processes, {pace}, {seconds:.0f} s, one event per POST (80% pulls, 20% pushes, "
          f"a tenth of them signatures):")
    print(f"  accepted by the webhook  {accepted:8.0f} events/s  ({sent:,} sent, "
          f"{r['errors']} errors)")
    print(f"  applied by the worker    {applied:8.0f} events/s  ({r['applied']:,} applied; "
          f"queue empty {r['drain_s']:.2f} s after the load stopped)")
    print(f"  webhook latency          p50 {percentile(lat, 50) * 1000:6.1f} ms   "
          f"p95 {percentile(lat, 95) * 1000:6.1f} ms")
    print(f"  visible in the database  p50 {statistics.median(probes):6.2f} s    "
          f"max {max(probes):6.2f} s   ({len(r['probes'])} probe pulls)")
    print(f"  CPU (cores)              load generator {r['load_cpu_s'] / seconds:.2f}, "
          f"gunicorn {r['web_cpu_s'] / seconds:.2f}, worker {r['worker_cpu_s'] / seconds:.2f}"
          f"; machine {r['machine_busy'] * 100:.0f}% busy (shared with others)")
