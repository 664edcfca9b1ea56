"""The registry-wide table (/images): every repository's items, filters that combine, sort,
paging, bad input, and its selection endpoints."""

import pytest
from django.db.models import F

from hubmgr.inventory.catalog import wide
from hubmgr.inventory.catalog.store import refresh
from hubmgr.inventory.models import Repository
from hubmgr.inventory.registries import default_registry

from tests.support.factories import (
    digest, make_artifact, make_image, make_index, make_repo, observe_pulls)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    """Three repositories: team/app (tagged amd64 image pulled 2 days ago, untagged arm64
    image never pulled, pushed 400 days ago), team/db (an index over amd64 and arm64 images,
    pulled 300 days ago), tools/ci (a tagged image with a signature)."""
    observe_pulls(500)
    app, db, ci = make_repo("team/app"), make_repo("team/db"), make_repo("tools/ci")
    make_image(app, "app-1", tags=["1.0"], size=3000, pushed=10, pulled=2)
    make_image(app, "app-old", size=9000, pushed=400, platform="linux/arm64")
    kids = [make_image(db, "db-amd", pushed=300), make_image(db, "db-arm", pushed=300,
                                                             platform="linux/arm64")]
    make_index(db, "db-idx", kids, tags=["16"], pushed=300, pulled=300)
    signed = make_image(ci, "ci-1", tags=["latest"], size=500, pushed=1, pulled=1)
    make_artifact(ci, "ci-sig", subject=signed)
    for repo in (app, db, ci):
        refresh(repo)
    return {"app": app, "db": db, "ci": ci}


def rows(client, query=""):
    page = client.get(f"/images/?{query}", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="image-table")
    assert page.status_code == 200, page.content[:500]
    return page.context["page"]


def names(page):
    return [(r.repository_name, r.tags[0] if r.tags else r.digest[:15]) for r in page.rows]


def test_every_repositorys_items_with_the_repository_linked(world, logged_in):
    page = logged_in.get("/images/")
    html = page.content.decode()
    assert page.status_code == 200
    found = page.context["page"]
    assert found.count == 4 and {r.repository_name for r in found.rows} == {
        "team/app", "team/db", "tools/ci"}
    assert '<a href="/repositories/team/db">team/db</a>' in html
    assert 'href="/images/"' in html  # in the navigation


def test_filters_combine(world, logged_in):
    assert names(rows(logged_in, "tagged=untagged")) == [("team/app", digest("app-old")[:15])]
    assert {r for r, _ in names(rows(logged_in, "platform=linux/arm64"))} == {
        "team/app", "team/db"}  # an index lists its children's platforms
    assert names(rows(logged_in, "platform=linux/arm64&tagged=tagged")) == [("team/db", "16")]
    assert names(rows(logged_in, "kind=index")) == [("team/db", "16")]
    assert {n for n in names(rows(logged_in, "status=stale"))} == {
        ("team/app", digest("app-old")[:15]), ("team/db", "16")}
    assert {n for n in names(rows(logged_in, "status=active"))} == {
        ("team/app", "1.0"), ("tools/ci", "latest")}
    unknown = logged_in.get("/images/?status=unknown")  # the window covers the period
    assert unknown.context["page"].count == 0 and "No items match" in unknown.content.decode()
    pushed = rows(logged_in, "pushed_before=" + _date(100))
    assert {n for n in names(pushed)} == {("team/app", digest("app-old")[:15]),
                                          ("team/db", "16")}
    assert names(rows(logged_in, f"pushed_before={_date(100)}&pulled_after={_date(400)}")) == [
        ("team/db", "16")]
    assert names(rows(logged_in, f"pulled_before={_date(100)}")) == [("team/db", "16")]
    assert {n for n in names(rows(logged_in, f"pushed_after={_date(20)}"))} == {
        ("team/app", "1.0"), ("tools/ci", "latest")}
    assert names(rows(logged_in, "search=late")) == [("tools/ci", "latest")]


def _date(days):
    from tests.support.factories import days_ago

    return days_ago(days).date().isoformat()


@pytest.mark.parametrize("sort,first", [("size", "tools/ci"), ("-size", "team/app"),
                                        ("-last_pushed", "tools/ci"),
                                        ("last_pulled", "team/app")])
def test_every_sort(world, logged_in, sort, first):
    assert rows(logged_in, f"sort={sort}").rows[0].repository_name == first


def test_pages_by_cursor_across_repositories(world, logged_in):
    first = rows(logged_in, "page_size=25&sort=size")
    assert first.count == 4
    everything = [r.id for r in first.rows]
    seen = []
    page = rows(logged_in, "sort=size&page_size=1")
    while True:
        seen += [r.id for r in page.rows]
        if not page.has_next:
            break
        page = rows(logged_in, f"sort=size&page_size=1&page={page.number + 1}"
                               f"&after={page.next_cursor}")
    assert seen == everything


@pytest.mark.parametrize("query,says", [
    ("pushed_before=2026-13-01", "pushed before must be a date as YYYY-MM-DD"),
    ("pulled_after=yesterday", "pulled after must be a date as YYYY-MM-DD"),
    ("kind=helm", "kind must be one of index, image, artifact"),
    ("platform=%3Cscript%3E", "platform must look like linux/amd64"),
])
def test_bad_input_says_what_and_is_left_out(world, logged_in, query, says):
    page = logged_in.get(f"/images/?{query}")
    assert page.status_code == 400
    assert says.lower() in page.content.decode().lower()
    assert page.context["page"].count == 4  # the bad filter is left out, not a 500


def test_the_filters_stay_in_the_pagers_links(world, logged_in):
    html = logged_in.get("/images/?tagged=tagged&page_size=1&platform=linux/amd64").content \
        .decode()
    assert "tagged=tagged" in html and 'name="platform" value="linux/amd64"' in html


def test_selection_says_what_is_gone(world, logged_in):
    answer = logged_in.post("/images/-/selection", {"digest": [
        f"team/app@{digest('app-1')}", f"team/app@{digest('nope')}", "bad"]}).json()
    assert answer == {"gone": [f"team/app@{digest('nope')}"]}


def test_the_version_moves_with_any_repository(world, logged_in):
    before = logged_in.get("/images/-/version").json()["version"]
    etag = logged_in.get("/images/-/version")["ETag"]
    assert logged_in.get("/images/-/version", HTTP_IF_NONE_MATCH=etag).status_code == 304
    Repository.objects.filter(pk=world["db"].pk).update(version=F("version") + 1)
    assert logged_in.get("/images/-/version").json()["version"] == before + 1


def test_select_all_matching_names_every_match_in_every_repository(world):
    state = wide.WideState.from_params({"platform": "linux/arm64"})
    assert sorted(wide.selection(default_registry(), state, 10)) == sorted([
        ("team/app", digest("app-old")), ("team/db", digest("db-idx"))])


def test_viewers_cannot_preview(world, logged_in):
    answer = logged_in.post("/images/-/preview", {"digest": [f"team/app@{digest('app-1')}"]})
    assert answer.status_code == 403


def test_the_api_lists_filters_and_refuses_a_bad_date(world, client, token):
    from tests.support.helpers import bearer

    answer = client.get("/api/v1/images?tagged=tagged&sort=size", **bearer(token)).json()
    assert [(r["repository"], r["tags"]) for r in answer["results"]] == [
        ("tools/ci", ["latest"]), ("team/db", ["16"]), ("team/app", ["1.0"])]
    assert answer["count"] == 3 and answer["count_exact"] is True
    bad = client.get("/api/v1/images?pulled_before=12/01/2026", **bearer(token))
    assert bad.status_code == 400 and "pulled before must be a date" in bad.json()["error"]


def test_the_api_previews_across_repositories_and_starts_a_job_each(world, client,
                                                                   maintainer_token):
    from hubmgr.deletion.models import DeletionJob
    from tests.support.helpers import bearer

    items = [f"team/app@{digest('app-old')}", f"team/db@{digest('db-idx')}"]
    shown = client.post("/api/v1/deletions/preview", {"items": items},
                        content_type="application/json", **bearer(maintainer_token)).json()
    assert [p["repository"] for p in shown["previews"]] == ["team/app", "team/db"]
    assert {i["digest"] for p in shown["previews"] for i in p["items"]} == {
        digest("app-old"), digest("db-idx"), digest("db-amd"), digest("db-arm")}
    assert shown["reclaim_bytes"] >= sum(p["reclaim_bytes"] for p in shown["previews"])
    bad = client.post("/api/v1/deletions/preview", {"items": ["team/app:latest"]},
                      content_type="application/json", **bearer(maintainer_token))
    assert bad.status_code == 400 and "repository@digest" in bad.json()["error"]
    ids = [p["preview_id"] for p in shown["previews"]]
    started = client.post("/api/v1/deletions", {"preview_ids": ids},
                          content_type="application/json", **bearer(maintainer_token))
    assert started.status_code == 202
    assert [j["repository"] for j in started.json()["jobs"]] == ["team/app", "team/db"]
    assert DeletionJob.objects.count() == 2
    again = client.post("/api/v1/deletions", {"preview_ids": ids},
                        content_type="application/json", **bearer(maintainer_token))
    assert again.status_code == 409 and DeletionJob.objects.count() == 2


def test_a_filtered_count_stops_at_the_cap_and_all_matching_is_still_offered(
        world, maint, monkeypatch):
    from hubmgr.inventory.catalog import queries

    monkeypatch.setattr(queries, "COUNT_CAP", 2)
    page = maint.get("/images/?tagged=tagged&page_size=1")
    found = page.context["page"]
    assert (found.count, found.count_exact) == (2, False)
    html = page.content.decode()
    assert "of more than 2 items" in html
    assert 'data-more="1">Select all matching (more than 2)</button>' in html
    state = wide.WideState.from_params({"tagged": "tagged"})
    assert len(wide.selection(default_registry(), state, 10)) == 3  # what the preview takes
    everything = maint.get("/images/?page_size=1").context["page"]  # the counters: exact
    assert (everything.count, everything.count_exact) == (4, True)


def _wide_inventory(repos=3, per=1000):
    """``repos`` repositories of ``per`` top-level images each (one in fifty never pulled, the
    rest pulled within four days, none Stale), and fresh statistics."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from hubmgr.inventory.models import Manifest

    now = timezone.now()
    for r in range(repos):
        repo = make_repo(f"scale/app{r}")
        Manifest.objects.bulk_create([Manifest(
            repository=repo, digest=f"sha256:{r:04x}{i:060x}", kind="image", fetched=True,
            platform="linux/amd64", size=1000 * (i % 7), last_pushed_source="push_event",
            last_pushed=now - timedelta(hours=i % 50),
            last_pulled=None if i % 50 == 0 else now - timedelta(days=i % 4))
            for i in range(per)])
        refresh(repo)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE inventory_manifest")


def _plan(sql):
    import json

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        plan = cursor.fetchone()[0]
    nodes, stack = [], [(json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", []))
    return nodes


def _statements(state):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        wide.page(default_registry(), state)
    return [q["sql"] for q in ctx.captured_queries if "inventory_manifest" in q["sql"]]


@pytest.mark.postgres
@pytest.mark.parametrize("sort", ["size", "-size", "last_pushed", "-last_pushed",
                                  "last_pulled", "-last_pulled"])
def test_each_registry_wide_sort_reads_its_index_in_order(sort):
    """Every repository's rows in one order: the registry-wide index of that column, read
    forward or backward, with no sort of the rows (migration 0017)."""
    _wide_inventory()
    rows_sql = _statements(wide.WideState(sort=sort))[0]
    nodes = _plan(rows_sql)
    scans = [n for n in nodes if n.get("Relation Name") == "inventory_manifest"]
    column = sort.lstrip("-").split("_")[-1]
    assert [n.get("Index Name") for n in scans] == [f"m_wide_{column}"], nodes
    assert scans[0]["Scan Direction"] == ("Backward" if sort.startswith("-") else "Forward")
    assert not [n for n in nodes if n["Node Type"] in ("Sort", "Incremental Sort")], nodes


@pytest.mark.postgres
def test_the_stale_filter_reads_two_ranges_of_the_pulled_index():
    """Never pulled, then pulled before the cutoff: each an Index Cond on last_pulled (an OR
    of the two read every row when few matched)."""
    observe_pulls(500)  # (so that Stale is decided)
    _wide_inventory()
    first, second = _statements(wide.WideState(status="stale"))[:2]
    for sql, condition in ((first, "IS NULL"), (second, "last_pulled <")):
        nodes = _plan(sql)
        # Index-only, or a bitmap while the test table's visibility map is behind.
        scans = [n for n in nodes if "Index Name" in n]
        assert {n["Index Name"] for n in scans} == {"m_wide_pulled"}, nodes
        assert any(condition in n.get("Index Cond", "") for n in scans), scans
        assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], nodes


def test_the_pager_and_header_are_the_repository_tables_with_the_repository_column(
        world, logged_in):
    html = logged_in.get("/images/?tagged=tagged&page_size=1").content.decode()
    assert '<th scope="col" class="col-repo">Repository</th>' in html
    jump = html[html.index('<form class="jump"'):]
    jump = jump[:jump.index("</form>")]
    assert 'action="/images/"' in jump and 'name="tagged" value="tagged"' in jump
    table = logged_in.get("/repositories/team/app?page_size=1").content.decode()
    assert "col-repo" not in table and 'action="/repositories/team/app"' in table


@pytest.mark.parametrize("wide_table,columns", [(True, 8), (False, 7)])
def test_an_item_with_nothing_below_spans_every_column(world, logged_in, wide_table, columns):
    """The registry-wide table has one column more (Repository)."""
    url = f"/repositories/team/app/-/children/{digest('app-1')}" + ("?wide=1" if wide_table
                                                                     else "")
    html = logged_in.get(url).content.decode()
    assert f'<td colspan="{columns}" class="empty">Nothing is listed below' in html
