"""A cleanup policy's dry run over BENCH_MANIFESTS manifests in BENCH_POLICY_REPOS (1,000)
repositories (issue 10's goals: 1,000,000 on PostgreSQL in at most 5 s, 100,000 on SQLite in
at most 2 s).

Each repository: 10% indexes of two untagged children, 60% of the rest tagged ``build-N`` (a
few ``vN.0.0``), pushes seen over the last 100 days, a layer of its own and one of 500 shared
base layers per image; on top of those, a tenth of the top-level items carry a signature and
an attestation (bench.dataset.add_artifacts), which go with them. A third of the repositories
were pushed only in the last week, so the policy finds nothing there. The policy: remove
``build-`` tags older than 30 days and untagged items older than 7, keep the 10 newest tagged
items and every release tag."""

import os
import statistics
import time
from datetime import timedelta

from .common import MANIFESTS, record
from .dataset import add_artifacts, carries_artifacts

REPOS = int(os.environ.get("BENCH_POLICY_REPOS", 1000))
RUNS = 3


def build(n, repos):
    from django.db import connection
    from django.utils import timezone

    from hubmgr.inventory.catalog.store import refresh_counts
    from hubmgr.inventory.models import Blob, IndexChild, Manifest, ManifestBlob, Repository, Tag
    from hubmgr.inventory.registries import default_registry

    started = time.perf_counter()
    registry, now, per = default_registry(), timezone.now(), n // repos
    Blob.objects.bulk_create([Blob(registry=registry, digest=f"sha256:c{b:063x}", size=5000 + b)
                              for b in range(500)], batch_size=2000, ignore_conflicts=True)
    base = dict(Blob.objects.filter(registry=registry).values_list("digest", "id"))
    carriers, built = [], []
    for r in range(repos):
        repo = Repository.objects.create(registry=registry, name=f"bench-pol/svc-{r:04d}")
        fresh = r % 3 == 0
        n_index = per // 10
        rows = []
        for i in range(per):
            child = n_index <= i < 3 * n_index
            tagged = not child and i % 5 < 3
            tag = (f"v{i}.0.0" if i % 50 == 0 else f"build-{i}") if tagged else ""
            days = (i * 7) % (7 if fresh else 100)
            rows.append(Manifest(
                repository=repo, digest=_digest(r, i), kind="index" if i < n_index else "image",
                size=1000 + i, manifest_size=500, fetched=True, last_pushed_source="push_event",
                last_pushed=now - timedelta(days=days, minutes=i), tags_text=tag,
                is_tagged=tagged, is_top_level=not child))
        Manifest.objects.bulk_create(rows, batch_size=2000)
        ids = dict(Manifest.objects.filter(repository=repo).values_list("digest", "id"))
        IndexChild.objects.bulk_create(
            [IndexChild(index_id=ids[_digest(r, i)], child_id=ids[_digest(r, c)])
             for i in range(n_index) for c in (n_index + 2 * i, n_index + 2 * i + 1)],
            batch_size=2000)
        Tag.objects.bulk_create([Tag(repository=repo, name=m.tags_text,
                                     manifest_id=ids[m.digest]) for m in rows if m.tags_text],
                                batch_size=2000)
        own = Blob.objects.bulk_create(
            [Blob(registry=registry, digest=f"sha256:d{r:05x}{i:058x}", size=i % 5000)
             for i in range(n_index, per)], batch_size=2000)
        ManifestBlob.objects.bulk_create(
            [ManifestBlob(manifest_id=ids[_digest(r, i)], blob_id=blob.pk)
             for i, blob in zip(range(n_index, per), own)]
            + [ManifestBlob(manifest_id=ids[_digest(r, i)],
                            blob_id=base[f"sha256:c{i % 500:063x}"])
               for i in range(n_index, per)], batch_size=2000)
        carriers += [(repo.id, m.digest, m.last_pushed) for i, m in enumerate(rows)
                     if m.is_top_level and carries_artifacts(i)]
        built.append(repo)
    add_artifacts(registry.pk, carriers)
    for repo in built:
        refresh_counts(repo)
    vacuum = connection.vendor == "postgresql" and not connection.in_atomic_block
    with connection.cursor() as cursor:
        # As autovacuum would leave it: the reference-count triggers leave a dead row version
        # of a shared blob per link (1.35 million at a million manifests), which slowed the
        # first dry runs after a build by a fifth.
        cursor.execute("VACUUM ANALYZE" if vacuum else "ANALYZE")
        if connection.vendor == "sqlite":
            # As a database that was not just written is read: the build's pages moved from
            # the write-ahead log into the file (a dry run read them through a 100 MB log).
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(f"built {repos:,} repositories of {per:,} manifests in "
          f"{time.perf_counter() - started:.1f} s")


def _digest(r, i):
    return f"sha256:a{r:05x}{i:058x}"


def bench_policies():
    from django.db import connection

    from hubmgr.inventory.models import Repository
    from hubmgr.policies import runs
    from hubmgr.policies.models import CleanupPolicy
    from hubmgr.policies.reports import MAX_LISTED_ITEMS

    if not Repository.objects.filter(name__startswith="bench-pol/").exists():
        build(MANIFESTS, REPOS)
        connection.close()  # measured as a server process sees it, not through the builder's
    policy = CleanupPolicy(name="bench", include="bench-pol/*", remove_tag_regex="^build-",
                           remove_tag_days=30, remove_untagged_days=7, keep_last=10,
                           keep_tag_regex=r"^latest$|^v?\d+\.\d+\.\d+$")
    # The dry run as POST .../dry-run answers it (set-wise, 100 entries of each list), then
    # once as a recorded run makes it (the planner, every item listed), for the record.
    times, report = [], None
    for _ in range(RUNS):
        started = time.perf_counter()
        report = runs.preview(policy, MAX_LISTED_ITEMS)
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    planned = runs.plan_every_item(policy)
    planner_s = time.perf_counter() - started
    assert planned["totals"] == report["totals"], (planned["totals"], report["totals"])
    totals = report["totals"]
    goal = 5.0 if connection.vendor == "postgresql" else 2.0
    print(f"\nPolicy dry run, {MANIFESTS:,} manifests in {REPOS:,} repositories, "
          f"{connection.vendor}: median {statistics.median(times):.2f} s (goal {goal:.0f} s), "
          f"best {min(times):.2f} s; {totals['planned']} repositories planned, "
          f"{totals['going'] + totals['braked_going']:,} items selected or taken along; "
          f"a recorded run's (every item planned and listed): {planner_s:.2f} s")
    record("policies", f"dry run, {MANIFESTS:,} manifests in {REPOS:,} repositories",
           median_s=round(statistics.median(times), 3), best_s=round(min(times), 3),
           goal_s=goal, planned=totals["planned"],
           items=totals["going"] + totals["braked_going"], recorded_run_s=round(planner_s, 3))
    bench_preview(policy)


PREVIEW_REQUESTS = int(os.environ.get("BENCH_PREVIEW_REQUESTS", 20))
PREVIEW_MANIFESTS = 100_000  # the "100,000-item registry"


def bench_preview(policy):
    """The form's live preview (POST /policies/preview, as htmx sends it while one types):
    server time over the repositories holding 100,000 manifests (all of them on SQLite; the
    first tenth of the repositories at 1,000,000), goal p95 at most 500 ms; and once over
    every repository at the larger size, for the record."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.db import connection
    from django.test import Client

    from hubmgr.policies import service
    from hubmgr.web.policy_forms import percent_text

    from .common import percentile

    user, _ = get_user_model().objects.get_or_create(username="bench-policies")
    user.user_permissions.add(Permission.objects.get(codename="delete_images"))
    settings.ALLOWED_HOSTS.append("testserver")
    client = Client()
    client.force_login(user)
    data = {k: "" if v is None else v for k, v in service.as_data(policy).items()}
    data.pop("name", None)
    data["brake_share"] = percent_text(policy.brake_share)  # the form takes per cent
    per = MANIFESTS // REPOS
    scopes = [("bench-pol/*", MANIFESTS)]
    n = PREVIEW_MANIFESTS // per  # the first n repositories hold 100,000 manifests
    digits = len(str(n)) - 1
    if MANIFESTS > PREVIEW_MANIFESTS and 10 ** digits == n:  # svc-00* is svc-0000 to svc-0099
        scopes.insert(0, (f"bench-pol/svc-{'0' * (4 - digits)}*", PREVIEW_MANIFESTS))
    htmx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "policy-preview"}
    print(f"\nPolicy form live preview, {PREVIEW_REQUESTS} requests, {connection.vendor}:")
    for include, manifests in scopes:
        requests = PREVIEW_REQUESTS if manifests <= PREVIEW_MANIFESTS else 3
        timings = []
        for n in range(requests + 1):
            started = time.perf_counter()
            response = client.post("/policies/preview", data | {"include": include}, **htmx)
            if n:  # the first warms up
                timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.status_code
            assert b"preview-totals" in response.content, response.content[:500]
        p50, p95 = statistics.median(timings), percentile(timings, 95)
        goal = 500 if manifests <= PREVIEW_MANIFESTS else None
        print(f"  {include} ({manifests:,} manifests in {manifests // per:,} repositories): "
              f"p50 {p50:.0f} ms, p95 {p95:.0f} ms" + (f" (goal {goal} ms)" if goal else ""))
        record("policies", f"live preview, {manifests:,} manifests",
               p50_ms=round(p50, 1), p95_ms=round(p95, 1), goal_ms=goal, requests=requests)
