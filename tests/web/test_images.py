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
