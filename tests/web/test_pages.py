"""The repositories page and the Image Management table, rendered by Django."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hubmgr import devstack

from tests.support.factories import digest, make_image, make_repo, observe_pulls, sample_repo

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "image-table"}


def rows(html):
    """The top-level rows of the table, as the digests they carry, in order."""
    return re.findall(r'<tbody class="item" data-digest="([^"]+)"', html)


@pytest.mark.parametrize("url", ["/repositories/", "/repositories/team/app"])
def test_pages_need_a_login(client, url):
    resp = client.get(url)
    assert resp.status_code == 302 and resp.url.startswith("/login/")


def test_the_repositories_page_lists_counts_and_sizes(logged_in):
    sample_repo()
    html = logged_in.get("/repositories/").content.decode()
    assert 'href="/repositories/team/app"' in html
    # 1 index + 3 tagged images + 1 untagged; children are not items of their own.
    assert '<td class="num" data-label="Items">5</td>' in html
    assert "No registry is configured" in html


def test_the_table_lists_items_newest_push_first(logged_in):
    repo, index, images, loose = sample_repo()
    html = logged_in.get("/repositories/team/app").content.decode()
    assert rows(html) == [index.digest] + [i.digest for i in images] + [loose.digest]
    assert "Image index" in html and "linux/amd64, linux/arm64" in html
    assert "<span id=\"table-summary\">5 items</span>" in html


def test_a_viewer_sees_no_checkboxes_and_a_note_that_they_may_browse(logged_in):
    repo, index, *_ = sample_repo()
    html = logged_in.get("/repositories/team/app").content.decode()
    assert len(rows(html)) == 5
    assert 'type="checkbox"' not in html and 'id="preview-delete"' not in html
    assert "You can browse this repository but not delete from it" in html
    children = logged_in.get(f"/repositories/team/app/-/children/{index.digest}").content
    assert b'class="check"' not in children and b"linux/arm64" in children


def test_a_maintainer_selects_with_checkboxes(maint):
    sample_repo()
    html = maint.get("/repositories/team/app").content.decode()
    assert html.count('class="select-item"') == 5 and 'id="select-page"' in html
    assert 'id="preview-delete" class="danger" disabled' in html
    assert "not delete from it" not in html


def test_each_row_offers_its_pull_commands_by_tag_and_by_digest(logged_in, settings):
    repo, index, images, loose = sample_repo()
    settings.REGISTRY_URL = "https://registry.example.com:5443/"
    html = logged_in.get("/repositories/team/app").content.decode()
    by_tag = "docker pull registry.example.com:5443/team/app:1.1"
    by_digest = f"docker pull registry.example.com:5443/team/app@{loose.digest}"
    assert f'data-copy="{by_tag}"' in html and f'value="{by_tag}"' in html
    assert f'data-copy="{by_digest}"' in html
    assert ":None" not in html  # an untagged row offers the digest only
    settings.REGISTRY_PUBLIC_HOST = "hub.example.org"
    html = logged_in.get(f"/repositories/team/app/-/children/{index.digest}").content.decode()
    assert f'data-copy="docker pull hub.example.org/team/app@{digest("arm")}"' in html


@pytest.mark.parametrize("url, host", [
    ("http://127.0.0.1:5000", "127.0.0.1:5000"), ("https://r.example.com", "r.example.com"),
    ("http://r.example.com:80/", "r.example.com"), ("http://[::1]:5000", "[::1]:5000"),
    ("http://bad:port", ""), ("", ""),
])
def test_the_pull_host_is_the_registry_urls_host_and_port(settings, db, url, host):
    from hubmgr.web.present import pull_ref

    repo = make_repo("a/b")
    repo.registry.url = url
    assert pull_ref(repo) == (f"{host}/a/b" if host else "a/b")
    settings.REGISTRY_PUBLIC_HOST = "https://hub.example.org:8443"
    assert pull_ref(repo) == "hub.example.org:8443/a/b"


def test_the_pager_offers_page_sizes_a_jump_and_counts_in_words(logged_in):
    repo = make_repo("pages/app")
    for n in range(30):
        make_image(repo, f"p{n}", tags=[f"t{n}"])
    from hubmgr.inventory.catalog.store import refresh
    refresh(repo)
    html = logged_in.get("/repositories/pages/app?page_size=25&sort=size").content.decode()
    assert "1–25 of 30 items" in html and "Page 1 of 2" in html
    sizes = re.findall(r'<option value="(\d+)"( selected)?>', html)
    assert sizes == [("25", " selected"), ("50", ""), ("100", ""), ("200", "")]
    assert 'id="jump-page" name="page" min="1" max="2"' in html
    # The jump form and the search keep the page size and the sort.
    assert '<input type="hidden" name="page_size" value="25">' in html
    assert 'id="table-page-size" name="page_size" value="25"' in html
    assert len(rows(logged_in.get("/repositories/pages/app?page_size=25&page=2").content
                    .decode())) == 5
    # One page: no "1–30 of"; a size over the bound is bounded.
    html = logged_in.get("/repositories/pages/app?page_size=100000").content.decode()
    assert "<span id=\"table-summary\">30 items</span>" in html and "jump-page" not in html
    assert len(rows(html)) == 30
    html = logged_in.get("/repositories/pages/app?search=t29").content.decode()
    assert "<span id=\"table-summary\">1 item</span>" in html


def test_sortable_columns_show_it_before_any_click(logged_in):
    sample_repo()
    html = logged_in.get("/repositories/team/app").content.decode()
    assert html.count('<span class="sort-icon unsorted" aria-hidden="true">↕</span>') == 2
    assert '<span class="sort-icon" aria-hidden="true">↓</span>' in html  # last pushed


def test_stale_marks_items_not_pulled_for_six_months(logged_in):
    observe_pulls(400)
    repo = make_repo("stale/app")
    make_image(repo, "fresh", tags=["fresh"], pushed=400, pulled=3)
    make_image(repo, "old", tags=["old"], pushed=400, pulled=200)
    make_image(repo, "never-new", tags=["never-new"], pushed=5)
    make_image(repo, "never-old", tags=["never-old"], pushed=190)
    from hubmgr.inventory.catalog.store import refresh
    refresh(repo)
    html = logged_in.get("/repositories/stale/app?sort=size").content.decode()
    stale = {m.group(1) for m in re.finditer(
        r'<span class="tag">([^<]+)</span>.*?badge (stale|active)', html, re.S)
        if m.group(2) == "stale"}
    assert stale == {"old", "never-old"}


def test_htmx_swaps_only_the_table(logged_in):
    sample_repo()
    resp = logged_in.get("/repositories/team/app?filter=untagged", **HTMX)
    html = resp.content.decode()
    assert html.lstrip().startswith('<div id="image-table"')
    assert "<html" not in html and len(rows(html)) == 1


@pytest.mark.parametrize("query, expected", [
    ("filter=tagged", ["idx", "img0", "img1", "img2"]),
    ("filter=untagged", ["loose"]),
    ("filter=index", ["idx"]),
    ("filter=image", ["img0", "img1", "img2", "loose"]),
    ("search=1.1", ["img1"]),
    ("search=LATEST", ["idx"]),
    (f"search={digest('loose')[7:15]}", ["loose"]),
    (f"search={digest('loose')[:20]}", ["loose"]),
    ("search=nothing-like-this", []),
    ("sort=size", ["loose", "img0", "img1", "img2", "idx"]),
    ("sort=-size", ["idx", "img2", "img1", "img0", "loose"]),
    ("sort=-last_pulled", ["idx", "img1", "img2", "loose", "img0"]),
    ("sort=last_pulled", ["img0", "loose", "img2", "img1", "idx"]),
    ("sort=last_pushed", ["loose", "img2", "img1", "img0", "idx"]),
    ("filter=image&sort=-size&page_size=2&page=2", ["img0", "loose"]),
    ("filter=bogus&sort=bogus&page=x", ["idx", "img0", "img1", "img2", "loose"]),
])
def test_search_filter_sort_and_page(logged_in, query, expected):
    sample_repo()
    html = logged_in.get(f"/repositories/team/app?{query}", **HTMX).content.decode()
    assert rows(html) == [digest(seed) for seed in expected]


def test_the_sort_header_reverses_on_a_second_click(logged_in):
    sample_repo()
    html = logged_in.get("/repositories/team/app?sort=-size&filter=image").content.decode()
    assert 'aria-sort="descending"' in html
    assert 'href="?sort=size&amp;filter=image"' in html  # next click: ascending, same filter


def test_no_match_says_so_and_offers_to_clear(logged_in):
    sample_repo()
    html = logged_in.get("/repositories/team/app?search=zzz", **HTMX).content.decode()
    assert "No items match “zzz”" in html and "Clear the search" in html
    html = logged_in.get("/repositories/team/app?search=zzz&filter=index", **HTMX).content
    assert "No items match “zzz” with the filter “Image index”" in html.decode()


def test_an_empty_repository_says_what_to_do(logged_in):
    make_repo("empty/app")
    html = logged_in.get("/repositories/empty/app").content.decode()
    assert "has no images yet" in html


def test_an_index_expands_to_its_children(logged_in):
    repo, index, *_ = sample_repo()
    resp = logged_in.get(f"/repositories/team/app/-/children/{index.digest}")
    html = resp.content.decode()
    assert html.lstrip().startswith(f'<tbody id="children-{index.id}"')
    assert digest("amd")[7:19] in html and "linux/arm64" in html


def test_an_unknown_repository_is_a_404_that_says_so(logged_in):
    resp = logged_in.get("/repositories/no/such/repo")
    assert resp.status_code == 404
    assert "There is no repository" in resp.content.decode()


def test_a_post_is_not_allowed(logged_in):
    sample_repo()
    assert logged_in.post("/repositories/team/app").status_code == 405


def test_a_registry_that_is_down_shows_a_banner_not_an_error(logged_in, settings):
    settings.REGISTRY_URL = f"http://127.0.0.1:{devstack.free_port()}"
    sample_repo()
    resp = logged_in.get("/repositories/team/app")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert 'class="banner error" role="alert"' in html and "Cannot connect" in html
    assert len(rows(html)) == 5


def test_a_registry_that_refuses_our_credentials_shows_a_banner(logged_in, settings,
                                                               basic_registry):
    settings.REGISTRY_URL = basic_registry.url
    settings.REGISTRY_USERNAME, settings.REGISTRY_PASSWORD = "robot", "wrong"
    sample_repo()
    html = logged_in.get("/repositories/").content.decode()
    assert "refused hubmgr&#x27;s credentials" in html and "HUBMGR_REGISTRY_PASSWORD" in html


def test_repository_names_with_slashes(logged_in):
    repo = make_repo("org/team/deep/app")
    make_image(repo, "deep", tags=["v1"])
    from hubmgr.inventory.catalog.store import refresh
    refresh(repo)
    assert len(rows(logged_in.get("/repositories/org/team/deep/app").content.decode())) == 1


def test_the_query_count_does_not_grow_with_the_page_or_the_repository(logged_in):
    def queries(n, page_size):
        repo = make_repo(f"q/app{n}")
        for i in range(n):
            make_image(repo, f"q{n}-{i}", tags=[f"t{i}"])
        from hubmgr.inventory.catalog.store import refresh
        refresh(repo)
        logged_in.get(f"/repositories/q/app{n}", **HTMX)  # warm the session
        with CaptureQueriesContext(connection) as ctx:
            logged_in.get(f"/repositories/q/app{n}?page_size={page_size}", **HTMX)
        return len(ctx.captured_queries)

    assert queries(3, 25) == queries(60, 50)
