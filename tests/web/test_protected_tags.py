"""Protected tags over HTTP: the page and the API, who may change the rules, the audit,
validation, and the lock in the image table."""

import json

import pytest
from django.contrib.auth.models import Permission

from hubmgr.deletion.models import DeletionJob, ProtectedTag, ProtectionAudit

from tests.support.factories import sample_repo

pytestmark = pytest.mark.django_db

URL = "/api/v1/protected-tags"


@pytest.fixture
def admin(django_user_model, client):
    """An administrator: the permission of its own (not a superuser, nor a maintainer)."""
    user = django_user_model.objects.create_user("ada", password="pw-ada-12345")
    user.user_permissions.add(Permission.objects.get(codename="manage_protected_tags"))
    client.force_login(user)
    return client


def post(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def test_only_an_administrator_changes_the_rules(maint):
    assert maint.get(URL).json() == {"count": 0, "results": []}
    refused = post(maint, URL, {"tag_regex": "^latest$"})
    assert refused.status_code == 403 and "administrators" in refused.json()["error"]
    page = maint.post("/protected-tags/", {"tag_regex": "^latest$", "repositories": "**"})
    assert page.status_code == 403
    assert not ProtectedTag.objects.exists() and not ProtectionAudit.objects.exists()
    html = maint.get("/protected-tags/").content.decode()
    assert "Only administrators change these rules" in html


def test_the_api_adds_changes_and_removes_a_rule_each_audited(admin):
    made = post(admin, URL, {"tag_regex": "^(latest|prod)$", "note": "releases"})
    assert made.status_code == 201, made.content
    rule = made.json()
    assert rule["repositories"] == "**" and rule["created_by"] == "ada"
    changed = admin.patch(rule["url"], json.dumps({"repositories": "team/**"}),
                          content_type="application/json")
    assert changed.status_code == 200 and changed.json()["repositories"] == "team/**"
    assert admin.get(URL).json()["count"] == 1
    assert admin.delete(rule["url"]).status_code == 204
    assert admin.get(rule["url"]).status_code == 404
    assert list(ProtectionAudit.objects.order_by("id").values_list("action", "user__username")) \
        == [("create", "ada"), ("change", "ada"), ("delete", "ada")]


@pytest.mark.parametrize("body, field", [
    ({"tag_regex": "a" * 10_000}, "tag_regex"), ({"tag_regex": "(?<=v)1"}, "tag_regex"),
    ({"tag_regex": "("}, "tag_regex"), ({"repositories": "**"}, "tag_regex"),
    ({"tag_regex": "x", "repositories": 5}, "repositories"),
    ({"tag_regex": "x", "owner": "me"}, "owner")])
def test_an_invalid_rule_is_a_400_naming_the_field(admin, body, field):
    resp = post(admin, URL, body)
    assert resp.status_code == 400 and f'"{field}"' in resp.json()["error"], resp.content
    assert not ProtectedTag.objects.exists()


def test_the_page_adds_a_rule_and_shows_a_bad_one_with_its_error(admin):
    bad = admin.post("/protected-tags/", {"tag_regex": "(a", "repositories": "**"})
    assert bad.status_code == 400 and "not a valid regular expression" in bad.content.decode()
    assert admin.post("/protected-tags/", {"tag_regex": "^latest$",
                                           "repositories": "team/*"}).status_code == 302
    rule = ProtectedTag.objects.get()
    html = admin.get("/protected-tags/").content.decode()
    assert "^latest$" in html and "team/*" in html and "Added" in html
    assert admin.post(f"/protected-tags/{rule.pk}/edit", {
        "tag_regex": "^prod$", "repositories": "team/*"}).status_code == 302
    assert admin.post(f"/protected-tags/{rule.pk}/delete").status_code == 302
    assert ProtectionAudit.objects.count() == 3 and not ProtectedTag.objects.exists()
    assert admin.get("/protected-tags/999/edit").status_code == 404


def test_a_protected_item_has_a_lock_in_the_table_and_so_do_its_images(maint):
    repo, index, images, loose = sample_repo()
    html = maint.get("/repositories/team/app").content.decode()
    assert 'class="lock"' not in html
    ProtectedTag.objects.create(tag_regex="^latest$")
    html = maint.get("/repositories/team/app").content.decode()
    assert html.count('class="lock"') == 1 and "Protected: protected tag latest" in html
    below = maint.get(f"/repositories/team/app/-/children/{index.digest}").content.decode()
    assert below.count('class="lock"') == 2 and "listed by a protected tag latest" in below


def test_a_deletion_of_a_protected_item_keeps_it_and_says_why(maint, maintainer_token, client):
    repo, index, images, loose = sample_repo()
    ProtectedTag.objects.create(tag_regex="^latest$")
    html = maint.post("/repositories/team/app/-/preview",
                      {"digest": [index.digest, loose.digest]}).content.decode()
    assert "protected tag latest" in html
    body = client.post("/api/v1/repositories/team/app/deletions/preview",
                       json.dumps({"digests": [index.digest]}), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {maintainer_token}").json()
    assert body["items"] == [] and body["reclaim_bytes"] == 0
    assert body["kept"][0]["reason"].startswith("protected tag latest")
    assert not DeletionJob.objects.exists()


def test_the_images_api_says_what_is_protected_and_why(maint):
    repo, index, images, loose = sample_repo()
    ProtectedTag.objects.create(tag_regex="^latest$")
    results = maint.get("/api/v1/repositories/team/app/images").json()["results"]
    found = {r["digest"]: r for r in results}
    assert found[index.digest]["protected"].startswith("protected tag latest")
    assert [c["protected"] for c in found[index.digest]["children"]] == [
        "listed by a " + found[index.digest]["protected"]] * 2
    assert found[loose.digest]["protected"] is None
