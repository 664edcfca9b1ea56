"""Preview and delete over HTTP: the modal, permissions, the API and the `delete` command."""

import json

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command

import re

from django.test import Client
from django.utils import timezone

from hubmgr.deletion.models import DeletionJob, DeletionPreview
from hubmgr.inventory.catalog.store import refresh
from hubmgr.inventory.models import Manifest, Tag
from hubmgr.web.deletions import MAX_SELECTION

from tests.support.factories import digest, make_image, make_repo, sample_repo

pytestmark = pytest.mark.django_db


@pytest.fixture
def maintainer_client(client, maintainer):
    client.force_login(maintainer)
    return client


def test_the_modal_groups_selected_children_and_kept(maintainer_client):
    repo, index, images, loose = sample_repo()
    resp = maintainer_client.post("/repositories/team/app/-/preview",
                                  {"digest": [index.digest, loose.digest]},
                                  HTTP_HX_REQUEST="true")
    html = resp.content.decode()
    assert resp.status_code == 200
    assert "Selected (2)" in html and "Also removed (not referenced elsewhere) (2)" in html
    # Counted apart: the two items selected, the index's two children that go with it.
    assert "“Delete forever” deletes 2 items, with their 2 child images." in html
    assert digest("amd")[7:19] in html and 'id="reclaim-bytes"' in html
    preview = DeletionPreview.objects.get()
    assert html.count('name="preview_id"') == 1 and str(preview.pk) in html
    assert 'name="digest"' not in html  # the confirmation names the preview, not a selection


def test_the_modal_counts_an_index_apart_from_the_children_that_go_with_it(
        maintainer_client):
    repo, index, images, loose = sample_repo()
    html = maintainer_client.post("/repositories/team/app/-/preview",
                                  {"digest": [index.digest]},
                                  HTTP_HX_REQUEST="true").content.decode()
    assert ('id="plan-summary">“Delete forever” deletes 1 item, with its 2 child images.</p>'
            in html)
    html = maintainer_client.post("/repositories/team/app/-/preview",
                                  {"digest": [loose.digest]},
                                  HTTP_HX_REQUEST="true").content.decode()
    assert 'id="plan-summary">“Delete forever” deletes 1 item.</p>' in html


def test_the_modal_lists_by_tag_with_each_indexs_children_and_their_platforms(
        maintainer_client):
    repo, index, images, loose = sample_repo()
    everything = [loose.digest, index.digest] + [i.digest for i in reversed(images)]
    html = maintainer_client.post("/repositories/team/app/-/preview",
                                  {"digest": everything}).content.decode()
    selected = html[html.index('id="plan-selected"'):html.index('id="plan-children"')]
    order = [d for d in re.findall(r'<code title="(sha256:[0-9a-f]+)"', selected)]
    # By first tag (1.0, 1.1, 1.2, then the index's 2.0), untagged last.
    assert order == [i.digest for i in images] + [index.digest, loose.digest]
    assert "linux/amd64, linux/arm64" in selected  # the index's platforms
    children = html[html.index('id="plan-children"'):]
    assert re.search(r'Taken along with the index <span class="tag">2.0</span>'
                     r'<span class="tag">latest</span>', children)
    kids = re.findall(r'<span class="platform">([^<]+)</span><code title="(sha256:[0-9a-f]+)"',
                      children)
    assert kids == [("linux/amd64", digest("amd")), ("linux/arm64", digest("arm"))]
    # The footer holds the reclaim figure and the buttons, outside the list that scrolls.
    footer = html[html.index('class="modal-footer"'):]
    assert 'id="reclaim-bytes"' in footer and 'id="delete-forever"' in footer


def test_tags_are_read_in_natural_order():
    from hubmgr.web.deletions import readable

    repo = make_repo("order/app")
    items = [{"digest": digest(t), "type": "image", "tags": [t] if t else [], "size": 1,
              "reason": "selected", "parents": []} for t in ("", "build-10", "B-3", "build-2")]
    selected, children = readable(repo, items)
    assert [i["tags"] for i in selected] == [["B-3"], ["build-2"], ["build-10"], []]
    assert children == [] and selected[0]["platform"] == ""


def test_an_indexs_children_are_listed_under_it_by_platform():
    from hubmgr.web.deletions import readable

    repo = make_repo("kids/app")
    low, high = sorted([digest("k1"), digest("k2")])
    # The digest order is the reverse of the platform order.
    make_image(repo, "k1", platform="linux/arm64" if digest("k1") == low else "linux/amd64")
    make_image(repo, "k2", platform="linux/arm64" if digest("k2") == low else "linux/amd64")
    item = {"type": "image", "size": 1, "tags": []}
    items = [{**item, "digest": digest("idx"), "type": "index", "tags": ["v1"],
              "reason": "selected", "parents": []},
             {**item, "digest": low, "reason": "unreferenced_child", "parents": [digest("idx")]},
             {**item, "digest": high, "reason": "unreferenced_child",
              "parents": [digest("idx")]}]
    selected, children = readable(repo, items)
    assert [(c["platform"], c["digest"]) for c in children] == [("linux/amd64", high),
                                                               ("linux/arm64", low)]
    assert children[0]["heading"]["tags"] == ["v1"] and "heading" not in children[1]


def test_select_all_matching_uses_the_search_and_filter(maintainer_client):
    sample_repo()
    resp = maintainer_client.post("/repositories/team/app/-/preview",
                                  {"all_matching": "1", "filter": "image", "search": "1."})
    assert "Selected (3)" in resp.content.decode()


def test_a_viewer_may_not_preview_or_delete(logged_in):
    repo, index, *_ = sample_repo()
    for url in ("/repositories/team/app/-/preview", "/repositories/team/app/-/delete"):
        resp = logged_in.post(url, {"digest": [index.digest]})
        assert resp.status_code == 403 and "not delete" in resp.content.decode()
    assert not DeletionJob.objects.exists()


def test_preview_needs_post(maintainer_client):
    sample_repo()
    assert maintainer_client.get("/repositories/team/app/-/preview").status_code == 405


def preview_id(client, repo_name, **selection):
    resp = client.post(f"/repositories/{repo_name}/-/preview", selection)
    assert resp.status_code == 200, resp.content.decode()[:500]
    return re.search(r'name="preview_id" value="([0-9a-f-]+)"', resp.content.decode()).group(1)


def test_delete_creates_a_job_and_answers_the_progress_panel(maintainer_client, maintainer):
    repo, index, images, loose = sample_repo()
    pid = preview_id(maintainer_client, "team/app", digest=[loose.digest])
    resp = maintainer_client.post("/repositories/team/app/-/delete", {"preview_id": pid})
    assert resp.status_code == 200 and "hubmgr:job-started" in resp.headers["HX-Trigger"]
    job = DeletionJob.objects.get()
    assert job.created_by == maintainer and job.items.get().digest == loose.digest
    assert f'id="job-{job.pk}"' in resp.content.decode()
    page = maintainer_client.get(f"/jobs/{job.pk}/progress?seen=0")
    assert page.status_code == 200 and "0 of 1 finished" in page.content.decode()
    assert maintainer_client.get("/jobs/").status_code == 200
    assert loose.digest[7:19] in maintainer_client.get(f"/jobs/{job.pk}").content.decode()
    assert maintainer_client.get("/jobs/999").status_code == 404


def test_the_jobs_list_shows_item_counts_the_repository_and_labelled_times(maintainer_client):
    from hubmgr.deletion.models import ItemStatus

    repo, index, images, loose = sample_repo()
    pid = preview_id(maintainer_client, "team/app", digest=[index.digest, loose.digest])
    maintainer_client.post("/repositories/team/app/-/delete", {"preview_id": pid})
    job = DeletionJob.objects.get()
    job.items.filter(digest=loose.digest).update(status=ItemStatus.DONE)
    job.items.filter(digest=digest("amd")).update(status=ItemStatus.FAILED)
    html = maintainer_client.get("/jobs/").content.decode()
    assert "1 of 4 deleted, 1 failed" in html
    assert '<a href="/repositories/team/app">team/app</a>' in html
    assert "Started (UTC)" in html and f'<time datetime="{job.created_at.isoformat()}">' in html
    repo.delete()  # the audit record outlives the repository: no link to a 404
    html = maintainer_client.get("/jobs/").content.decode()
    assert "team/app <span class=\"muted\">(gone)</span>" in html


def test_delete_forever_runs_the_preview_as_it_was_shown(maintainer_client):
    repo, index, images, loose = sample_repo()
    pid = preview_id(maintainer_client, "team/app", digest=[images[0].digest])
    # A tag pushed after the preview: the job keeps the preview's tags, so the re-check before
    # the DELETE sees the new tag and keeps the image.
    Tag.objects.create(repository=repo, name="pushed-later", manifest=images[0])
    maintainer_client.post("/repositories/team/app/-/delete", {"preview_id": pid})
    item = DeletionJob.objects.get().items.get()
    assert item.digest == images[0].digest and item.tags == ["1.0"]


def test_a_preview_runs_once_and_only_for_its_user_and_while_fresh(
        maintainer_client, maintainer, django_user_model):
    repo, index, images, loose = sample_repo()
    pid = preview_id(maintainer_client, "team/app", digest=[loose.digest])
    url = "/repositories/team/app/-/delete"
    other = django_user_model.objects.create_user("otto", password="pw-otto-12345")
    other.user_permissions.add(Permission.objects.get(codename="delete_images"))
    client = Client()
    client.force_login(other)
    assert client.post(url, {"preview_id": pid}).status_code == 404
    assert maintainer_client.post(url, {"preview_id": "not-a-uuid"}).status_code == 404
    assert maintainer_client.post(url, {}).status_code == 400
    assert maintainer_client.post(url, {"preview_id": pid}).status_code == 200
    again = maintainer_client.post(url, {"preview_id": pid})
    assert again.status_code == 409 and "already confirmed" in again.content.decode()
    stale = preview_id(maintainer_client, "team/app", digest=[images[1].digest])
    DeletionPreview.objects.filter(pk=stale).update(expires_at=timezone.now())
    expired = maintainer_client.post(url, {"preview_id": stale})
    assert expired.status_code == 410 and "Preview again" in expired.content.decode()
    assert DeletionJob.objects.count() == 1


@pytest.mark.slow
def test_select_all_matching_deletes_fifty_thousand_from_the_web_page(maintainer_client):
    repo = make_repo("big/app")
    now = timezone.now()
    Manifest.objects.bulk_create([
        Manifest(repository=repo, digest=digest(f"big{n}"), kind="image", fetched=True,
                 last_pushed=now) for n in range(MAX_SELECTION)], batch_size=5000)
    refresh(repo)
    pid = preview_id(maintainer_client, "big/app", all_matching="1", search="", filter="")
    resp = maintainer_client.post("/repositories/big/app/-/delete", {"preview_id": pid})
    assert resp.status_code == 200
    assert DeletionJob.objects.get().items.count() == MAX_SELECTION


def api(client, url, body, token):
    return client.post(url, json.dumps(body), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {token}")


def test_api_preview_answers_the_documented_shape(client, maintainer_token):
    repo, index, images, loose = sample_repo()
    body = api(client, "/api/v1/repositories/team/app/deletions/preview",
               {"digests": [index.digest, digest("amd")]}, maintainer_token).json()
    assert str(DeletionPreview.objects.get().pk) == body["preview_id"] and body["expires_at"]
    assert [(i["digest"], i["reason"]) for i in body["items"]] == [
        (index.digest, "selected"), (digest("amd"), "selected"), (digest("arm"), "unreferenced_child")]
    assert body["kept"] == [] and body["reclaim_bytes"] == 3000 + 4000
    assert set(body["items"][0]) >= {"digest", "type", "tags", "size", "reason"}


def test_api_delete_answers_202_and_a_status_url(client, maintainer_token):
    repo, index, images, loose = sample_repo()
    resp = api(client, "/api/v1/repositories/team/app/deletions", {"digests": [loose.digest]},
               maintainer_token)
    assert resp.status_code == 202
    status = client.get(resp.json()["status_url"],
                        HTTP_AUTHORIZATION=f"Bearer {maintainer_token}").json()
    assert status["status"] == "queued"
    assert status["items"] == [{"digest": loose.digest, "type": "image", "tags": [], "size": 50,
                                "reason": "selected", "status": "queued", "attempts": 0,
                                "last_error": None}]


def test_api_delete_runs_a_preview_by_its_id(client, maintainer_token):
    repo, index, images, loose = sample_repo()
    pid = api(client, "/api/v1/repositories/team/app/deletions/preview",
              {"digests": [index.digest]}, maintainer_token).json()["preview_id"]
    resp = api(client, "/api/v1/repositories/team/app/deletions", {"preview_id": pid},
               maintainer_token)
    assert resp.status_code == 202
    job = DeletionJob.objects.get()
    assert list(job.items.values_list("digest", flat=True)) == [
        index.digest, digest("amd"), digest("arm")]
    again = api(client, "/api/v1/repositories/team/app/deletions", {"preview_id": pid},
                maintainer_token)
    assert again.status_code == 409 and "already confirmed" in again.json()["error"]
    elsewhere = api(client, "/api/v1/repositories/other/deletions", {"preview_id": pid},
                    maintainer_token)
    assert elsewhere.status_code == 404


@pytest.mark.parametrize("body", [None, {"digests": []}, {"digests": "x"}, {"digests": ["md5:1"]},
                                  {"digests": ["sha256:../../x/manifests/" + "a" * 64]}])
def test_api_rejects_a_malformed_body(client, maintainer_token, body):
    sample_repo()
    raw = "not json" if body is None else json.dumps(body)
    resp = client.post("/api/v1/repositories/team/app/deletions", raw,
                       content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {maintainer_token}")
    assert resp.status_code == 400 and "digests" in resp.json()["error"]
    assert not DeletionJob.objects.exists()


def test_api_tokens_carry_their_users_permissions(client, token):
    sample_repo()
    resp = api(client, "/api/v1/repositories/team/app/deletions", {"digests": [digest("loose")]},
               token)
    assert resp.status_code == 403 and "not delete" in resp.json()["error"]


def test_api_unknown_job_is_a_json_404(client, maintainer_token):
    resp = client.get("/api/v1/deletions/42", HTTP_AUTHORIZATION=f"Bearer {maintainer_token}")
    assert resp.status_code == 404 and "no deletion job 42" in resp.json()["error"]


def test_delete_command_dry_run_prints_the_plan(capsys):
    repo, index, images, loose = sample_repo()
    call_command("delete", "team/app", "--digest", index.digest, "--dry-run")
    out = capsys.readouterr().out
    assert out.count("delete  sha256:") == 3 and "unreferenced child" in out
    assert "storage to reclaim: 7.0 kB (7000 bytes)" in out
    assert not DeletionJob.objects.exists()


def test_delete_command_needs_a_selection_and_a_known_repository():
    sample_repo()
    with pytest.raises(CommandError, match="Name what to delete"):
        call_command("delete", "team/app")
    with pytest.raises(CommandError, match="No repository 'nope'"):
        call_command("delete", "nope", "--filter", "untagged")


def test_a_selection_over_the_limit_is_refused_not_truncated(maintainer_client, monkeypatch):
    from hubmgr.web import deletions

    repo, index, images, loose = sample_repo()
    monkeypatch.setattr(deletions, "MAX_SELECTION", 1)
    resp = maintainer_client.post("/repositories/team/app/-/preview",
                                  {"digest": [loose.digest, images[0].digest]})
    assert resp.status_code == 400 and "can be deleted at once" in resp.content.decode()
    assert not DeletionPreview.objects.exists() and not DeletionJob.objects.exists()
