"""The registry overview at BENCH_MANIFESTS manifests in BENCH_OVERVIEW_REPOS (10,000)
repositories (issue 11's goal: p95 at most 100 ms at 1,000,000 manifests on PostgreSQL;
SQLite measures 100,000), with BENCH_OVERVIEW_DAYS (365) days of daily storage snapshots of
the registry and of every repository (a year at the default retention; BENCH_OVERVIEW_REPO_DAYS,
a month on SQLite), and five policies with a recorded run each. Also times the snapshot itself
(the beat task's work).

Each repository: 10% indexes of two untagged children, 60% of the other top-level items
tagged, pushes seen over the last 400 days and pulls over the last 300 (a quarter never
pulled), observed for 400 days (so Stale is decided); each image has its own config blob and
one of 500 base layers shared by every repository; on top of those, a tenth of the top-level
items carry a signature and an attestation (bench.dataset.add_artifacts). Rows are written
straight into the tables (bench.dataset.insert_rows); the items' tag rows are left out (the
overview reads the denormalised columns)."""

import os
import time
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.test import Client

from .common import MANIFESTS, REQUESTS
from .dataset import add_artifacts, carries_artifacts, insert_rows, recount_references
from .table import measure_cases

REPOS = int(os.environ.get("BENCH_OVERVIEW_REPOS", 10_000))
DAYS = int(os.environ.get("BENCH_OVERVIEW_DAYS", 365))
PREFIX = "bench-ov/"
BASE_LAYERS = 500


def repo_days():
    """Days of each repository's rows: a year on PostgreSQL; SQLite writes 10,000 rows a
    second here, so a month (the pages read them by index, whatever their number)."""
    default = DAYS if connection.vendor == "postgresql" else min(DAYS, 30)
    return int(os.environ.get("BENCH_OVERVIEW_REPO_DAYS", default))


def build(n, repos):
    from django.utils import timezone

    from hubmgr.inventory.models import (
        READ_VERSION, Blob, IndexChild, Manifest, ManifestBlob, Repository, StorageSnapshot)
    from hubmgr.inventory.registries import default_registry

    started = time.perf_counter()
    registry, now = default_registry(), timezone.now()
    registry.notified_since = registry.pulls_observed_since = now - timedelta(days=400)
    registry.save(update_fields=["notified_since", "pulls_observed_since"])
    per = max(3, n // repos)
    n_index = max(1, per // 10)
    children = range(n_index, 3 * n_index)
    top = [i for i in range(per) if i not in children]
    tagged = {i for i in top if i % 5 < 3}

    def config_size(r, i):
        return 1000 + (r * 31 + i * 7) % 50_000

    base_size = {b: 2_000_000 + b * 10_000 for b in range(BASE_LAYERS)}
    Repository.objects.bulk_create([Repository(
        registry=registry, name=f"{PREFIX}svc-{r:05d}", item_count=len(top),
        tagged_count=len(tagged), index_count=n_index,
        total_size=sum(config_size(r, i) for i in range(n_index, per))
        + sum(base_size[b] for b in {(r + i) % BASE_LAYERS for i in range(n_index, per)}),
        last_pushed=now - timedelta(minutes=r), last_pulled=now - timedelta(minutes=2 * r))
        for r in range(repos)], batch_size=2000)
    repo_ids = list(Repository.objects.filter(name__startswith=PREFIX).order_by("name")
                    .values_list("id", flat=True))
    minute = timedelta(minutes=1)

    def digest(r, i):
        return f"sha256:e{r:05x}{i:058x}"

    def pushed(r, i):
        return now - ((r * 7 + i * 13) % (400 * 1440)) * minute

    def manifests():
        for r, repo_id in enumerate(repo_ids):
            for i in range(per):
                pulled = None if (r + i) % 4 == 0 else \
                    now - ((r * 11 + i * 17) % (300 * 1440)) * minute
                yield (repo_id, digest(r, i), "index" if i < n_index else "image",
                       "application/vnd.oci.image.manifest.v1+json", "linux/amd64",
                       config_size(r, i), 0, "", pushed(r, i), "push_event", pulled, now, True,
                       "", f"v{i}" if i in tagged else "", i in tagged, i not in children,
                       READ_VERSION)

    insert_rows(Manifest, ["repository_id", "digest", "kind", "media_type", "platform", "size",
                           "manifest_size", "config_digest", "last_pushed", "last_pushed_source",
                           "last_pulled", "first_seen", "fetched", "error", "tags_text",
                           "is_tagged", "is_top_level", "read_version"], manifests())
    # One writer, rows in (r, i) order: the ids in order are the ids by (r, i).
    ids = list(Manifest.objects.filter(repository__name__startswith=PREFIX).order_by("id")
               .values_list("id", flat=True))
    insert_rows(IndexChild, ["index_id", "child_id", "platform"],
                ((ids[r * per + i], ids[r * per + c], "linux/amd64") for r in range(repos)
                 for i in range(n_index) for c in (n_index + 2 * i, n_index + 2 * i + 1)))
    insert_rows(Blob, ["registry_id", "digest", "size"],
                [(registry.pk, f"sha256:f{b:063x}", base_size[b]) for b in range(BASE_LAYERS)]
                + [(registry.pk, f"sha256:a{r:05x}{i:058x}", config_size(r, i))
                   for r in range(repos) for i in range(n_index, per)])
    base_ids = list(Blob.objects.filter(registry=registry, digest__startswith="sha256:f")
                    .order_by("digest").values_list("id", flat=True))
    configs = list(Blob.objects.filter(registry=registry, digest__startswith="sha256:a")
                   .order_by("id").values_list("id", flat=True))
    images = per - n_index
    insert_rows(ManifestBlob, ["manifest_id", "blob_id"],
                ((ids[r * per + i], blob) for r in range(repos) for i in range(n_index, per)
                 for blob in (configs[r * images + i - n_index],
                              base_ids[(r + i) % BASE_LAYERS])))
    del ids, configs
    add_artifacts(registry.pk, ((repo_id, digest(r, i), pushed(r, i))
                                for r, repo_id in enumerate(repo_ids) for i in top
                                if carries_artifacts(i)))
    recount_references()
    print(f"built {repos:,} repositories of {per:,} manifests in "
          f"{time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    today = now.date()
    insert_rows(StorageSnapshot, [
        "registry_id", "repository_id", "date", "computed_at", "bytes", "items",
        "untagged_bytes", "untagged_items", "stale_bytes", "stale_items"],
        ((registry.pk, repo_id, today - timedelta(days=age), now, 10**9 - age * 10**5,
          per + age % 5, age * 1000, age % 5, age * 500, age % 3)
         for age in range(1, DAYS + 1)
         for repo_id in ([None, *repo_ids] if age <= repo_days() else [None])))
    vacuum = connection.vendor == "postgresql" and not connection.in_atomic_block
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if vacuum else "ANALYZE")
    print(f"wrote {DAYS} days of snapshots of the registry and {repo_days()} of {repos:,} "
          f"repositories in {time.perf_counter() - started:.1f} s")


def bench_overview():
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from hubmgr.inventory.models import Repository
    from hubmgr.inventory.registries import default_registry
    from hubmgr.inventory.storage import snapshots
    from hubmgr.policies.models import CleanupPolicy, PolicyRun

    from .common import record

    if not Repository.objects.filter(name__startswith=PREFIX).exists():
        build(MANIFESTS, REPOS)
    started = time.perf_counter()
    row = snapshots.take(default_registry())
    took = time.perf_counter() - started
    print(f"\nStorage snapshot (the beat task), {row.items:,} items in "
          f"{Repository.objects.count():,} repositories, {connection.vendor}: {took:.1f} s")
    record("overview", "snapshot", seconds=round(took, 2), items=row.items)
    for n in range(5):
        policy, _ = CleanupPolicy.objects.get_or_create(
            name=f"bench-ov-{n}", defaults={"include": f"{PREFIX}**", "remove_untagged_days": 7})
        PolicyRun.objects.create(policy=policy, status=PolicyRun.Status.DONE,
                                 finished_at=timezone.now(),
                                 report={"totals": {"reclaim_bytes": 10**9 * n}})
    user, _ = get_user_model().objects.get_or_create(username="bench-overview")
    settings.ALLOWED_HOSTS.append("testserver")
    client = Client()
    client.force_login(user)
    name = Repository.objects.filter(name__startswith=PREFIX).order_by("name") \
        .values_list("name", flat=True).first()
    cases = [("overview", "/", {}), ("overview, 30 days", "/?days=30", {}),
             ("overview, 365 days", "/?days=365", {}),
             ("repository storage, 90 days", f"/repositories/{name}/-/storage", {}),
             ("repository storage, 365 days", f"/repositories/{name}/-/storage?days=365", {}),
             ("repositories page, sort -size", "/repositories/?sort=-size", {})]
    print(f"\nOverview, {MANIFESTS:,} manifests in {REPOS:,} repositories, {DAYS} days of "
          f"snapshots, {REQUESTS} requests each, {connection.vendor} (goal: p95 at most "
          f"100 ms on PostgreSQL):")
    measure_cases("overview", client, cases, width=32)
