"""The repositories page and API: search, sort and paging on the server, in a fixed number of
queries whatever the number of repositories."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hubmgr.inventory.catalog import listing
from hubmgr.inventory.catalog.store import note_activity, refresh_counts
from hubmgr.inventory.models import Repository
from hubmgr.inventory.registries import default_registry
from hubmgr.inventory.storage import snapshots

from tests.support.factories import make_image, make_repo, many, observe_pulls

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "repo-table"}


def names(client, query="", **headers):
    return client.get(f"/api/v1/repositories?{query}", **headers).json()


def test_search_sort_and_page_through_the_api(logged_in):
    many(120)
    body = names(logged_in, "search=TEAM3/&sort=-size&page_size=7&page=2")
    expected = Repository.objects.filter(name__startswith="team3/").order_by("-total_size",
                                                                             "-name")
    assert body["count"] == expected.count() == 17
    assert body["pages"] == 3 and body["page"] == 2
    assert [r["name"] for r in body["results"]] == [r.name for r in expected[7:14]]
    first = body["results"][0]
    assert set(first) == {"name", "items", "tagged", "indexes", "orphaned", "size", "last_pushed",
                          "last_pulled", "last_synced"}


@pytest.mark.parametrize("sort,key", [
    ("name", lambda r: r.name), ("items", lambda r: (r.item_count, r.name)),
    ("size", lambda r: (r.total_size, r.name)),
])
def test_every_sort_in_both_directions(logged_in, sort, key):
    many(60)
    rows = list(Repository.objects.all())
    for prefix, reverse in (("", False), ("-", True)):
        body = names(logged_in, f"sort={prefix}{sort}&page_size=1000")
        assert [r["name"] for r in body["results"]] == \
            [r.name for r in sorted(rows, key=key, reverse=reverse)]


def test_last_pushed_sorts_never_pushed_last_when_descending(logged_in):
    many(40)
    newest_first = [r["name"] for r in names(logged_in, "sort=-last_pushed&page_size=100")
                    ["results"]]
    oldest_first = [r["name"] for r in names(logged_in, "sort=last_pushed&page_size=100")
                    ["results"]]
    never = {r.name for r in Repository.objects.filter(last_pushed__isnull=True)}
    assert set(newest_first[-len(never):]) == never  # descending: never pushed at the end
    assert set(oldest_first[:len(never)]) == never  # ascending: at the start
    pushed = {r.name: r.last_pushed for r in Repository.objects.exclude(last_pushed=None)}
    times = [pushed[n] for n in newest_first if n in pushed]
    assert times == sorted(times, reverse=True)


def test_the_api_refuses_an_unknown_sort(logged_in):
    resp = logged_in.get("/api/v1/repositories?sort=nonsense")
    assert resp.status_code == 400 and "sort must be one of" in resp.json()["error"]


def test_the_page_searches_sorts_and_pages_on_the_server(logged_in):
    many(130)
    html = logged_in.get("/repositories/?sort=-items&page=2").content.decode()
    assert "51–100 of 130 repositories" in html and "Page 2 of 3" in html
    top = Repository.objects.order_by("-item_count", "-name")[50]
    assert html.index(top.name) < html.index("Page 2 of 3")
    swap = logged_in.get("/repositories/?search=app0001", **HTMX).content.decode()
    assert swap.startswith('\n<div id="repo-table"') or swap.lstrip().startswith(
        '<div id="repo-table"')
    assert "<h1>" not in swap and "1 repository" in swap
    empty = logged_in.get("/repositories/?search=nothing-like-this", **HTMX).content.decode()
    assert "No repositories match “nothing-like-this”" in empty


def test_a_bad_page_or_sort_on_the_page_falls_back_to_the_default(logged_in):
    many(3)
    resp = logged_in.get("/repositories/?sort=%00&page=-4&page_size=99999999999999")
    assert resp.status_code == 200 and "1–3 of 3 repositories" in resp.content.decode()


@pytest.mark.parametrize("url,headers", [
    ("/repositories/", {}), ("/repositories/?sort=-last_pushed&page=3", HTMX),
    ("/api/v1/repositories?search=app&sort=-size&page=2", {}),
])
def test_the_query_count_does_not_grow_with_the_number_of_repositories(logged_in, url,
                                                                        headers):
    many(30)
    logged_in.get(url, **headers)  # warm: session and registry rows
    with CaptureQueriesContext(connection) as small:
        assert logged_in.get(url, **headers).status_code == 200
    many_more = Repository.objects.count()
    Repository.objects.all().delete()
    many(many_more * 10)
    with CaptureQueriesContext(connection) as big:
        assert logged_in.get(url, **headers).status_code == 200
    assert len(big.captured_queries) == len(small.captured_queries)


def test_last_push_and_pull_only_move_forward():
    repo = make_repo("team/clock")
    now = timezone.now()
    note_activity(repo, pushed=now - timedelta(hours=1), pulled=now)
    note_activity(repo, pushed=now - timedelta(hours=2), pulled=now - timedelta(days=1))
    repo.refresh_from_db()
    assert repo.last_pushed == now - timedelta(hours=1) and repo.last_pulled == now
    # A sync's recount takes the newest push event and pull of its manifests, never less.
    make_image(repo, "new", pushed=0, pulled=None)
    refresh_counts(repo)
    repo.refresh_from_db()
    assert repo.last_pushed > now - timedelta(minutes=1) and repo.last_pulled == now


def varied(n):
    """n repositories with untagged counts, Stale counts (some unknown) and pull times (some
    never) that differ, and ties broken by name."""
    now = timezone.now()
    Repository.objects.bulk_create([
        Repository(registry=default_registry(), name=f"team{i % 5}/svc{i:03d}",
                   item_count=20, tagged_count=(i * 7) % 21,
                   stale_count=None if i % 6 == 0 else (i * 5) % 9,
                   last_pulled=None if i % 4 == 0 else now - timedelta(hours=(i * 11) % 37))
        for i in range(n)])


def expected_order(sort):
    """The order the page promises, computed in Python: empty values as the least (first
    ascending, last descending), the name breaking ties."""
    field = sort.lstrip("-")
    value = {"untagged": lambda r: r.untagged_count, "stale": lambda r: r.stale_count,
             "last_pulled": lambda r: r.last_pulled}[field]
    rows = list(Repository.objects.all())
    known = sorted((r for r in rows if value(r) is not None), key=lambda r: (value(r), r.name))
    empty = sorted((r for r in rows if value(r) is None), key=lambda r: r.name)
    ordered = empty + known
    return [r.name for r in (ordered[::-1] if sort.startswith("-") else ordered)]


@pytest.mark.parametrize("sort", ["untagged", "-untagged", "stale", "-stale", "last_pulled",
                                  "-last_pulled"])
def test_repositories_sort_by_untagged_stale_and_last_pulled(logged_in, sort):
    varied(48)
    body = names(logged_in, f"sort={sort}&page_size=1000")
    assert [r["name"] for r in body["results"]] == expected_order(sort)
    # The page: the same order, and the column says it is the sort.
    html = logged_in.get(f"/repositories/?sort={sort}&page_size=100", **HTMX).content.decode()
    order = expected_order(sort)
    assert html.index(f">{order[0]}<") < html.index(f">{order[1]}<") < \
        html.index(f">{order[-1]}<")
    aria = "descending" if sort.startswith("-") else "ascending"
    assert re.search(rf'aria-sort="{aria}"><a class="sort" data-sort="{sort.lstrip("-")}"', html)


def test_every_repositories_sort_is_read_off_an_index(logged_in):
    """No sort step in the plan, SQLite or PostgreSQL (the sort would cost a read of every
    repository of the registry)."""
    varied(30)
    registry = default_registry()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # too few rows for the planner's own choice
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_sort = off")
        for sort in listing.SORTS:
            plan = listing.repositories(registry, listing.ListState(sort=sort))[:50].explain()
            assert "TEMP B-TREE" not in plan and "Sort" not in plan, (sort, plan)


def test_a_snapshot_writes_each_repositorys_stale_count(logged_in):
    observe_pulls(400)
    repo = make_repo("team/app")
    make_image(repo, "old", tags=["old"], pushed=300, pulled=250)
    make_image(repo, "fresh", tags=["fresh"], pushed=300, pulled=2)
    refresh_counts(repo)
    empty = make_repo("team/empty")
    assert Repository.objects.get(pk=repo.pk).stale_count is None  # no figures yet
    snapshots.take(default_registry())
    assert Repository.objects.get(pk=repo.pk).stale_count == 1
    assert Repository.objects.get(pk=empty.pk).stale_count == 0
    html = logged_in.get("/repositories/?sort=-stale").content.decode()
    assert html.index(">team/app<") < html.index(">team/empty<")
