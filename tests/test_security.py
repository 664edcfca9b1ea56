"""Hostile input, CSRF, body limits, login throttling, CSP, TLS settings, reads behind a writer."""

from urllib.parse import urlencode

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings as hypothesis_settings
from hypothesis import strategies as st

from .factories import digest, sample_repo

HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "image-table"}

# Any text a URL can carry: NUL and other control characters, up to U+10FFFF (a query string
# cannot carry a lone surrogate: it arrives as U+FFFD), and numbers too large for any column.
hostile_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
hostile_value = st.one_of(hostile_text, st.integers().map(str),
                          st.integers(min_value=10**18, max_value=10**4000).map(str))
TABLE_PARAMS = ("search", "q", "filter", "sort", "page", "page_size")
hostile_params = st.dictionaries(st.sampled_from(TABLE_PARAMS), hostile_value, min_size=1)
FUZZ = hypothesis_settings(max_examples=60, deadline=None,
                           suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                  HealthCheck.too_slow])


@pytest.fixture
def table(db, logged_in, user):
    sample_repo()
    return logged_in


@FUZZ
@given(params=hostile_params)
@example(params={"search": "latest\U0010ffff"})
@example(params={"search": "\U0010ffff"})
@example(params={"search": "a\x00b"})
@example(params={"search": "sha256:\x00", "page": "9" * 5000, "page_size": "-1"})
@example(params={"q": "\x00", "filter": "\x00", "sort": "\x00"})
def test_no_query_parameter_of_the_table_makes_a_server_error(table, params):
    query = urlencode(params)
    page = table.get(f"/repositories/team/app?{query}")
    partial = table.get(f"/repositories/team/app?{query}", **HTMX)
    api = table.get(f"/api/v1/repositories/team/app/images?{query}")
    assert page.status_code == 200 and partial.status_code == 200
    assert api.status_code in (200, 400), api.content
    if api.status_code == 400:
        assert "must be one of" in api.json()["error"]


@FUZZ
@given(value=hostile_value)
@example(value="\x00")
@example(value="9" * 5000)
def test_no_value_of_the_other_get_parameters_makes_a_server_error(table, value):
    from hubmgr.deletion.models import DeletionJob
    from hubmgr.inventory.models import Repository

    job = DeletionJob.objects.first() or DeletionJob.objects.create(
        repository=Repository.objects.get(name="team/app"), repository_name="team/app",
        deadline=timezone.now())
    assert table.get(f"/jobs/{job.pk}/progress?{urlencode({'seen': value})}").status_code == 200
    assert table.get(f"/login/?{urlencode({'next': value})}").status_code == 200


@pytest.mark.parametrize("path", [
    "/repositories/team/app%00x",
    "/repositories/team/app/-/children/sha256:%00",
    "/api/v1/repositories/team%00/images",
])
def test_a_name_or_digest_with_nul_in_the_path_is_a_404(table, path):
    assert table.get(path).status_code == 404


def test_a_search_ending_in_the_last_code_point_still_finds_tags(table):
    from hubmgr.inventory.models import Tag

    Tag.objects.filter(name="1.1").update(name="1.1\U0010ffff")
    body = table.get("/api/v1/repositories/team/app/images?search=1.1%F4%8F%BF%BF").json()
    assert [r["digest"] for r in body["results"]] == [digest("img1")]
