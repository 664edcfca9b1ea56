"""The policies API: auth and permission, CSRF, validation, the audited write path, dry runs,
runs on a real worker, the broker down, and unknown ids."""

import json
import time

import pytest
from django.test import Client

from hubmgr.policies import reports
from hubmgr.policies.models import CleanupPolicy, PolicyAudit, PolicyRun
from hubmgr.web import api_policies

from tests.support.factories import digest

pytestmark = pytest.mark.django_db

RELEASE = r"^latest$|^v?\d+\.\d+\.\d+$"
BUILDS = {"name": "builds", "include": "team/*", "remove_tag_regex": "^build-",
          "remove_tag_days": 0, "keep_last": 2, "keep_tag_regex": RELEASE,
          "remove_untagged_days": 7}


def post(client, url, body=None, **extra):
    return client.post(url, json.dumps(body or {}), content_type="application/json", **extra)


def patch(client, url, body, **extra):
    return client.patch(url, json.dumps(body), content_type="application/json", **extra)


def create(client, **fields):
    resp = post(client, "/api/v1/policies", {**BUILDS, **fields})
    assert resp.status_code == 201, resp.content
    return resp.json()


# ---- auth and permission ----------------------------------------------------------------------
@pytest.mark.parametrize("method, url", [
    ("get", "/api/v1/policies"), ("post", "/api/v1/policies"), ("get", "/api/v1/policies/1"),
    ("patch", "/api/v1/policies/1"), ("delete", "/api/v1/policies/1"),
    ("post", "/api/v1/policies/1/dry-run"), ("post", "/api/v1/policies/1/runs"),
    ("get", "/api/v1/policies/1/runs"), ("get", "/api/v1/policies/1/audit"),
    ("get", "/api/v1/policy-runs/1"), ("post", "/api/v1/policy-runs/1/confirm-brake")])
def test_anonymous_requests_are_a_json_401(client, method, url):
    resp = client.generic(method.upper(), url, "{}", content_type="application/json")
    assert resp.status_code == 401 and "authentication required" in resp.json()["error"]


def test_a_viewer_lists_and_reads_but_may_not_change_or_run(client, maint, user):
    made = create(maint)
    url = made["url"]
    client.force_login(user)
    assert client.get("/api/v1/policies").json()["results"][0]["name"] == "builds"
    assert client.get(url).json()["name"] == "builds"
    for resp in (post(client, "/api/v1/policies", {**BUILDS, "name": "x"}),
                 patch(client, url, {"mode": "delete"}), client.delete(url),
                 post(client, f"{url}/runs")):
        assert resp.status_code == 403
        assert "not create, change, run or delete them" in resp.json()["error"]
    assert CleanupPolicy.objects.get().mode == "report"
    assert PolicyAudit.objects.count() == 1 and not PolicyRun.objects.exists()


def test_a_viewer_may_dry_run_which_records_and_deletes_nothing(client, maint, user,
                                                                 inventory):
    from hubmgr.inventory.models import Manifest

    url = create(maint)["url"]
    manifests = Manifest.objects.count()
    client.force_login(user)
    resp = post(client, f"{url}/dry-run")
    assert resp.status_code == 200 and resp.json()["totals"]["going"] == 4
    assert not PolicyRun.objects.exists() and Manifest.objects.count() == manifests


def test_a_session_write_needs_the_csrf_token_and_a_token_does_not(maintainer, capsys):
    from django.core.management import call_command

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(maintainer)
    resp = post(browser, "/api/v1/policies", BUILDS)
    assert resp.status_code == 403 and "CSRF" in resp.json()["error"]
    policy = CleanupPolicy.objects.create(**{**BUILDS, "name": "made"})
    assert browser.delete(f"/api/v1/policies/{policy.pk}").status_code == 403
    assert patch(browser, f"/api/v1/policies/{policy.pk}", {"mode": "delete"}
                 ).status_code == 403
    call_command("create_api_token", maintainer.username)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {capsys.readouterr().out.strip()}"}
    assert post(browser, "/api/v1/policies", BUILDS, **auth).status_code == 201
    assert PolicyAudit.objects.get().user == maintainer


def test_a_body_must_be_a_json_object_sent_as_json(maint):
    resp = maint.post("/api/v1/policies", "{not json", content_type="application/json")
    assert resp.status_code == 400 and "JSON object" in resp.json()["error"]
    assert post(maint, "/api/v1/policies", ["a"]).status_code == 400
    resp = maint.post("/api/v1/policies", {"name": "x"})  # a form, not JSON
    assert resp.status_code == 415
    assert maint.put("/api/v1/policies/1", "{}", content_type="application/json"
                     ).status_code == 405


# ---- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("fields, words", [
    ({"remove_tag_regex": "(unclosed"}, '"remove_tag_regex": This expression is not a valid'),
    ({"keep_tag_regex": r"(a)\1"}, '"keep_tag_regex": This expression is not a valid'),
    ({"keep_tag_regex": "(?=x)"}, "no backreferences or lookaround"),
    ({"keep_tag_regex": "a" * 501}, "at most 500"),
    ({"remove_tag_regex": "", "remove_tag_days": None, "remove_untagged_days": None},
     '"remove_untagged_days": A policy needs at least one remove rule.'),
    ({"remove_tag_days": None}, '"remove_tag_days": The tagged-items rule needs both'),
    ({"colour": "red"}, 'unknown field "colour"'),
    ({"include": "team/*\n!"}, '"include":'),
    ({"include": "x" * 10_001}, '"include": has 10001 characters; at most 10000 are allowed'),
    ({"keep_last": "many"}, '"keep_last":'),
    ({"keep_last": [1]}, '"keep_last": must be an integer from 0 to 2147483647 or null'),
    ({"mode": "shred"}, '"mode": must be one of \'report\', \'delete\', not \'shred\''),
    ({"schedule": "daily"}, '"run_at": A scheduled policy needs a time of day.'),
    ({"run_at": "25:00"}, '"run_at":'),
    ({"brake_share": 2}, '"brake_share":'),
    ({"name": None}, '"name":'),
])
def test_invalid_settings_are_a_400_naming_the_field(maint, fields, words):
    resp = post(maint, "/api/v1/policies", {**BUILDS, **fields})
    assert resp.status_code == 400 and words in resp.json()["error"], resp.json()
    assert not CleanupPolicy.objects.exists() and not PolicyAudit.objects.exists()


# Issue 20, finding 5: values that reached the database unchecked were a 500 (or stored wrong).
@pytest.mark.parametrize("raw, words", [
    ('"brake_share": NaN', '"brake_share": must be a number from 0 to 1, not nan'),
    ('"brake_share": Infinity', '"brake_share": must be a number from 0 to 1, not inf'),
    ('"keep_last": Infinity', '"keep_last": must be an integer from 0 to 2147483647'),
    ('"keep_last": -Infinity', '"keep_last": must be an integer'),
    ('"brake_count": 1e400', '"brake_count": must be an integer'),
    ('"run_at": 5', '"run_at": must be a time of day in UTC'),
    ('"run_at": true', '"run_at": must be a time of day in UTC'),
    ('"name": "a\\u0000b"', '"name" holds a NUL character'),
    ('"keep_tag_regex": "^v\\u0000"', '"keep_tag_regex" holds a NUL character'),
    ('"name": "\\ud800"', '"name" holds a NUL character or a lone surrogate'),
    ('"include": ["team/*", "x\\udfff"]', '"include" holds a NUL character or a lone'),
    ('"\\ud800": 1', "a field name holds a NUL character or a lone surrogate"),
])
def test_values_the_database_cannot_take_are_a_400_naming_the_field(maint, raw, words):
    body = json.dumps(BUILDS)[:-1] + ", " + raw + "}"
    resp = maint.post("/api/v1/policies", body, content_type="application/json")
    assert resp.status_code == 400 and words in resp.json()["error"], resp.json()
    assert not CleanupPolicy.objects.exists() and not PolicyAudit.objects.exists()


def test_nan_is_not_mistaken_for_a_name_that_exists(maint):
    made = create(maint)
    resp = maint.patch(made["url"], '{"brake_share": NaN}', content_type="application/json")
    assert resp.status_code == 400 and "exists" not in resp.json()["error"]
    assert CleanupPolicy.objects.get().brake_share == 0.5


@pytest.mark.parametrize("fields, words", [
    ({"keep_last": True}, '"keep_last": must be an integer'),
    ({"keep_last": 2.5}, '"keep_last": must be an integer'),
    ({"keep_last": "5"}, '"keep_last": must be an integer'),
    ({"keep_last": 2**31}, '"keep_last": must be an integer from 0 to 2147483647'),
    ({"remove_untagged_days": 36501}, '"remove_untagged_days": must be an integer from 0 to'),
    ({"weekday": 7}, '"weekday": must be an integer from 0 to 6'),
    ({"brake_share": False}, '"brake_share": must be a number'),
    ({"brake_share": "0.5"}, '"brake_share": must be a number'),
    ({"remove_stale": 1}, '"remove_stale": must be true or false'),
    ({"name": 5}, '"name": must be a string'),
    ({"include": {"team/*": 1}}, '"include": must be a string or a list of strings'),
    ({"schedule": None}, '"schedule": must be one of'),
])
def test_a_field_takes_only_its_own_type(maint, fields, words):
    resp = post(maint, "/api/v1/policies", {**BUILDS, **fields})
    assert resp.status_code == 400 and words in resp.json()["error"], resp.json()
    assert not CleanupPolicy.objects.exists()


def test_a_whole_float_is_an_integer_and_an_integer_a_number(maint):
    made = create(maint, keep_last=3.0, brake_share=1, brake_count=10)
    assert (made["keep_last"], made["brake_share"], made["brake_count"]) == (3, 1.0, 10)


@pytest.mark.parametrize("sent, stored", [
    ("03:30", "03:30:00"), ("03:30:15", "03:30:15"), ("03:30Z", "03:30:00"),
    ("23:59:59+00:00", "23:59:59"), ("00:00:00-00:00", "00:00:00")])
def test_run_at_is_a_utc_time_of_day(maint, sent, stored):
    made = create(maint, schedule="daily", run_at=sent)
    assert made["run_at"] == stored


@pytest.mark.parametrize("sent", ["10:00:00+05:00", "10:00-01:00", "24:00", "3:30", "03:30:60",
                                  "03:30:00.5", "\u0663\u0660:00", " 03:30", "T03:30"])
def test_run_at_with_another_offset_or_form_is_refused_not_stored_as_utc(maint, sent):
    resp = post(maint, "/api/v1/policies", {**BUILDS, "schedule": "daily", "run_at": sent})
    assert resp.status_code == 400 and resp.json()["error"].startswith('"run_at": ')
    if "+05:00" in sent:
        assert "offset +05:00" in resp.json()["error"]
    assert not CleanupPolicy.objects.exists()


def test_the_run_and_brake_bodies_are_checked_too(maint, inventory):
    run = braked_run(maint)
    policy_url = f"/api/v1/policies/{run.policy_id}"
    for url, body, words in [
            (f"{policy_url}/runs", '{"dry_run": 1}', '"dry_run": must be true or false'),
            (f"{policy_url}/runs", '{"dry_run": null}', '"dry_run": must be true or false'),
            (f"{policy_url}/runs", '{"x\\u0000": true}', "a field name holds a NUL"),
            (f"{policy_url}/dry-run", '{"force": true}', 'unknown field "force"; the body is {}'),
            (f"/api/v1/policy-runs/{run.pk}/confirm-brake", '{"a": NaN}',
             'unknown field "a"; the body is {}')]:
        resp = maint.post(url, body, content_type="application/json")
        assert resp.status_code == 400 and words in resp.json()["error"], (url, resp.json())
    assert PolicyRun.objects.count() == 1 and not run.jobs.exists()


def test_every_editable_field_has_a_declared_type():
    assert tuple(api_policies.POLICY.fields) == api_policies.EDITABLE


def test_a_catastrophic_pattern_is_accepted_since_re2_runs_it_in_linear_time(maint):
    made = create(maint, remove_tag_regex="^(a+)+$")
    assert made["remove_tag_regex"] == "^(a+)+$"


# ---- the audited write path -------------------------------------------------------------------
def test_create_list_change_and_delete_are_audited_with_the_user(maint, maintainer):
    made = create(maint, include=["team/*", "!team/base"], schedule="weekly", run_at="03:30",
                  weekday=6)
    assert made["mode"] == "report" and made["include"] == "team/*\n!team/base"
    assert (made["run_at"], made["created_by"], made["last_run"]) == (
        "03:30:00", "maria", None)
    listed = maint.get("/api/v1/policies").json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == made["id"]

    resp = patch(maint, made["url"], {"mode": "delete", "keep_last": 5})
    assert resp.status_code == 200
    assert (resp.json()["mode"], resp.json()["keep_last"]) == ("delete", 5)
    resp = patch(maint, made["url"], {"keep_tag_regex": "(?<=v)1"})
    assert resp.status_code == 400  # an invalid change saves nothing
    assert CleanupPolicy.objects.get().keep_tag_regex == RELEASE

    assert maint.delete(made["url"]).status_code == 204
    assert not CleanupPolicy.objects.exists()
    audit = list(PolicyAudit.objects.order_by("id"))
    assert [(a.action, a.user) for a in audit] == [
        ("create", maintainer), ("change", maintainer), ("delete", maintainer)]
    assert (audit[1].before["mode"], audit[1].after["mode"]) == ("report", "delete")
    assert (audit[1].before["keep_last"], audit[1].after["keep_last"]) == (2, 5)
    assert audit[2].policy_name == "builds" and audit[2].before["mode"] == "delete"


@pytest.mark.parametrize("method, url", [
    ("get", "/api/v1/policies/999"), ("patch", "/api/v1/policies/999"),
    ("delete", "/api/v1/policies/999"), ("post", "/api/v1/policies/999/dry-run"),
    ("post", "/api/v1/policies/999/runs"), ("get", "/api/v1/policies/999/runs"),
    ("get", "/api/v1/policies/999/audit"), ("get", "/api/v1/policy-runs/999"),
    ("post", "/api/v1/policy-runs/999/confirm-brake")])
def test_unknown_ids_are_a_json_404(maint, method, url):
    resp = maint.generic(method.upper(), url, "{}", content_type="application/json")
    assert resp.status_code == 404 and "There is no" in resp.json()["error"]


# ---- dry runs ---------------------------------------------------------------------------------
def test_a_dry_run_answers_the_report_and_records_nothing(maint, inventory):
    made = create(maint)
    resp = post(maint, f"{made['url']}/dry-run")
    assert resp.status_code == 200
    report = resp.json()
    [repo] = report["repositories"]
    assert {i["digest"]: i["rule"] for i in repo["going"]} == {
        digest("build0"): "tag", digest("build1"): "tag", digest("build2"): "tag",
        digest("old"): "untagged"}
    # Protected: what a remove rule selects and a keep rule saves (the release tags match no
    # remove rule).
    assert {i["digest"]: i["keep"] for i in repo["protected"]} == {
        digest("build3"): ["last"], digest("build4"): ["last"]}
    assert repo["reclaim_bytes"] == 4000 and repo["going_count"] == 4
    assert report["totals"]["repositories"] == 1 and report["totals"]["reclaim_bytes"] == 4000
    assert report["items_truncated"] is False and report["note"].startswith("Index children")
    assert not PolicyRun.objects.exists()


def test_a_long_report_lists_fewer_items_but_exact_counts(maint, inventory, monkeypatch):
    monkeypatch.setattr(reports, "MAX_LISTED_ITEMS", 2)
    report = post(maint, f"{create(maint)['url']}/dry-run").json()
    [repo] = report["repositories"]
    assert report["items_truncated"] is True and len(repo["going"]) == 2
    assert (repo["going_count"], repo["protected_count"]) == (4, 2)
    assert report["totals"]["going"] == 4 and report["totals"]["reclaim_bytes"] == 4000


# ---- runs on a worker -------------------------------------------------------------------------
def wait_finished(client, url, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        body = client.get(url).json()
        if body["finished"]:
            return body
        time.sleep(0.1)
    raise AssertionError(f"the run did not finish: {body}")


@pytest.mark.django_db(transaction=True)
def test_a_run_in_report_mode_records_its_report_and_deletes_nothing(
        client, maintainer, inventory, celery_worker):
    from hubmgr.deletion.models import DeletionJob
    from hubmgr.inventory.models import Manifest

    client.force_login(maintainer)
    made = create(client)
    resp = post(client, f"{made['url']}/runs")
    assert resp.status_code == 202
    body = wait_finished(client, resp.json()["status_url"])
    assert (body["status"], body["dry_run"], body["started_by"], body["jobs"]) == (
        "done", True, "maria", [])
    assert {i["digest"] for i in body["report"]["repositories"][0]["going"]} == {
        digest("build0"), digest("build1"), digest("build2"), digest("old")}
    assert not DeletionJob.objects.exists() and Manifest.objects.count() == 12
    last = client.get("/api/v1/policies").json()["results"][0]["last_run"]
    assert (last["id"], last["status"], last["reclaim_bytes"]) == (resp.json()["id"], "done",
                                                                   4000)


@pytest.mark.django_db(transaction=True)
def test_a_run_in_delete_mode_links_its_jobs(client, maintainer, inventory, celery_worker):
    client.force_login(maintainer)
    made = create(client, mode="delete")
    resp = post(client, f"{made['url']}/runs")
    body = wait_finished(client, resp.json()["status_url"])
    assert body["dry_run"] is False and body["status"] == "done"
    [job] = body["jobs"]
    assert job["status_url"] == f"/api/v1/deletions/{job['id']}"
    assert body["report"]["repositories"][0]["job"] == job["id"]


def test_one_run_at_a_time_and_a_bad_body_is_refused(maint, inventory, monkeypatch):
    from hubmgr.policies import tasks

    queued = []
    monkeypatch.setattr(tasks.execute_run, "delay", queued.append)
    url = f"{create(maint)['url']}/runs"
    assert post(maint, url, {"dry_run": "yes"}).status_code == 400
    first = post(maint, url, {"dry_run": True})
    assert first.status_code == 202 and queued == [first.json()["id"]]
    resp = post(maint, url)
    assert resp.status_code == 409 and "already running" in resp.json()["error"]
    resp = maint.delete(url.removesuffix("/runs"))
    assert resp.status_code == 409 and "is running" in resp.json()["error"]
    body = maint.get(first.json()["status_url"]).json()
    assert (body["status"], body["finished"], body["report"]) == ("running", False, None)
    tasks.execute_run(first.json()["id"])
    assert maint.get(first.json()["status_url"]).json()["status"] == "done"
    assert tasks.execute_run(first.json()["id"]) is None  # a second delivery: finished


def test_with_the_broker_down_a_run_is_a_503_and_nothing_is_recorded(
        maint, inventory, redis_service):
    url = f"{create(maint)['url']}/runs"
    redis_service.stop()
    try:
        resp = post(maint, url)
    finally:
        redis_service.start()
    assert resp.status_code == 503 and "unavailable" in resp.json()["error"]
    assert not PolicyRun.objects.exists()


# ---- run history, audit history, confirming the brake --------------------------------------
def braked_run(client, **fields):
    """A recorded run in delete mode that the brake stopped (team/app would lose 4 items, more
    than the limit of 1)."""
    from hubmgr.policies import runs

    made = create(client, mode="delete", brake_count=1, **fields)
    run = runs.record_run(CleanupPolicy.objects.get(pk=made["id"]), delete=True)
    assert run.status == "braked"
    return run


def test_run_history_is_newest_first_paged_and_bounded(maint, inventory, monkeypatch):
    from hubmgr.policies import runs

    monkeypatch.setattr(api_policies, "MAX_PAGE_SIZE", 2)
    made = create(maint)
    policy = CleanupPolicy.objects.get()
    ids = [runs.record_dry_run(policy).pk for _ in range(4)]
    running = PolicyRun.objects.create(policy=policy).pk
    url = f"{made['url']}/runs"
    first = maint.get(url, {"page_size": 50}).json()  # at most MAX_PAGE_SIZE
    assert (first["count"], first["page"], first["pages"], first["previous"]) == (5, 1, 3, None)
    assert [r["id"] for r in first["results"]] == [running, ids[3]]
    second = maint.get(first["next"]).json()
    assert [r["id"] for r in second["results"]] == [ids[2], ids[1]]
    assert maint.get(url, {"page": 99}).json()["page"] == 3  # past the end: the last
    assert maint.get(url, {"page": "x", "page_size": "-4"}).json()["page"] == 1
    done, now = first["results"][1], first["results"][0]
    assert (done["status"], done["mode"], done["finished"], done["braked_repositories"]) == (
        "done", "report", True, 0)
    assert (done["totals"]["going"], done["totals"]["reclaim_bytes"]) == (4, 4000)
    assert done["started_at"] and done["finished_at"] and "report" not in done
    assert (now["status"], now["totals"], now["finished_at"]) == ("running", None, None)


def test_run_history_counts_braked_repositories_and_names_the_jobs(maint, inventory):
    run = braked_run(maint)
    [listed] = maint.get(f"/api/v1/policies/{run.policy_id}/runs").json()["results"]
    assert (listed["mode"], listed["status"], listed["braked_repositories"]) == (
        "delete", "braked", 1)
    assert (listed["totals"]["braked_going"], listed["jobs"]) == (4, [])
    assert listed["brake_confirmed_at"] is None


def test_a_maintainer_confirms_the_brake_once_and_gets_the_jobs(maint, inventory):
    from hubmgr.deletion.models import DeletionJob

    run = braked_run(maint)
    url = f"/api/v1/policy-runs/{run.pk}/confirm-brake"
    assert post(maint, url, {"force": True}).status_code == 400
    resp = post(maint, url)
    assert resp.status_code == 202, resp.content
    job = DeletionJob.objects.get()
    assert resp.json()["jobs"] == [{"id": job.pk, "status_url": f"/api/v1/deletions/{job.pk}"}]
    assert job.items.count() == 4 and job.created_by.username == "maria"
    again = post(maint, url)
    assert again.status_code == 409 and "Already confirmed by maria" in again.json()["error"]
    assert DeletionJob.objects.count() == 1
    body = maint.get(f"/api/v1/policy-runs/{run.pk}").json()
    assert body["brake_confirmed_by"] == "maria" and [j["id"] for j in body["jobs"]] == [job.pk]
    [listed] = maint.get(f"/api/v1/policies/{run.policy_id}/runs").json()["results"]
    assert (listed["jobs"], listed["brake_confirmed_by"]) == ([job.pk], "maria")


def test_a_confirmed_brake_says_what_its_jobs_deleted_and_freed(maint, inventory):
    from hubmgr.deletion.models import DeletionJob, ItemStatus, JobStatus, ReclaimState

    run = braked_run(maint)
    last = maint.get(f"/api/v1/policies/{run.policy_id}").json()["last_run"]
    assert (last["reclaim_bytes"], last["deleted"]) == (0, None)  # the brake held it all
    body = maint.get(f"/api/v1/policy-runs/{run.pk}").json()
    assert body["deleted"] is None
    totals = body["report"]["totals"]
    assert (totals["going_items"], totals["braked_going"], totals["braked_going_items"]) == (
        0, 4, 4)
    [entry] = body["report"]["repositories"]
    assert (entry["going_items"], entry["going_children"], entry["going_attached"]) == (
        4, 0, 0)
    post(maint, f"/api/v1/policy-runs/{run.pk}/confirm-brake")
    job = DeletionJob.objects.get()
    job.items.update(status=ItemStatus.DONE)
    DeletionJob.objects.filter(pk=job.pk).update(
        status=JobStatus.DONE, reclaim_state=ReclaimState.PENDING, freed_bytes=3_500)
    deleted = {"jobs": 1, "unfinished_jobs": 0, "items": 4, "children": 0, "attached": 0,
               "freed_bytes": 3_500, "planned_bytes": 0}
    assert maint.get(f"/api/v1/policy-runs/{run.pk}").json()["deleted"] == deleted
    [policy] = maint.get("/api/v1/policies").json()["results"]
    assert policy["last_run"]["deleted"] == deleted


def test_a_run_that_cannot_be_confirmed_is_a_409_saying_why(maint, inventory, settings):
    from hubmgr.policies import runs

    made = create(maint)
    report_only = runs.record_run(CleanupPolicy.objects.get(), delete=True)
    resp = post(maint, f"/api/v1/policy-runs/{report_only.pk}/confirm-brake")
    assert resp.status_code == 409 and "report mode" in resp.json()["error"]
    maint.delete(made["url"])
    run = braked_run(maint)
    settings.DELETE_PREVIEW_MINUTES = 0
    PolicyRun.objects.filter(pk=run.pk).update(finished_at=run.finished_at.replace(year=2020))
    resp = post(maint, f"/api/v1/policy-runs/{run.pk}/confirm-brake")
    assert resp.status_code == 409 and "too old to confirm" in resp.json()["error"]
    assert not run.jobs.exists()


def test_a_viewer_reads_the_histories_but_may_not_confirm(client, maint, user, inventory):
    run = braked_run(maint)
    client.force_login(user)
    assert client.get(f"/api/v1/policies/{run.policy_id}/runs").json()["count"] == 1
    assert client.get(f"/api/v1/policies/{run.policy_id}/audit").json()["count"] == 1
    resp = post(client, f"/api/v1/policy-runs/{run.pk}/confirm-brake")
    assert resp.status_code == 403 and not run.jobs.exists()
    assert client.put(f"/api/v1/policies/{run.policy_id}/audit").status_code == 405


def test_a_session_confirmation_needs_the_csrf_token(maintainer, maint, inventory):
    run = braked_run(maint)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(maintainer)
    resp = post(browser, f"/api/v1/policy-runs/{run.pk}/confirm-brake")
    assert resp.status_code == 403 and "CSRF" in resp.json()["error"]
    assert not run.jobs.exists()


def test_the_audit_history_lists_who_changed_which_fields_newest_first(maint, monkeypatch):
    made = create(maint)
    patch(maint, made["url"], {"keep_last": 5, "mode": "delete"})
    patch(maint, made["url"], {"include": ["team/*", "!team/base"]})
    body = maint.get(f"{made['url']}/audit").json()
    assert body["count"] == 3
    latest, change, creation = body["results"]
    assert (latest["action"], latest["user"]) == ("change", "maria")
    assert latest["changes"] == [
        {"field": "include", "before": "team/*", "after": "team/*\n!team/base"}]
    assert change["changes"] == [{"field": "mode", "before": "report", "after": "delete"},
                                 {"field": "keep_last", "before": 2, "after": 5}]
    assert change["before"]["keep_last"] == 2 and change["after"]["keep_last"] == 5
    created = {c["field"]: c["after"] for c in creation["changes"]}
    assert creation["action"] == "create" and created["name"] == "builds"
    assert "mode" not in created and "brake_share" not in created  # the defaults
    monkeypatch.setattr(api_policies, "MAX_PAGE_SIZE", 1)
    paged = maint.get(f"{made['url']}/audit", {"page": 3}).json()
    assert [e["action"] for e in paged["results"]] == ["create"] and paged["next"] is None


def test_a_run_awaiting_confirmation_and_its_answer_are_in_the_api(maint, inventory,
                                                                   monkeypatch):
    """The page's Run now in delete mode waits for Delete forever; the API shows it waiting,
    then who confirmed. The API's own run is the confirmation: it deletes at once."""
    from hubmgr.policies import tasks

    monkeypatch.setattr(tasks.execute_run, "delay", tasks.execute_run)
    made = create(maint, mode="delete")
    run_id = int(maint.post(f"/policies/{made['id']}/run").url.split("/")[-2])
    body = maint.get(f"/api/v1/policy-runs/{run_id}").json()
    assert (body["status"], body["confirm_first"], body["answered_by"], body["jobs"]) == (
        "awaiting", True, None, [])
    maint.post(f"/policies/runs/{run_id}/confirm")
    [listed] = maint.get(f"{made['url']}/runs").json()["results"]
    assert (listed["status"], listed["answered_by"], len(listed["jobs"])) == ("done", "maria", 1)
    assert listed["answered_at"] is not None
    api_run = post(maint, f"{made['url']}/runs").json()
    body = maint.get(api_run["status_url"]).json()
    assert (body["status"], body["confirm_first"], len(body["jobs"])) == ("done", False, 1)
