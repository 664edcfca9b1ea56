"""Cancel and Retry on the job's page, the progress panel, the API and the `deletion_job`
command: permissions, CSRF, htmx partials, and a readable answer to every refusal."""

import json

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from hubmgr.deletion import actions, jobs
from hubmgr.deletion.models import DeletionJob, ItemStatus, JobStatus
from hubmgr.inventory.catalog.store import refresh

from tests.support.factories import make_image, make_repo
from tests.support.helpers import bearer

pytestmark = pytest.mark.django_db


def a_job(user=None, n=3, name="team/app"):
    repo = make_repo(name)
    images = [make_image(repo, f"{name}-{k}", tags=[f"v{k}"]) for k in range(n)]
    refresh(repo)
    plan = actions.make_plan(repo, [i.digest for i in images])
    return jobs.create_job(repo, actions.plan_data(plan, freed=True), user)


def failed_job(user=None, name="team/app"):
    """A finished job whose first item failed (the registry refused it)."""
    job = a_job(user, name=name)
    for n, item in enumerate(job.items.order_by("position")):
        jobs._finish(item, ItemStatus.FAILED if n == 0 else ItemStatus.DONE,
                     "HTTP 403: refused" if n == 0 else "")
    jobs.update_status(job)
    job.refresh_from_db()
    return job


HTMX_BODY = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "job-body"}


# ---- the job's page --------------------------------------------------------------------------
def as_user(user):
    client = Client()
    client.force_login(user)
    return client


def test_a_maintainer_sees_cancel_on_a_running_job_and_a_viewer_does_not(maintainer, user):
    job = a_job()
    html = as_user(maintainer).get(f"/jobs/{job.pk}").content.decode()
    assert 'id="job-cancel"' in html and 'id="job-retry"' not in html
    assert f'hx-post="/jobs/{job.pk}/cancel"' in html and "hx-confirm=" in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert 'id="job-cancel"' not in as_user(user).get(f"/jobs/{job.pk}").content.decode()


def test_cancel_on_the_page_answers_the_pages_body_and_a_second_click_already_cancelled(
        maint, maintainer):
    job = a_job()
    resp = maint.post(f"/jobs/{job.pk}/cancel", **HTMX_BODY)
    html = resp.content.decode()
    assert resp.status_code == 200 and html.lstrip().startswith('<div id="job-body"')
    assert "<h1>" not in html  # the partial, not the page
    assert 'id="job-cancelled"' in html and "Cancelled by maria at" in html
    assert "3 items not deleted" in html and 'id="job-cancel"' not in html
    assert DeletionJob.objects.get().status == JobStatus.CANCELLED
    again = maint.post(f"/jobs/{job.pk}/cancel", **HTMX_BODY)
    assert again.status_code == 409
    assert "Already cancelled by maria at" in again.content.decode()


def test_cancel_without_htmx_redirects_to_the_job(maint):
    job = a_job()
    resp = maint.post(f"/jobs/{job.pk}/cancel")
    assert resp.status_code == 302 and resp["Location"] == f"/jobs/{job.pk}"
    refused = maint.post(f"/jobs/{job.pk}/cancel")
    assert refused.status_code == 409 and "<h1>Deletion #" in refused.content.decode()


def test_cancel_from_the_progress_panel_answers_the_panel(maint):
    job = a_job()
    panel = maint.get(f"/jobs/{job.pk}/progress").content.decode()
    assert f'hx-target="#job-{job.pk}"' in panel and "Cancel</button>" in panel
    resp = maint.post(f"/jobs/{job.pk}/cancel", HTTP_HX_REQUEST="true",
                      HTTP_HX_TARGET=f"job-{job.pk}")
    html = resp.content.decode()
    assert html.startswith('<section class="job-panel status-cancelled"')
    assert "3 cancelled" in html and "Cancelled by maria." in html and "hx-trigger" not in html


def test_retry_on_the_page_opens_the_new_job_and_a_second_click_already_retried(maint):
    job = failed_job()
    html = maint.get(f"/jobs/{job.pk}").content.decode()
    assert 'id="job-retry"' in html and 'id="job-cancel"' not in html
    resp = maint.post(f"/jobs/{job.pk}/retry", **HTMX_BODY)
    new = DeletionJob.objects.exclude(pk=job.pk).get()
    assert resp.status_code == 200 and resp["HX-Redirect"] == f"/jobs/{new.pk}"
    page = maint.get(f"/jobs/{new.pk}").content.decode()
    assert f'Retries the failed items of <a href="/jobs/{job.pk}">deletion #{job.pk}</a>' \
        in page and "Started" in page and "by maria" in page
    old = maint.get(f"/jobs/{job.pk}").content.decode()
    assert f'retried as <a href="/jobs/{new.pk}">' in old and 'id="job-retry"' not in old
    again = maint.post(f"/jobs/{job.pk}/retry", **HTMX_BODY)
    assert again.status_code == 409
    assert f"Already retried as deletion job {new.pk}." in again.content.decode()
    resp = maint.post(f"/jobs/{job.pk}/retry")
    assert resp.status_code == 409


def test_retry_without_htmx_redirects_to_the_new_job(maint):
    job = failed_job()
    resp = maint.post(f"/jobs/{job.pk}/retry")
    new = DeletionJob.objects.exclude(pk=job.pk).get()
    assert resp.status_code == 302 and resp["Location"] == f"/jobs/{new.pk}"


def test_retry_of_a_running_job_says_why_not(maint):
    job = a_job()
    resp = maint.post(f"/jobs/{job.pk}/retry", **HTMX_BODY)
    assert resp.status_code == 409 and "has not finished" in resp.content.decode()


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_job_controls_refuse_the_wrong_method_no_login_no_permission_and_no_job(
        action, maintainer, user):
    job = a_job() if action == "cancel" else failed_job()
    maint = as_user(maintainer)
    assert maint.get(f"/jobs/{job.pk}/{action}").status_code == 405
    assert maint.post(f"/jobs/999999/{action}").status_code == 404
    resp = as_user(user).post(f"/jobs/{job.pk}/{action}")
    assert resp.status_code == 403 and "the maintainers group" in resp.content.decode()
    resp = Client().post(f"/jobs/{job.pk}/{action}")
    assert resp.status_code == 302 and "/login" in resp["Location"]
    job.refresh_from_db()
    assert job.cancelled_at is None and job.retried_as is None


def test_job_controls_need_the_csrf_token(maintainer):
    job = a_job()
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(maintainer)
    assert strict.post(f"/jobs/{job.pk}/cancel").status_code == 403
    job.refresh_from_db()
    assert job.cancelled_at is None


def test_the_jobs_list_counts_cancelled_items(maint, maintainer):
    job = a_job()
    maint.post(f"/jobs/{job.pk}/cancel")
    html = maint.get("/jobs/").content.decode()
    assert "0 of 3 deleted, 3 cancelled" in html and 'class="badge cancelled"' in html


# ---- the API ---------------------------------------------------------------------------------
def post(client, url, body=None, **headers):
    return client.post(url, json.dumps(body if body is not None else {}),
                       content_type="application/json", **headers)


def test_the_api_cancels_once(client, maintainer_token):
    job = a_job()
    resp = post(client, f"/api/v1/deletions/{job.pk}/cancel", **bearer(maintainer_token))
    data = resp.json()
    assert resp.status_code == 200 and data["status"] == "cancelled"
    assert data["cancelled_by"] == "maria" and data["cancelled_at"]
    assert {i["status"] for i in data["items"]} == {"cancelled"}
    assert (data["can_cancel"], data["can_retry"]) == (False, False)
    again = post(client, f"/api/v1/deletions/{job.pk}/cancel", **bearer(maintainer_token))
    assert again.status_code == 409 and again.json()["error"].startswith(
        "Already cancelled by maria at ")
    shown = client.get(f"/api/v1/deletions/{job.pk}", **bearer(maintainer_token)).json()
    assert shown["cancelled_by"] == "maria" and shown["retried_as"] is None


def test_the_api_retries_once(client, maintainer_token):
    job = failed_job()
    resp = post(client, f"/api/v1/deletions/{job.pk}/retry", **bearer(maintainer_token))
    assert resp.status_code == 202
    data = resp.json()
    new = DeletionJob.objects.get(pk=data["id"])
    assert data == {"id": new.pk, "status_url": f"/api/v1/deletions/{new.pk}",
                    "retry_of": job.pk}
    shown = client.get(data["status_url"], **bearer(maintainer_token)).json()
    assert shown["retry_of"] == job.pk and shown["created_by"] == "maria"
    assert len(shown["items"]) == 1 and shown["items"][0]["status"] == "queued"
    assert client.get(f"/api/v1/deletions/{job.pk}",
                      **bearer(maintainer_token)).json()["retried_as"] == new.pk
    again = post(client, f"/api/v1/deletions/{job.pk}/retry", **bearer(maintainer_token))
    assert again.status_code == 409
    assert again.json() == {"error": f"Already retried as deletion job {new.pk}."}


def test_the_api_refuses_a_finished_job_a_viewer_a_body_and_no_job(client, token,
                                                                   maintainer_token):
    job = failed_job()
    resp = post(client, f"/api/v1/deletions/{job.pk}/cancel", **bearer(maintainer_token))
    assert resp.status_code == 409 and "already finished (partial)" in resp.json()["error"]
    assert post(client, f"/api/v1/deletions/{job.pk}/retry",
                **bearer(token)).status_code == 403
    resp = post(client, f"/api/v1/deletions/{job.pk}/retry", {"force": True},
                **bearer(maintainer_token))
    assert resp.status_code == 400 and 'unknown field "force"' in resp.json()["error"]
    resp = client.post(f"/api/v1/deletions/{job.pk}/retry", "x", content_type="text/plain",
                       **bearer(maintainer_token))
    assert resp.status_code == 415
    resp = post(client, "/api/v1/deletions/999999/cancel", **bearer(maintainer_token))
    assert resp.status_code == 404 and "no deletion job 999999" in resp.json()["error"]
    assert client.get(f"/api/v1/deletions/{job.pk}/cancel",
                      **bearer(maintainer_token)).status_code == 405
    assert post(client, f"/api/v1/deletions/{job.pk}/cancel").status_code == 401
    job.refresh_from_db()
    assert job.retried_as is None and job.cancelled_at is None


def test_the_api_with_a_session_needs_the_csrf_token(maintainer):
    job = a_job()
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(maintainer)
    resp = post(strict, f"/api/v1/deletions/{job.pk}/cancel")
    assert resp.status_code == 403 and "CSRF" in resp.json()["error"]


# ---- the command -----------------------------------------------------------------------------
def run(*args):
    from io import StringIO
    out = StringIO()
    call_command("deletion_job", *map(str, args), stdout=out)
    return out.getvalue()


def test_the_command_cancels_retries_and_shows(maintainer):
    job = a_job()
    out = run("cancel", job.pk, "--user", "maria")
    assert f"Deletion job {job.pk} of team/app: cancelled (3 cancelled)." in out
    assert "Cancelled by maria at " in out
    with pytest.raises(CommandError, match="Already cancelled by maria"):
        run("cancel", job.pk)
    failed = failed_job(name="team/other")
    out = run("retry", failed.pk, "--user", "maria")
    new = DeletionJob.objects.get(retry_of=failed)
    assert f"retried as job {new.pk} (1 item, 0 kept)" in out
    assert f"Retries the failed items of job {failed.pk}." in out
    with pytest.raises(CommandError, match=f"Already retried as deletion job {new.pk}"):
        run("retry", failed.pk)
    shown = json.loads(run("show", failed.pk, "--json"))
    assert shown["retried_as"] == new.pk and shown["status"] == "partial"


def test_the_command_refuses_an_unknown_job_and_a_user_who_may_not_delete(user):
    with pytest.raises(CommandError, match="There is no deletion job 999"):
        run("cancel", 999)
    job = a_job()
    with pytest.raises(CommandError, match="viewer may not delete images"):
        run("cancel", job.pk, "--user", "viewer")
    with pytest.raises(CommandError, match="no active user 'nobody'"):
        run("cancel", job.pk, "--user", "nobody")
    job.refresh_from_db()
    assert job.cancelled_at is None
