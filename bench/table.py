"""The Image Management table and the images API, server time per request, and the deletion
plan, on one big repository."""

import hashlib
import statistics
import time

from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from .common import MANIFESTS, REQUESTS, percentile, record
from .dataset import add_artifacts, carries_artifacts, insert_rows, recount_references


def digest_of(i):
    """The digest of build_inventory's manifest i: a SHA-256 like any content digest, so that
    PostgreSQL's statistics see digest prefixes as they are in a real registry (zero-padded
    counters made a 60-character prefix look like 5% of the table)."""
    return "sha256:" + hashlib.sha256(b"%d" % i).hexdigest()


def build_inventory(n):
    """One repository of n manifests: 10% indexes with two children each, the rest images,
    60% of top-level items tagged (tag v{i}), pulls spread over two years (25% never pulled);
    each image has its own config blob and one of 500 shared base layers. On top of the n, a
    tenth of the top-level items carry a signature and an attestation (dataset.add_artifacts).

    Rows are written straight into the tables (COPY on PostgreSQL, executemany on SQLite):
    bulk_create took minutes for a million manifests. Ends with VACUUM ANALYZE on PostgreSQL
    (ANALYZE on SQLite) so the planner has statistics and index-only scans see an up-to-date
    visibility map, as autovacuum would leave them in production."""
    from datetime import timedelta

    from django.utils import timezone

    from hubmgr.inventory.catalog.store import refresh_counts
    from hubmgr.inventory.models import (
        READ_VERSION, Blob, IndexChild, Manifest, ManifestBlob, Repository, Tag)
    from hubmgr.inventory.registries import default_registry

    repo = Repository.objects.create(registry=default_registry(), name="bench/big")
    registry_id = repo.registry_id
    now = timezone.now()
    minute = timedelta(minutes=1)
    n_index = n // 10

    def is_child(i):
        return n_index <= i < 3 * n_index

    def tags(i):
        return f"v{i}" if not is_child(i) and i % 5 < 3 else ""

    def pushed(i):
        return now - (i * 7 % 1_000_000) * minute

    def manifests():
        for i in range(n):
            tag = tags(i)
            yield (repo.id, digest_of(i), "index" if i < n_index else "image",
                   "application/vnd.oci.image.manifest.v1+json", "linux/amd64",
                   (i * 7919) % 500_000_000, 0, "", pushed(i),
                   "push_event", None if i % 4 == 0 else now - (i * 13 % 1_000_000) * minute,
                   now, True, "", tag, bool(tag), not is_child(i), READ_VERSION)

    insert_rows(Manifest, ["repository_id", "digest", "kind", "media_type", "platform", "size",
                           "manifest_size", "config_digest", "last_pushed", "last_pushed_source",
                           "last_pulled", "first_seen", "fetched", "error", "tags_text",
                           "is_tagged", "is_top_level", "read_version"], manifests())
    # One writer, rows in i order: the ids in order are the ids by i.
    ids = list(Manifest.objects.filter(repository=repo).order_by("id")
               .values_list("id", flat=True))
    insert_rows(IndexChild, ["index_id", "child_id", "platform"],
                ((ids[i], ids[c], "linux/amd64") for i in range(n_index)
                 for c in (n_index + 2 * i, n_index + 2 * i + 1)))
    insert_rows(Tag, ["repository_id", "name", "manifest_id", "updated_at"],
                ((repo.id, tags(i), ids[i], now) for i in range(n) if tags(i)))
    # Every image: its own config (sha256:c…) and one of 500 shared base layers (sha256:b…).
    insert_rows(Blob, ["registry_id", "digest", "size"],
                [(registry_id, f"sha256:b{b:063x}", 1000 + b) for b in range(500)]
                + [(registry_id, f"sha256:c{i:063x}", i % 5000) for i in range(n_index, n)])
    blob_ids = list(Blob.objects.filter(registry_id=registry_id, digest__startswith="sha256:b")
                    .order_by("digest").values_list("id", flat=True)[:500])
    configs = list(Blob.objects.filter(registry_id=registry_id, digest__startswith="sha256:c")
                   .order_by("digest").values_list("id", flat=True))
    insert_rows(ManifestBlob, ["manifest_id", "blob_id"],
                ((ids[i], blob) for i in range(n_index, n)
                 for blob in (configs[i - n_index], blob_ids[i % 500])))
    add_artifacts(registry_id, ((repo.id, digest_of(i), pushed(i)) for i in range(n)
                                if not is_child(i) and carries_artifacts(i)))
    recount_references()
    refresh_counts(repo)
    vacuum = connection.vendor == "postgresql" and not connection.in_atomic_block
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if vacuum else "ANALYZE")
    repo.refresh_from_db()
    return repo


BROAD = "v3"  # a tag prefix of about 7% of the items (v1 matches under 1%)


def time_requests(client, url, headers):
    timings, queries = [], set()
    client.get(url, **headers)  # warm
    for _ in range(REQUESTS):
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            resp = client.get(url, **headers)
            timings.append((time.perf_counter() - start) * 1000)
        assert resp.status_code in (200, 304), (url, resp.status_code)
        queries.add(len(ctx.captured_queries))
    return statistics.median(timings), percentile(timings, 95), sorted(queries)


def measure_cases(section, client, cases, width):
    """Time each (name, url, headers) case: print a row of p50, p95 and SQL query counts, and
    record it under ``section``."""
    print(f"{'case':{width}} {'p50 ms':>8} {'p95 ms':>8}  SQL queries")
    for name, url, headers in cases:
        p50, p95, counts = time_requests(client, url, headers)
        record(section, name, url=url, p50_ms=round(p50, 1), p95_ms=round(p95, 1),
               queries=counts)
        print(f"{name:{width}} {p50:8.1f} {p95:8.1f}  {','.join(map(str, counts))}")


def table_cases(client, base, api, htmx):
    """(name, url, headers) of every case; the deep keyset page follows Next links' cursor
    format from the row that ends page 9,999."""
    from hubmgr.inventory.catalog import queries
    from hubmgr.inventory.models import Repository

    repo = Repository.objects.get(name="bench/big")
    cases = [("table, full page", base, {}), ("table, htmx swap", base, htmx),
             ("table, version check unchanged (304)", f"{base}/-/version",
              {"HTTP_IF_NONE_MATCH": f'"{repo.version}"'})]
    for sort in queries.SORTS:
        cases.append((f"table, sort {sort}", f"{base}?sort={sort}", htmx))
    for name in queries.FILTERS:
        cases.append((f"table, filter {name}", f"{base}?filter={name}", htmx))
    cases.append(("table, filter index sort size", f"{base}?filter=index&sort=size", htmx))
    cases += [
        ("table, search tag v4242", f"{base}?search=v4242", htmx),
        # A prefix of one digest (about 15 in a million share its first four characters), and
        # of a sixteenth of all digests.
        ("table, search digest prefix", f"{base}?search={digest_of(4242)[:11]}", htmx),
        ("table, search digest sha256:a (broad)", f"{base}?search=sha256:a", htmx),
        (f"table, search broad {BROAD}", f"{base}?search={BROAD}", htmx),
    ]
    for number in (1_000, 10_000):
        if number * queries.DEFAULT_PAGE_SIZE <= repo.item_count:
            cases.append((f"table, page={number:,} (offset)", f"{base}?page={number}", htmx))
            state = queries.TableState(page=number - 1)
            last = queries.page(repo, state).rows[-1]
            cursor = queries.cursor_of(last, state.sort)
            cases.append((f"table, page {number:,} by Next (keyset)",
                          f"{base}?page={number}&after={cursor}", htmx))
    cases += [
        ("api, images", api, {}),
        ("api, sort -last_pulled tagged", f"{api}?sort=-last_pulled&filter=tagged", {}),
        (f"api, search broad {BROAD}", f"{api}?search={BROAD}", {}),
    ]
    return repo, cases


def bench_table():
    from django.contrib.auth import get_user_model

    from hubmgr.inventory.catalog import queries

    started = time.perf_counter()
    build_inventory(MANIFESTS)
    print(f"built an inventory of {MANIFESTS:,} manifests in "
          f"{time.perf_counter() - started:.1f} s")
    user = get_user_model().objects.create_user("bench", password="bench-pass-1")
    settings.ALLOWED_HOSTS.append("testserver")
    client = Client()
    client.force_login(user)
    htmx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "image-table"}
    repo, cases = table_cases(client, "/repositories/bench/big",
                              "/api/v1/repositories/bench/big/images", htmx)
    matched = queries.items(repo, queries.TableState(search=BROAD)).count()
    print(f"search {BROAD!r} matches {matched:,} of {repo.item_count:,} items "
          f"({100 * matched / max(1, repo.item_count):.1f}%)")
    record("table", "broad search matches", term=BROAD, matched=matched,
           items=repo.item_count)
    print(f"\nServer time per request, {REQUESTS} requests each, {MANIFESTS:,} manifests, "
          f"{connection.vendor}:")
    measure_cases("table", client, cases, width=36)
