"""The table at team scale: a constant number of queries, keyset pages equal to OFFSET pages,
capped search counts, and (on PostgreSQL) plans that read the table's indexes."""

import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hubmgr.inventory.catalog import queries
from hubmgr.inventory.catalog.store import refresh
from hubmgr.inventory.models import Manifest, Repository, Tag

from tests.support.factories import make_repo

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "image-table"}


def inventory(name, n, tagged_every=2):
    """n top-level images with many equal sizes and push times, a third never pulled, every
    ``tagged_every``-th one tagged t{i}; digests are sha256:{i:064x}."""
    repo = make_repo(name)
    now = timezone.now().replace(microsecond=0)
    Manifest.objects.bulk_create([Manifest(
        repository=repo, digest=f"sha256:{i:064x}", kind="image", fetched=True,
        media_type="application/vnd.oci.image.manifest.v1+json", platform="linux/amd64",
        size=1000 * (i % 7), last_pushed=now - timedelta(hours=i % 5),
        last_pushed_source="push_event",
        last_pulled=None if i % 3 == 0 else now - timedelta(days=i % 4)) for i in range(n)])
    ids = dict(Manifest.objects.filter(repository=repo).values_list("digest", "id"))
    Tag.objects.bulk_create([Tag(repository=repo, name=f"t{i}", manifest_id=ids[f"sha256:{i:064x}"])
                             for i in range(0, n, tagged_every)])
    refresh(repo)
    repo.refresh_from_db()
    return repo


def rows(html):
    return re.findall(r'<tbody class="item" data-digest="([^"]+)"', html)


def link(html, rel):
    found = re.search(rf'<a rel="{rel}" href="([^"]+)"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def count_queries(client, url, headers):
    client.get(url, **headers)  # the session and the user, once
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url, **headers).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("kind", ["htmx", "page", "api"])
@pytest.mark.parametrize("query", ["", "sort=-size&filter=tagged", "search=t1"])
def test_the_query_count_does_not_grow_with_the_depth_or_the_size(logged_in, kind, query):
    small, big = inventory("scale/small", 30), inventory("scale/big", 300)
    base = {"htmx": "/repositories/{}", "page": "/repositories/{}",
            "api": "/api/v1/repositories/{}/images"}[kind]
    headers = HTMX if kind == "htmx" else {}
    counts = set()
    for repo in (small, big):
        url = base.format(repo.name) + f"?page_size=10&{query}"
        counts.add(count_queries(logged_in, url, headers))
        counts.add(count_queries(logged_in, f"{url}&page=2", headers))
        counts.add(count_queries(logged_in, f"{url}&page=999999", headers))  # the last page
        # A keyset page: the "next" link of page 2.
        state = queries.TableState.from_params(
            dict(p.split("=") for p in f"page_size=10&page=2&{query}".split("&") if p))
        cursor = queries.page(repo, state).next_cursor
        counts.add(count_queries(logged_in, f"{url}&page=3&after={cursor}", headers))
        counts.add(count_queries(logged_in, f"{url}&page=2&before={cursor}", headers))
    assert len(counts) == 1, counts


def expected_order(repo, sort, search=""):
    """The table's order, computed in Python: descending puts NULL last, ascending first,
    the id breaks ties."""
    field = sort.lstrip("-")
    found = [m for m in Manifest.objects.filter(repository=repo, is_top_level=True)
             if not search or any(search in t for t in m.tags)]
    def key(m):
        return (getattr(m, field) is not None, getattr(m, field) or 0, m.id)

    return [m.digest for m in sorted(found, key=key, reverse=sort.startswith("-"))]


@pytest.mark.parametrize("sort", queries.SORTS)
@pytest.mark.parametrize("size", [1, 4, 7])
def test_next_and_previous_pages_are_the_offset_pages_in_both_directions(sort, size):
    repo = inventory("keyset/app", 40)
    expected = expected_order(repo, sort)
    pages = [expected[i:i + size] for i in range(0, len(expected), size)]
    # OFFSET pages (page=N) are the table's order.
    for number, want in enumerate(pages, 1):
        got = queries.page(repo, queries.TableState(sort=sort, page=number, page_size=size))
        assert [r.digest for r in got.rows] == want
    # Forward by Next cursors, from page 1 to the last page.
    state = queries.TableState(sort=sort, page_size=size)
    walked = []
    while True:
        current = queries.page(repo, state)
        walked.append([r.digest for r in current.rows])
        assert current.number == len(walked)
        if not current.has_next:
            break
        state = queries.TableState(sort=sort, page_size=size, page=current.number + 1,
                                   after=current.next_cursor)
    assert walked == pages
    # Backward by Previous cursors, from the last page to page 1.
    walked = [[r.digest for r in current.rows]]
    while current.has_previous:
        cursor = current.previous_cursor
        state = queries.TableState(sort=sort, page_size=size, page=current.number - 1,
                                   before=cursor)
        if not cursor:  # page 1 is linked without a cursor
            state.page = 1
        current = queries.page(repo, state)
        walked.insert(0, [r.digest for r in current.rows])
    assert walked == pages


@pytest.mark.parametrize("sort", ["-last_pulled", "last_pulled"])
def test_cursors_work_with_a_search_and_a_filter(sort):
    repo = inventory("keyset/search", 60, tagged_every=1)
    expected = expected_order(repo, sort, "t1")
    state = queries.TableState(sort=sort, page_size=4, search="t1", filter="tagged")
    walked = []
    while True:
        current = queries.page(repo, state)
        walked += [r.digest for r in current.rows]
        if not current.has_next:
            break
        state.after, state.page = current.next_cursor, current.number + 1
    assert walked == expected and len(expected) == 11  # t1, t10..t19


def test_the_pager_links_walk_the_whole_table(logged_in):
    repo = inventory("keyset/links", 23)
    url = f"/repositories/{repo.name}?sort=last_pulled&page_size=5"
    seen, pages = [], 0
    while url:
        html = logged_in.get(url if url.startswith("/") else f"/repositories/{repo.name}{url}",
                             **HTMX).content.decode()
        seen += rows(html)
        pages += 1
        assert f"Page {pages} of 5" in html
        url = link(html, "next")
    assert seen == expected_order(repo, "last_pulled") and pages == 5
    assert "after=" in link(html, "prev") or "before=" in link(html, "prev")


def test_the_api_follows_next_links_to_the_end(logged_in):
    repo = inventory("keyset/api", 23)
    url, seen = f"/api/v1/repositories/{repo.name}/images?sort=-size&page_size=4", []
    while url:
        body = logged_in.get(url).json()
        assert body["count"] == 23 and body["count_exact"] is True and body["pages"] == 6
        seen += [r["digest"] for r in body["results"]]
        url = body["next"]
    assert seen == expected_order(repo, "-size") and body["previous"]


def test_a_bad_cursor_is_a_400_in_the_api_and_ignored_by_the_page(logged_in):
    repo = inventory("keyset/bad", 5)
    resp = logged_in.get(f"/api/v1/repositories/{repo.name}/images?after=x_1")
    assert resp.status_code == 400 and "cursor" in resp.json()["error"]
    html = logged_in.get(f"/repositories/{repo.name}?after=x_1", **HTMX).content.decode()
    assert len(rows(html)) == 5


def test_a_cursor_past_the_end_shows_an_empty_page_with_a_way_back(logged_in):
    repo = inventory("keyset/end", 5)
    html = logged_in.get(f"/repositories/{repo.name}?sort=-size&page=4&after=0_0",
                         **HTMX).content.decode()
    assert rows(html) == [] and link(html, "prev") == "?sort=-size&page=3"


def test_a_search_past_the_cap_says_more_than(maint, monkeypatch):
    repo = inventory("cap/app", 30, tagged_every=1)
    monkeypatch.setattr(queries, "COUNT_CAP", 12)
    html = maint.get(f"/repositories/{repo.name}?search=t&page_size=4",
                     **HTMX).content.decode()
    assert "1–4 of more than 12 items" in html and "Page 1 of more than 3" in html
    assert "select-all-matching" not in html and link(html, "next")
    body = maint.get(f"/api/v1/repositories/{repo.name}/images?search=t").json()
    assert body["count"] == 12 and body["count_exact"] is False
    # Under the cap (t2, t20..t29) the count is exact, and all matching can be selected.
    html = maint.get(f"/repositories/{repo.name}?search=t2&page_size=4",
                     **HTMX).content.decode()
    assert "1–4 of 11 items" in html and "Page 1 of 3" in html
    assert "select-all-matching" in html


# -- PostgreSQL plans ----------------------------------------------------------------------

def plan_nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def explain(sql):
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        plan = cursor.fetchone()[0]
    return list(plan_nodes((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]))


def table_queries(repo, state):
    """The SQL statements of one table page, as PostgreSQL received them."""
    with CaptureQueriesContext(connection) as ctx:
        queries.page(repo, state)
    return [q["sql"] for q in ctx.captured_queries]


@pytest.fixture
def big_repo():
    """3,000 rows and fresh statistics: enough that reading 51 rows in the index's order is
    clearly cheaper than reading them all and sorting, so the planner's own choice shows
    whether an index serves the ORDER BY (no enable_seqscan=off, which hides exactly the
    missing index the test is for)."""
    repo = inventory("plan/app", 3000, tagged_every=3)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE inventory_manifest")
        cursor.execute("ANALYZE inventory_tag")
    # As the pages look it up: with its registry (whose observation window marks Stale).
    return Repository.objects.select_related("registry").get(pk=repo.pk)


@pytest.mark.postgres
@pytest.mark.parametrize("sort", queries.SORTS)
@pytest.mark.parametrize("filter", ["", "untagged"])
def test_each_sort_reads_its_index_in_order_without_a_sort(big_repo, sort, filter):
    (sql,) = table_queries(big_repo, queries.TableState(sort=sort, filter=filter))
    nodes = explain(sql)
    scans = [n for n in nodes if n.get("Relation Name") == "inventory_manifest"]
    assert [n["Node Type"] for n in scans] == ["Index Scan"], nodes
    assert scans[0]["Index Name"] == f"m_sort_{sort.lstrip('-').split('_')[-1]}"
    assert scans[0]["Scan Direction"] == ("Backward" if sort.startswith("-") else "Forward")
    assert not [n for n in nodes if n["Node Type"] in ("Sort", "Incremental Sort")], nodes


@pytest.mark.postgres
@pytest.mark.parametrize("sort", ["-last_pushed", "last_pulled"])
def test_keyset_and_deep_pages_read_index_ranges(big_repo, sort):
    """A keyset page's ids are index ranges that start at the cursor (an Index Cond on the
    sort column, not a walk from the first row), page=N skips rows in the index alone (an
    index-only scan), and only the page's candidate rows are ever sorted. At 3,000 rows the
    planner may join those ids to the table by hashing a sequential scan (at a million it
    looks them up by id), and would rather sort the 3,000 rows than skip 2,000 index entries,
    so the OFFSET case is page 3."""
    first = queries.page(big_repo, queries.TableState(sort=sort, page=20))
    column = sort.lstrip("-")
    cases = [(queries.TableState(sort=sort, page=21, after=first.next_cursor), "Index Cond"),
             (queries.TableState(sort=sort, page=19, before=first.previous_cursor), "Index Cond"),
             (queries.TableState(sort=sort, page=3), None)]
    for state, condition in cases:
        (sql,) = table_queries(big_repo, state)
        nodes = explain(sql)
        scans = [n for n in nodes if n.get("Index Name", "").startswith("m_sort_")]
        # Index-only unless the visibility map is behind (autovacuum has not run on the test
        # table yet): then the planner may read the same range as a bitmap. Either way the
        # range starts at the cursor (the Index Cond) and nothing sorts the whole table.
        assert scans and all(n["Node Type"] in ("Index Only Scan", "Bitmap Index Scan")
                             for n in scans), nodes
        if condition:
            assert all(column in n[condition] for n in scans), scans
        for sort_node in (n for n in nodes if n["Node Type"] in ("Sort", "Incremental Sort")):
            assert sort_node["Plan Rows"] <= 3 * 51, nodes


@pytest.mark.postgres
@pytest.mark.parametrize("term, indexes", [("t1236", {"m_tags_trgm"}),
                                           (f"{1234:064x}"[:-1], {"m_digest", "manifest_unique"})])
def test_a_search_reads_the_trigram_and_digest_indexes(big_repo, term, indexes):
    ids_sql, rows_sql = table_queries(big_repo, queries.TableState(search=term))
    nodes = explain(ids_sql)
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], nodes
    assert indexes & {n.get("Index Name") for n in nodes}, nodes
    assert not [n for n in explain(rows_sql) if n["Node Type"] == "Seq Scan"]
