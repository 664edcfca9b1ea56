"""The read API: auth by session or personal token, the images listing and its errors; the
deletion bodies' checks."""

import json

import pytest
from django.core.management import CommandError, call_command

from hubmgr.web.models import ApiToken

from tests.support.factories import digest, observe_pulls, sample_repo
from tests.support.helpers import bearer

pytestmark = pytest.mark.django_db


def test_create_api_token_prints_a_token_and_stores_only_its_hash(user, capsys):
    call_command("create_api_token", user.username)
    token = capsys.readouterr().out.strip()
    assert token.startswith("hubmgr_") and len(token) > 40
    stored = ApiToken.objects.get(user=user)
    assert token not in (stored.key_hash, stored.hint)


def test_create_api_token_for_an_unknown_user():
    with pytest.raises(CommandError, match="No user 'ghost'"):
        call_command("create_api_token", "ghost")


@pytest.mark.parametrize("headers", [{}, bearer("hubmgr_wrong"), {"HTTP_AUTHORIZATION": "Basic x"}])
def test_the_api_refuses_anonymous_and_wrong_tokens(client, headers):
    resp = client.get("/api/v1/repositories", **headers)
    assert resp.status_code == 401 and "error" in resp.json()


def test_a_token_of_an_inactive_user_is_refused(client, token, user):
    user.is_active = False
    user.save()
    assert client.get("/api/v1/repositories", **bearer(token)).status_code == 401


def test_repositories_by_token(client, token):
    sample_repo()
    body = client.get("/api/v1/repositories", **bearer(token)).json()
    assert body["count"] == 1
    assert body["results"][0]["name"] == "team/app" and body["results"][0]["items"] == 5
    assert ApiToken.objects.get().last_used_at is not None


def test_images_by_session_with_the_documented_shape(logged_in):
    since = observe_pulls(400).pulls_observed_since
    repo, index, images, loose = sample_repo()
    body = logged_in.get("/api/v1/repositories/team/app/images").json()
    assert body["count"] == 5 and body["pull_data_since"] == since.isoformat()
    first = body["results"][0]
    assert set(first) >= {"digest", "media_type", "type", "tags", "platform", "size",
                          "last_pushed", "last_pushed_source", "last_pulled", "stale",
                          "never_pulled", "pull_data_since", "children"}
    assert first["digest"] == index.digest and first["type"] == "index"
    assert first["tags"] == ["2.0", "latest"] and first["last_pushed_source"] == "push_event"
    assert [c["platform"] for c in first["children"]] == ["linux/amd64", "linux/arm64"]
    assert body["results"][-1]["digest"] == loose.digest
    assert body["results"][-1]["stale"] is True


def test_images_filter_sort_and_page(client, token):
    sample_repo()
    url = "/api/v1/repositories/team/app/images?filter=image&sort=-size&page_size=2&page=2"
    body = client.get(url, **bearer(token)).json()
    assert body["count"] == 4 and body["pages"] == 2
    assert [r["digest"] for r in body["results"]] == [digest("img0"), digest("loose")]


@pytest.mark.parametrize("query", ["filter=everything", "sort=name"])
def test_unknown_filter_or_sort_is_a_400(logged_in, query):
    sample_repo()
    resp = logged_in.get(f"/api/v1/repositories/team/app/images?{query}")
    assert resp.status_code == 400 and "must be one of" in resp.json()["error"]


def test_an_unknown_repository_is_a_json_404(logged_in):
    resp = logged_in.get("/api/v1/repositories/no/such/images")
    assert resp.status_code == 404 and "no repository 'no/such'" in resp.json()["error"]


def test_post_is_not_allowed(logged_in):
    assert logged_in.post("/api/v1/repositories").status_code == 405


# ---- deletion bodies (issue 20, finding 5) ----------------------------------------------------
PREVIEW = "/api/v1/repositories/team/app/deletions/preview"
START = "/api/v1/repositories/team/app/deletions"


def post_raw(client, url, raw):
    return client.post(url, raw, content_type="application/json")


@pytest.mark.parametrize("url", [PREVIEW, START])
@pytest.mark.parametrize("raw, words", [
    ('{"digests": [null]}', '"digests": holds None, which is not a digest'),
    (f'{{"digests": ["{digest("loose")}", null]}}', '"digests": holds None'),
    ('{"digests": [["x"]]}', '"digests": holds a list, which is not a digest'),
    ('{"digests": [NaN]}', '"digests": holds nan'),
    ('{"digests": ["sha256:\\u0000"]}', '"digests" holds a NUL character'),
    ('{"digests": ["\\ud800"]}', '"digests" holds a NUL character or a lone surrogate'),
    ('{"digests": {}}', '"digests": must be a non-empty list of digests'),
])
def test_every_digest_must_be_a_digest_string(maint, url, raw, words):
    from hubmgr.deletion.models import DeletionJob, DeletionPreview

    sample_repo()
    resp = post_raw(maint, url, raw)
    assert resp.status_code == 400 and words in resp.json()["error"], resp.json()
    assert not DeletionPreview.objects.exists() and not DeletionJob.objects.exists()


@pytest.mark.parametrize("raw, words", [
    ('{"preview_id": 5}', '"preview_id": must be a string, not 5'),
    ('{"preview_id": null}', '"preview_id": must be a string'),
    ('{"preview_id": ["a"]}', '"preview_id": must be a string, not a list'),
    ('{"preview_id": "\\u0000"}', '"preview_id" holds a NUL character'),
    ('{}', 'send {"preview_id": "..."} or {"digests": [...]}, one of them'),
    (f'{{"preview_id": "x", "digests": ["{digest("loose")}"]}}', "one of them"),
    ('{"preview": "x"}', 'unknown field "preview"; the fields are: preview_id, digests'),
])
def test_a_deletion_start_body_is_a_preview_id_string_or_digests(maint, raw, words):
    from hubmgr.deletion.models import DeletionJob

    sample_repo()
    resp = post_raw(maint, START, raw)
    assert resp.status_code == 400 and words in resp.json()["error"], resp.json()
    assert not DeletionJob.objects.exists()


def test_repeated_digests_are_planned_once(maint):
    sample_repo()
    body = json.dumps({"digests": [digest("loose"), digest("loose")]})
    resp = post_raw(maint, PREVIEW, body)
    assert resp.status_code == 200 and [i["digest"] for i in resp.json()["items"]] == [
        digest("loose")]
