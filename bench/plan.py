"""The deletion plan: load + plan for a tenth of a repository (10,000 of 100,000 manifests, and
100,000 of 1,000,000 when BENCH_MANIFESTS is a million), the planner alone, peak memory in a
fresh process, and a preview (the plan kept for the page and the API) at 10,000."""

import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc

from .common import MANIFESTS, ROOT, record
from .dataset import add_artifacts, carries_artifacts

RUNS = 5
SMALL = 100_000


def _repository(n):
    """The "bench/big" repository when it has n manifests (built if missing), else one of n
    manifests of the same shape built here, sharing bench/big's base layers."""
    from hubmgr.inventory.models import Repository

    from .table import build_inventory

    if n == MANIFESTS:
        repo = Repository.objects.filter(name="bench/big").first()
        if repo is None:
            started = time.perf_counter()
            repo = build_inventory(n)
            print(f"built bench/big ({n:,} manifests) in {time.perf_counter() - started:.1f} s")
        return repo
    name = f"bench/plan-{n}"
    return Repository.objects.filter(name=name).first() or _build(name, n)


def _build(name, n):
    """Like table.build_inventory, under another name: 10% indexes with two children each,
    images with their own config and one of 500 base layers shared registry-wide, and on top
    of the n a signature and an attestation attached to a tenth of the top-level items."""
    from django.db import connection

    from hubmgr.inventory.catalog.store import refresh_counts
    from hubmgr.inventory.models import Blob, IndexChild, Manifest, ManifestBlob, Repository, Tag
    from hubmgr.inventory.registries import default_registry

    started = time.perf_counter()
    repo = Repository.objects.create(registry=default_registry(), name=name)
    n_index = n // 10
    rows = []
    for i in range(n):
        child = n_index <= i < 3 * n_index
        tagged = not child and i % 5 < 3
        rows.append(Manifest(
            repository=repo, digest=_digest(i), kind="index" if i < n_index else "image",
            media_type="application/vnd.oci.image.manifest.v1+json", platform="linux/amd64",
            size=(i * 7919) % 500_000_000, manifest_size=500, fetched=True,
            tags_text=f"v{i}" if tagged else "", is_tagged=tagged, is_top_level=not child))
    Manifest.objects.bulk_create(rows, batch_size=2000)
    ids = dict(Manifest.objects.filter(repository=repo).values_list("digest", "id"))
    IndexChild.objects.bulk_create(
        [IndexChild(index_id=ids[_digest(i)], child_id=ids[_digest(c)], platform="linux/amd64")
         for i in range(n_index) for c in (n_index + 2 * i, n_index + 2 * i + 1)],
        batch_size=2000)
    Tag.objects.bulk_create([Tag(repository=repo, name=m.tags_text, manifest_id=ids[m.digest])
                             for m in rows if m.tags_text], batch_size=2000)
    registry = repo.registry
    blobs = [Blob(registry=registry, digest=f"sha256:b{b:063x}", size=1000 + b)
             for b in range(500)]
    blobs += [Blob(registry=registry, digest=f"sha256:e{i:063x}", size=i % 5000)
              for i in range(n_index, n)]
    Blob.objects.bulk_create(blobs, batch_size=2000, ignore_conflicts=True)
    blob_ids = dict(Blob.objects.filter(registry=registry).values_list("digest", "id"))
    ManifestBlob.objects.bulk_create(
        [ManifestBlob(manifest_id=ids[_digest(i)], blob_id=blob_ids[digest])
         for i in range(n_index, n)
         for digest in (f"sha256:e{i:063x}", f"sha256:b{i % 500:063x}")], batch_size=2000)
    add_artifacts(registry.pk, ((repo.id, _digest(i), None) for i in range(n)
                                if not n_index <= i < 3 * n_index and carries_artifacts(i)))
    refresh_counts(repo)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"built {name} ({n:,} manifests) in {time.perf_counter() - started:.1f} s")
    return repo


def _digest(i):
    return f"sha256:a{i:063x}"


def _selection(repo, n):
    """A tenth of the repository: every tenth index (each taking its two children), and the
    first top-level images."""
    from hubmgr.inventory.models import Manifest

    indexes = list(Manifest.objects.filter(repository=repo, kind="index").order_by("id")
                   .values_list("digest", flat=True))[::10]
    images = Manifest.objects.filter(repository=repo, kind="image", is_top_level=True) \
        .order_by("id").values_list("digest", flat=True)[:n // 10 - len(indexes)]
    return indexes + list(images)


def bench_plan():
    big = _repository(MANIFESTS)  # first: build_inventory expects no base layers yet
    cases = [(SMALL, big if MANIFESTS == SMALL else _repository(SMALL))]
    if MANIFESTS > SMALL:
        cases.append((MANIFESTS, big))
    for n, repo in cases:
        _bench_case(repo, n)
    _bench_preview(cases[0][1], SMALL)


def _bench_case(repo, n):
    from hubmgr.deletion.graph import collector_paused, load_graph
    from hubmgr.deletion.planner import plan

    chosen = _selection(repo, n)
    load_ms, plan_ms = [], []
    for _ in range(RUNS):
        with collector_paused():  # as actions.make_plan runs them
            started = time.perf_counter()
            graph, selected = load_graph(repo, chosen)
            loaded = time.perf_counter()
            result = plan(graph, selected)
            load_ms.append((loaded - started) * 1000)
            plan_ms.append((time.perf_counter() - loaded) * 1000)
            del graph
    total = [a + b for a, b in zip(load_ms, plan_ms)]
    peak = _peak_memory(repo.name, chosen)
    case = f"{len(chosen)} of {n}"
    attached = sum(1 for node, _ in result.going if node.subject)
    record("plan", case, selected=len(chosen), deleted=len(result.going), attached=attached,
           kept=len(result.kept), reclaim_bytes=result.reclaim_bytes,
           load_median_ms=round(statistics.median(load_ms), 1),
           plan_median_ms=round(statistics.median(plan_ms), 1),
           plan_max_ms=round(max(plan_ms), 1),
           total_median_ms=round(statistics.median(total), 1),
           total_max_ms=round(max(total), 1), **peak)
    print(f"\nDeletion plan for {len(chosen):,} selected items in a {n:,}-manifest "
          f"repository ({len(result.going):,} to delete, of which {attached:,} attached "
          f"artifacts, {len(result.kept):,} kept, "
          f"{result.reclaim_bytes:,} bytes reclaimed), {RUNS} runs:")
    print(f"  load alone        median {statistics.median(load_ms):7.1f} ms   "
          f"max {max(load_ms):7.1f} ms")
    print(f"  planner alone     median {statistics.median(plan_ms):7.1f} ms   "
          f"max {max(plan_ms):7.1f} ms")
    print(f"  load + plan       median {statistics.median(total):7.1f} ms   "
          f"max {max(total):7.1f} ms")
    print(f"  peak memory of load + plan in a fresh process: {peak['rss_delta_mib']} MiB "
          f"(max RSS growth), {peak['tracemalloc_peak_mib']} MiB (tracemalloc peak)")


def _peak_memory(repo_name, chosen):
    """Peak memory of one load + plan, each measure in its own fresh process (tracemalloc
    slows allocation, so it does not share a run with the RSS measure)."""
    path = ROOT / "bench" / "output" / f"plan-selection-{os.getpid()}.json"
    path.write_text(json.dumps([repo_name, chosen]))
    try:
        figures = {}
        for how in ("rss", "tracemalloc"):
            out = subprocess.run([sys.executable, "-m", "bench.plan", how, str(path)], cwd=ROOT,
                                 env=os.environ, check=True, capture_output=True, text=True)
            figures.update(json.loads(out.stdout.strip().splitlines()[-1]))
        return figures
    finally:
        path.unlink(missing_ok=True)


def _measure(how, path):
    """In a fresh process: the memory one load + plan takes above what Django needs."""
    import django

    django.setup()
    from hubmgr.deletion.graph import load_graph
    from hubmgr.deletion.planner import plan
    from hubmgr.inventory.models import Repository

    repo_name, chosen = json.loads(path.read_text())
    repo = Repository.objects.get(name=repo_name)
    if how == "rss":
        before = _peak_rss_kib()
        result = plan(*load_graph(repo, chosen))
        figures = {"rss_delta_mib": round((_peak_rss_kib() - before) / 1024, 1)}
    else:
        tracemalloc.start()
        result = plan(*load_graph(repo, chosen))
        figures = {"tracemalloc_peak_mib": round(tracemalloc.get_traced_memory()[1] / 2**20, 1)}
    assert result.going
    print(json.dumps(figures))


def _peak_rss_kib():
    """This process's peak resident memory. Linux's ru_maxrss would also count the parent's
    memory at the fork before exec; VmHWM starts afresh with the new program."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _bench_preview(repo, n):
    """actions.preview (plan, plan_data, store) for a tenth of an n-manifest repository, and
    reading it back as the API's preview_data."""
    from django.contrib.auth import get_user_model

    from hubmgr.deletion import actions
    from hubmgr.deletion.models import DeletionPreview

    chosen = _selection(repo, n)
    user, _ = get_user_model().objects.get_or_create(username="bench-plan")
    plan_ms, data_ms, create_ms, read_ms = [], [], [], []
    for _ in range(RUNS):
        started = time.perf_counter()
        result = actions.make_plan(repo, chosen)
        planned = time.perf_counter()
        actions.plan_data(result)
        as_data = time.perf_counter()
        found = actions.preview(repo, chosen, user)
        created = time.perf_counter()
        actions.preview_data(DeletionPreview.objects.get(pk=found.pk))
        read = time.perf_counter()
        plan_ms.append((planned - started) * 1000)
        data_ms.append((as_data - planned) * 1000)
        create_ms.append((created - as_data) * 1000)
        read_ms.append((read - created) * 1000)
    DeletionPreview.objects.filter(created_by=user).delete()
    record("plan", f"preview {len(chosen)} of {n}",
           preview_median_ms=round(statistics.median(create_ms), 1),
           preview_max_ms=round(max(create_ms), 1),
           # (the key keeps its old name, so that earlier figures compare)
           snapshot_median_ms=round(statistics.median(data_ms), 1),
           read_median_ms=round(statistics.median(read_ms), 1))
    print(f"\nPreview of {len(chosen):,} selected items in a {n:,}-manifest repository, "
          f"{RUNS} runs:")
    print(f"  load + plan            median {statistics.median(plan_ms):7.1f} ms")
    print(f"  plan_data alone        median {statistics.median(data_ms):7.1f} ms")
    print(f"  actions.preview        median {statistics.median(create_ms):7.1f} ms   "
          f"max {max(create_ms):7.1f} ms  (plan, plan_data and store)")
    print(f"  read back for the API  median {statistics.median(read_ms):7.1f} ms")


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hubmgr.settings")
    _measure(sys.argv[1], __import__("pathlib").Path(sys.argv[2]))
