"""The cleanup policy pages: the list, a policy's page with its dry run and run now, a run's
report, the form with its live preview, and deletion; who may read and who may change."""

import time

import pytest
from django.test import Client

from hubmgr.policies import service, tasks
from hubmgr.policies.models import CleanupPolicy, PolicyAudit, PolicyRun

from tests.support.factories import digest

pytestmark = pytest.mark.django_db

RELEASE = r"^latest$|^v?\d+\.\d+\.\d+$"
BUILDS = {"name": "builds", "include": "team/*", "exclude": "", "schedule": "off",
          "mode": "report", "remove_tag_regex": "^build-", "remove_tag_days": "0",
          "remove_untagged_days": "7", "keep_last": "2", "keep_tag_regex": RELEASE,
          "brake_share": "50"}
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def policy(db, maintainer):
    return service.save_policy(CleanupPolicy(
        name="builds", include="team/*", remove_tag_regex="^build-", remove_tag_days=0,
        remove_untagged_days=7, keep_last=2, keep_tag_regex=RELEASE), maintainer)


def run_of(policy, **fields):
    return PolicyRun.objects.create(policy=policy, **fields)


# ---- login and permission ---------------------------------------------------------------------
@pytest.mark.parametrize("url", ["/policies/", "/policies/1/", "/policies/runs/1/",
                                 "/policies/new", "/policies/1/edit", "/policies/1/delete"])
def test_pages_need_a_login(client, url):
    resp = client.get(url)
    assert resp.status_code == 302 and resp.url.startswith("/login/")


@pytest.mark.parametrize("url", ["/policies/1/dry-run", "/policies/1/run", "/policies/preview",
                                 "/policies/runs/1/confirm-brake", "/policies/runs/1/confirm",
                                 "/policies/runs/1/cancel"])
def test_actions_need_a_login(client, url):
    resp = client.post(url)
    assert resp.status_code == 302 and resp.url.startswith("/login/")


def test_a_viewer_reads_the_list_the_policy_and_a_report(logged_in, policy):
    from hubmgr.policies import runs

    run = runs.record_dry_run(policy)
    html = logged_in.get("/policies/").content.decode()
    assert f'href="/policies/{policy.pk}/"' in html and "New policy" not in html
    assert 'href="/policies/"' in html  # the navigation
    page = logged_in.get(f"/policies/{policy.pk}/").content.decode()
    assert "team/*" in page and "Run now" not in page and ">Edit<" not in page
    assert 'id="dry-run"' in page  # which changes nothing
    assert f'href="/policies/runs/{run.pk}/"' in page
    assert logged_in.get(f"/policies/runs/{run.pk}/").status_code == 200


def test_a_viewer_may_not_create_change_run_or_delete(logged_in, policy):
    pk = policy.pk
    for url in ["/policies/new", f"/policies/{pk}/edit", f"/policies/{pk}/delete"]:
        resp = logged_in.get(url)
        assert resp.status_code == 403, url
        assert "not create, change, run or delete them" in resp.content.decode(), url
        assert "not delete from it" not in resp.content.decode(), url
    for url in ["/policies/new", f"/policies/{pk}/edit", f"/policies/{pk}/delete",
                f"/policies/{pk}/run", "/policies/preview"]:
        assert logged_in.post(url, {**BUILDS, "name": "other"}).status_code == 403, url
    assert CleanupPolicy.objects.get().name == "builds" and not PolicyRun.objects.exists()
    assert PolicyAudit.objects.count() == 1


def test_a_viewer_may_dry_run_which_records_and_deletes_nothing(logged_in, policy, inventory):
    from hubmgr.inventory.models import Manifest

    manifests = Manifest.objects.count()
    resp = logged_in.post(f"/policies/{policy.pk}/dry-run", **HTMX)
    html = resp.content.decode()
    assert resp.status_code == 200 and "<html" not in html
    assert "Dry run: what it would remove now" in html and "4.0 kB" in html
    assert not PolicyRun.objects.exists() and Manifest.objects.count() == manifests


def test_unknown_ids_are_404(maint):
    for url in ["/policies/99/", "/policies/runs/99/", "/policies/99/edit",
                "/policies/99/delete"]:
        assert maint.get(url).status_code == 404, url
    for url in ["/policies/99/dry-run", "/policies/99/run", "/policies/99/delete",
                "/policies/runs/99/confirm-brake", "/policies/runs/99/confirm",
                "/policies/runs/99/cancel"]:
        assert maint.post(url).status_code == 404, url


def test_wrong_methods_are_405(maint, policy):
    assert maint.post("/policies/").status_code == 405
    assert maint.get(f"/policies/{policy.pk}/run").status_code == 405
    assert maint.get(f"/policies/{policy.pk}/dry-run").status_code == 405
    assert maint.get("/policies/preview").status_code == 405
    assert maint.get("/policies/runs/1/confirm-brake").status_code == 405
    assert maint.get("/policies/runs/1/confirm").status_code == 405
    assert maint.get("/policies/runs/1/cancel").status_code == 405


def test_posts_need_the_csrf_token(maintainer, policy):
    client = Client(enforce_csrf_checks=True)
    client.force_login(maintainer)
    for url in ["/policies/new", f"/policies/{policy.pk}/run", f"/policies/{policy.pk}/delete",
                "/policies/preview"]:
        assert client.post(url, BUILDS).status_code == 403, url
    assert CleanupPolicy.objects.count() == 1 and not PolicyRun.objects.exists()


# ---- the list ---------------------------------------------------------------------------------
def test_the_list_shows_schedule_mode_and_the_last_run(maint, policy, inventory):
    from hubmgr.policies import runs

    runs.record_dry_run(policy)
    newest = runs.record_dry_run(policy)
    html = maint.get("/policies/").content.decode()
    assert "New policy" in html and "Report only" in html and "Off" in html
    assert f'href="/policies/runs/{newest.pk}/"' in html and "4.0 kB" in html


def test_the_list_says_when_there_is_none(maint):
    assert "No cleanup policies yet" in maint.get("/policies/").content.decode()


# ---- a policy's page, dry run, run now -------------------------------------------------------
def test_the_dry_run_shows_the_bounded_report_inline_and_records_nothing(maint, policy,
                                                                         inventory):
    resp = maint.post(f"/policies/{policy.pk}/dry-run", **HTMX)
    html = resp.content.decode()
    assert resp.status_code == 200 and "<html" not in html
    assert "4.0 kB" in html and 'data-repository="team/app"' in html
    assert digest("build0")[7:19] in html and "one of the 2 most recently pushed" in html
    assert "Protected by a keep rule (2)" in html
    assert not PolicyRun.objects.exists()


def test_run_history_is_latest_first_and_capped(maint, policy, monkeypatch):
    from hubmgr.web import policy_pages

    monkeypatch.setattr(policy_pages, "MAX_RUNS", 3)
    made = [run_of(policy, status="done").pk for _ in range(5)]
    html = maint.get(f"/policies/{policy.pk}/").content.decode()
    shown = [pk for pk in made if f'href="/policies/runs/{pk}/"' in html]
    assert shown == made[2:] and html.index(f"#{made[4]}") < html.index(f"#{made[2]}")
    assert "The 3 latest runs are shown" in html


def test_run_now_while_one_runs_is_a_message_not_a_500(maint, policy):
    run_of(policy)  # running
    resp = maint.post(f"/policies/{policy.pk}/run")
    assert resp.status_code == 409 and "already running" in resp.content.decode()


def test_run_now_with_the_queue_down_is_a_message_and_records_nothing(maint, policy,
                                                                      monkeypatch):
    def down(run_id):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(tasks.execute_run, "delay", down)
    resp = maint.post(f"/policies/{policy.pk}/run")
    assert resp.status_code == 503 and "unavailable" in resp.content.decode()
    assert not PolicyRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_run_now_runs_on_a_worker_and_its_report_renders(client, maintainer, inventory,
                                                         celery_worker):
    client.force_login(maintainer)
    policy = service.save_policy(CleanupPolicy(
        name="builds", include="team/*", remove_tag_regex="^build-", remove_tag_days=0,
        remove_untagged_days=7, keep_last=2, keep_tag_regex=RELEASE, mode="delete"),
        maintainer)
    resp = client.post(f"/policies/{policy.pk}/run")
    run = PolicyRun.objects.get()
    assert resp.status_code == 302 and resp.url == f"/policies/runs/{run.pk}/"
    deadline = time.monotonic() + 20
    while run.status == PolicyRun.Status.RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
        run.refresh_from_db()
    assert run.status == PolicyRun.Status.AWAITING and not run.dry_run
    assert not run.jobs.exists()  # shown first
    client.post(f"/policies/runs/{run.pk}/confirm")
    [job] = run.jobs.all()
    html = client.get(resp.url).content.decode()
    assert "4.0 kB" in html and f'href="/jobs/{job.pk}"' in html
    for seed in ("build0", "build1", "build2", "old"):
        assert digest(seed)[7:19] in html
    assert "Protected by a keep rule (2)" in html


# ---- "Run now" in delete mode: the figures first, then Delete forever ----------------------
@pytest.fixture
def run_here(monkeypatch):
    """Runs started from the page execute at once, here, instead of on a worker."""
    monkeypatch.setattr(tasks.execute_run, "delay", tasks.execute_run)


def run_now(maint, policy, **changes):
    for name, value in {"mode": "delete", **changes}.items():
        setattr(policy, name, value)
    service.save_policy(policy)
    resp = maint.post(f"/policies/{policy.pk}/run")
    run = PolicyRun.objects.get(pk=resp.url.split("/")[-2])
    assert run.status == PolicyRun.Status.AWAITING
    return run


def confirm_section(html):
    start = html.index('id="confirm-run"')
    return html[start:html.index("</section>", start)]


def test_run_now_in_delete_mode_shows_the_figures_and_deletes_nothing(maint, policy,
                                                                      inventory, run_here):
    from hubmgr.deletion.models import DeletionJob

    page = maint.get(f"/policies/{policy.pk}/").content.decode()
    assert "Run now</button>" in page and "asks before deleting" not in page  # report mode
    policy.mode = "delete"
    service.save_policy(policy)
    page = maint.get(f"/policies/{policy.pk}/").content.decode()
    assert "Run now (asks before deleting)" in page
    run = run_now(maint, policy)
    html = maint.get(f"/policies/runs/{run.pk}/").content.decode()
    section = confirm_section(html)
    assert "Delete what this run found?" in section
    assert ("The run would delete 4 items in 1 of 1 covered repository, reclaiming "
            "<strong>4.0 kB</strong>.") in section
    assert '<tr data-repository="team/app">' in section and '<td class="num">4 of 9 items</td>' \
        in section
    assert 'id="delete-forever"' in section and 'id="cancel-run"' in section
    assert "Nothing has been deleted yet" in section and "re-checks each item" in section
    assert "Awaiting confirmation" in html and "Delete once confirmed" in html
    assert digest("build0")[7:19] in html  # the report, item by item, below
    assert not DeletionJob.objects.exists()

    resp = maint.post(f"/policies/runs/{run.pk}/confirm")
    assert resp.status_code == 302 and resp.url == f"/policies/runs/{run.pk}/"
    job = DeletionJob.objects.get()
    assert sorted(job.items.values_list("digest", flat=True)) == sorted(
        i["digest"] for i in run.report["repositories"][0]["going"])
    html = maint.get(resp.url).content.decode()
    section = confirm_section(html)
    assert "Confirmed by maria at" in section and f'href="/jobs/{job.pk}"' in section
    assert 'id="delete-forever"' not in html and "Delete, confirmed" in html
    again = maint.post(f"/policies/runs/{run.pk}/confirm")  # a double click
    assert again.status_code == 409 and "Already confirmed by maria" in again.content.decode()
    assert DeletionJob.objects.count() == 1


def test_delete_forever_with_htmx_answers_the_run_body(maint, policy, inventory, run_here):
    from hubmgr.deletion.models import DeletionJob

    run = run_now(maint, policy)
    resp = maint.post(f"/policies/runs/{run.pk}/confirm", **HTMX, HTTP_HX_TARGET="run-body")
    html = resp.content.decode()
    assert resp.status_code == 200 and html.lstrip().startswith('<div id="run-body"')
    assert f'href="/jobs/{DeletionJob.objects.get().pk}"' in html
    again = maint.post(f"/policies/runs/{run.pk}/cancel", **HTMX, HTTP_HX_TARGET="run-body")
    assert again.status_code == 409 and 'id="run-message"' in again.content.decode()


def test_cancel_deletes_nothing_and_says_who(maint, policy, inventory, run_here):
    run = run_now(maint, policy)
    resp = maint.post(f"/policies/runs/{run.pk}/cancel")
    assert resp.status_code == 302
    html = maint.get(resp.url).content.decode()
    assert "Not confirmed; nothing deleted" in html and "cancelled by maria" in html
    assert 'id="delete-forever"' not in html and 'id="run-again"' in html
    resp = maint.post(f"/policies/runs/{run.pk}/confirm")
    assert resp.status_code == 409 and "cancelled by maria" in resp.content.decode()
    assert not run.jobs.exists()


def test_a_plan_too_old_or_a_changed_policy_says_why_and_offers_a_fresh_run(
        maint, policy, inventory, run_here):
    run = run_now(maint, policy)
    policy.keep_last = 4
    service.save_policy(policy)
    html = maint.get(f"/policies/runs/{run.pk}/").content.decode()
    assert 'id="delete-forever"' not in html and "The policy changed after this run" in html
    assert f'action="/policies/{policy.pk}/run"' in confirm_section(html)
    resp = maint.post(f"/policies/runs/{run.pk}/confirm")
    assert resp.status_code == 409 and "run it again" in resp.content.decode()

    old = run_now(maint, policy)
    PolicyRun.objects.filter(pk=old.pk).update(finished_at=old.finished_at.replace(year=2020))
    assert "too old to confirm" in maint.get(f"/policies/runs/{old.pk}/").content.decode()
    resp = maint.post(f"/policies/runs/{old.pk}/confirm")
    assert resp.status_code == 409 and "not confirmed within 60 minutes" in resp.content.decode()
    assert PolicyRun.objects.get(pk=old.pk).status == PolicyRun.Status.UNCONFIRMED
    assert not run.jobs.exists() and not old.jobs.exists()


def test_a_viewer_sees_the_figures_but_may_not_confirm_or_cancel(client, user, maint, policy,
                                                                 inventory, run_here):
    run = run_now(maint, policy)
    client.force_login(user)
    html = client.get(f"/policies/runs/{run.pk}/").content.decode()
    assert "4.0 kB" in confirm_section(html) and 'id="delete-forever"' not in html
    assert "a maintainer can confirm this run until" in html
    for action in ("confirm", "cancel"):
        assert client.post(f"/policies/runs/{run.pk}/{action}").status_code == 403
    run.refresh_from_db()
    assert run.status == PolicyRun.Status.AWAITING and not run.jobs.exists()


def test_confirming_and_cancelling_need_the_csrf_token(maintainer, maint, policy, inventory,
                                                      run_here):
    run = run_now(maint, policy)
    client = Client(enforce_csrf_checks=True)
    client.force_login(maintainer)
    for action in ("confirm", "cancel"):
        assert client.post(f"/policies/runs/{run.pk}/{action}").status_code == 403
    assert PolicyRun.objects.get(pk=run.pk).status == PolicyRun.Status.AWAITING


def test_runs_that_do_not_wait_cannot_be_confirmed_never_a_500(maint, policy, inventory):
    from hubmgr.policies import runs

    done = runs.record_dry_run(policy)
    for action in ("confirm", "cancel"):
        resp = maint.post(f"/policies/runs/{done.pk}/{action}")
        assert resp.status_code == 409 and "does not wait for a confirmation" in \
            resp.content.decode()
    failed = run_of(policy, dry_run=False, confirm_first=True, status="failed", error="boom")
    assert 'id="confirm-run"' not in maint.get(f"/policies/runs/{failed.pk}/").content.decode()
    running = run_of(policy, dry_run=False, confirm_first=True)
    resp = maint.post(f"/policies/runs/{running.pk}/confirm")
    assert resp.status_code == 409 and "still planning" in resp.content.decode()
    assert "nothing is deleted until a maintainer confirms" in maint.get(
        f"/policies/runs/{running.pk}/").content.decode()


# ---- a run's report ---------------------------------------------------------------------------
def test_a_report_lists_are_bounded_with_and_n_more(maint, policy, monkeypatch):
    from hubmgr.policies import reports

    monkeypatch.setattr(reports, "MAX_LISTED_ITEMS", 2)
    going = [{"digest": digest(f"g{n}"), "type": "image", "tags": [], "size": 10,
              "reason": "selected", "parents": [], "rule": "untagged"} for n in range(5)]
    report = {"policy": "builds", "rules": {"remove": {"untagged": "untagged for more than 7 "
                                                                   "days"}, "keep": {}},
              "note": "cascade", "repositories": [{
                  "repository": "team/app", "items": 9, "selected": 5, "going": going,
                  "protected": [], "kept": [], "unread": [], "reclaim_bytes": 2_500_000,
                  "brake": None, "job": None}],
              "totals": {"repositories": 1, "planned": 1, "going": 5, "protected": 0,
                         "kept": 0, "reclaim_bytes": 2_500_000, "braked": 0,
                         "braked_going": 0, "braked_reclaim_bytes": 0}}
    run = run_of(policy, status="done", report=report)
    html = maint.get(f"/policies/runs/{run.pk}/").content.decode()
    assert "and 3 more" in html and "2.5 MB" in html and "untagged for more than 7" in html
    by_digest = sorted(item["digest"] for item in going)  # (untagged: listed by digest)
    assert by_digest[1][7:19] in html and by_digest[2][7:19] not in html


def test_a_running_run_says_so_and_a_failed_one_says_why(maint, policy):
    running = run_of(policy)
    html = maint.get(f"/policies/runs/{running.pk}/").content.decode()
    assert "in progress" in html and 'hx-trigger="every 2s"' in html
    polled = maint.get(f"/policies/runs/{running.pk}/", **HTMX, HTTP_HX_TARGET="run-body")
    assert polled.content.decode().lstrip().startswith('<div id="run-body"')
    failed = run_of(policy, status="failed", error="Interrupted: the process stopped")
    html = maint.get(f"/policies/runs/{failed.pk}/").content.decode()
    assert "Interrupted: the process stopped" in html and "every 2s" not in html


# ---- the form ---------------------------------------------------------------------------------
def test_creating_a_policy_with_the_form_is_audited(maint, maintainer):
    resp = maint.post("/policies/new", BUILDS)
    policy = CleanupPolicy.objects.get()
    assert resp.status_code == 302 and resp.url == f"/policies/{policy.pk}/"
    assert (policy.mode, policy.keep_last, policy.created_by) == ("report", 2, maintainer)
    [audit] = PolicyAudit.objects.all()
    assert (audit.action, audit.user, audit.after["name"]) == ("create", maintainer, "builds")


def test_editing_a_policy_is_audited_with_before_and_after(maint, policy):
    assert maint.get(f"/policies/{policy.pk}/edit").status_code == 200
    resp = maint.post(f"/policies/{policy.pk}/edit", {**BUILDS, "keep_last": "5"})
    assert resp.status_code == 302
    audit = PolicyAudit.objects.filter(action="change").get()
    assert (audit.before["keep_last"], audit.after["keep_last"]) == (2, 5)


@pytest.mark.parametrize("change, field, message", [
    ({"remove_tag_regex": "(unclosed"}, "remove_tag_regex", "missing )"),
    ({"keep_tag_regex": "(a)\\1"}, "keep_tag_regex", ""),
    ({"include": "!"}, "include", "names no repositories"),
    ({"remove_tag_days": ""}, "remove_tag_days", "both an expression and a number of days"),
    ({"schedule": "daily"}, "run_at", "needs a time of day"),
    ({"name": ""}, "name", "required"),
])
def test_invalid_input_shows_the_field_error_and_saves_nothing(maint, change, field, message):
    resp = maint.post("/policies/new", {**BUILDS, **change})
    html = resp.content.decode()
    assert resp.status_code == 200 and f'id="error-{field}"' in html
    assert message in html
    assert not CleanupPolicy.objects.exists() and not PolicyAudit.objects.exists()


def test_too_long_globs_are_a_field_error(maint):
    resp = maint.post("/policies/new", {**BUILDS, "include": "team/*\n" * 2000})
    assert resp.status_code == 200 and 'id="error-include"' in resp.content.decode()


def test_a_taken_name_is_a_field_error(maint, policy):
    resp = maint.post("/policies/new", BUILDS)
    assert resp.status_code == 200 and 'id="error-name"' in resp.content.decode()


def field_block(html, name):
    """The form's block of field ``name``: its label, input, error and help."""
    start = html.index(f'<label for="id_{name}"')
    start = html.rindex('<div class="field', 0, start)
    return html[start:html.index('<div class="field', start + 1)]


def test_an_empty_brake_share_is_an_error_next_to_it_and_keeps_the_rest(maint):
    resp = maint.post("/policies/new", {**BUILDS, "brake_share": ""})
    html = resp.content.decode()
    assert resp.status_code == 200 and not CleanupPolicy.objects.exists()
    block = field_block(html, "brake_share")
    assert 'id="error-brake_share">This field is required.</div>' in block
    assert "autofocus" in block and 'aria-invalid="true"' in block
    assert html.count("autofocus") == 1  # the first field in error, and no other
    assert '<a href="#id_brake_share">Brake share (%)</a>: This field is required.' in html
    assert 'value="builds"' in field_block(html, "name")  # what was typed is kept
    assert 'team/*</textarea>' in field_block(html, "include")
    assert 'value="2"' in field_block(html, "keep_last")
    assert "load, input" in html  # the live preview shows these values again once loaded


def test_the_brake_share_is_a_percentage_stored_as_a_fraction(maint, policy):
    resp = maint.post("/policies/new", {**BUILDS, "name": "ninety", "brake_share": "90"})
    assert resp.status_code == 302
    assert CleanupPolicy.objects.get(name="ninety").brake_share == 0.9
    form = maint.get(f"/policies/{policy.pk}/edit").content.decode()
    assert 'value="50"' in field_block(form, "brake_share")  # the model's 0.5, in per cent
    new = maint.get("/policies/new").content.decode()
    assert 'value="50"' in field_block(new, "brake_share")  # the default, in per cent too
    maint.post(f"/policies/{policy.pk}/edit", {**BUILDS, "brake_share": "12.5"})
    policy.refresh_from_db()
    assert policy.brake_share == 0.125
    page = maint.get(f"/policies/{policy.pk}/").content.decode()
    assert "<del>50%</del> → <ins>12.5%</ins>" in page  # the audit says it as the form does


@pytest.mark.parametrize("value, message", [
    ("150", "less than or equal to 100"), ("-1", "greater than or equal to 0"),
    ("ninety", "Enter a number."), ("nan", "Enter a number.")])
def test_a_brake_share_out_of_range_is_an_error_next_to_it(maint, value, message):
    resp = maint.post("/policies/new", {**BUILDS, "brake_share": value})
    html = resp.content.decode()
    assert resp.status_code == 200 and not CleanupPolicy.objects.exists()
    assert message in field_block(html, "brake_share")
    assert "1.0" not in field_block(html, "brake_share")  # no fraction is asked for
    assert f'value="{value}"' in field_block(html, "brake_share")


def test_saving_with_htmx_swaps_the_form_alone_or_goes_to_the_policy(maint):
    resp = maint.post("/policies/new", {**BUILDS, "remove_tag_regex": "(x"}, **HTMX)
    html = resp.content.decode()
    assert resp.status_code == 200 and html.lstrip().startswith('<form method="post" '
                                                                'id="policy-form"')
    assert 'id="policy-preview"' not in html and 'id="error-remove_tag_regex"' in html
    assert "load, input" not in html  # the preview beside it stays as it was
    assert not CleanupPolicy.objects.exists()
    resp = maint.post("/policies/new", BUILDS, **HTMX)
    policy = CleanupPolicy.objects.get()
    assert resp.status_code == 200 and resp["HX-Redirect"] == f"/policies/{policy.pk}/"


def test_the_live_preview_counts_what_would_go_without_saving(maint, inventory):
    resp = maint.post("/policies/preview", {**BUILDS, "name": ""}, **HTMX)
    html = resp.content.decode()
    assert resp.status_code == 200 and "<html" not in html and 'id="policy-preview"' in html
    assert "4 items in 1 of 1 covered repository" in html and "4.0 kB" in html
    assert '<td class="num">4 of 9 items</td>' in html and "other/x" not in html
    assert not CleanupPolicy.objects.exists() and not PolicyAudit.objects.exists()


def test_the_live_preview_shows_the_errors_of_invalid_input(maint, inventory):
    resp = maint.post("/policies/preview", {**BUILDS, "remove_tag_regex": "(x"}, **HTMX)
    html = resp.content.decode()
    assert "Fix these to see a preview" in html and 'href="#id_remove_tag_regex"' in html
    # Only the status line is replaced: the figures of the last valid settings stay.
    assert html.startswith('<div id="preview-status"') and "preview-totals" not in html
    assert (resp["HX-Retarget"], resp["HX-Reswap"]) == ("#preview-status", "outerHTML")
    html = maint.post("/policies/preview", {**BUILDS, "brake_share": ""},
                      **HTMX).content.decode()
    assert '<a href="#id_brake_share">Brake share (%)</a>: This field is required.' in html


# ---- delete -----------------------------------------------------------------------------------
def test_deleting_asks_first_then_deletes_and_audits(maint, policy, maintainer):
    html = maint.get(f"/policies/{policy.pk}/delete").content.decode()
    assert "Delete the policy builds?" in html and CleanupPolicy.objects.exists()
    resp = maint.post(f"/policies/{policy.pk}/delete")
    assert resp.status_code == 302 and resp.url == "/policies/"
    assert not CleanupPolicy.objects.exists()
    assert PolicyAudit.objects.filter(action="delete", user=maintainer).exists()


def test_a_running_policy_is_not_deleted(maint, policy):
    run_of(policy)
    resp = maint.post(f"/policies/{policy.pk}/delete")
    assert resp.status_code == 409 and CleanupPolicy.objects.exists()


# ---- confirming what the brake stopped ------------------------------------------------------
def braked(policy, **changes):
    """A recorded run of ``policy`` in delete mode that the brake stops: team/app would lose 4
    items (4.0 kB), more than the limit of 1."""
    from hubmgr.policies import runs

    for name, value in {"mode": "delete", "brake_count": 1, **changes}.items():
        setattr(policy, name, value)
    service.save_policy(policy)
    run = runs.record_run(policy, delete=True)
    assert run.status == PolicyRun.Status.BRAKED
    return run


def test_a_maintainer_confirms_the_brake_and_sees_the_jobs_it_started(maint, policy,
                                                                      inventory):
    from hubmgr.deletion.models import DeletionJob

    run = braked(policy)
    html = maint.get(f"/policies/runs/{run.pk}/").content.decode()
    assert 'id="confirm-brake"' in html and "Confirm and delete" in html
    section = html[html.index('id="brake"'):html.index("</section>", html.index('id="brake"'))]
    assert "held back 4 items, <strong>4.0 kB</strong>" in section
    assert "4 items, 4.0 kB. Each job re-checks its plan" in section
    assert "preview-snapshot rule" in section and "anything tagged or referenced" in section
    resp = maint.post(f"/policies/runs/{run.pk}/confirm-brake")
    assert resp.status_code == 302 and resp.url == f"/policies/runs/{run.pk}/"
    job = DeletionJob.objects.get()
    html = maint.get(resp.url).content.decode()
    assert "Confirmed by maria at" in html and f'href="/jobs/{job.pk}"' in html
    assert f"Confirmed by maria: its plan became deletion job #{job.pk}." in html
    assert "Nothing was deleted" not in html and "nothing was deleted" not in html
    assert 'id="confirm-brake"' not in html
    again = maint.post(f"/policies/runs/{run.pk}/confirm-brake")  # a double click
    assert again.status_code == 409 and "Already confirmed by maria" in again.content.decode()
    assert DeletionJob.objects.count() == 1


def test_confirming_with_htmx_answers_the_run_body_with_its_jobs(maint, policy, inventory):
    from hubmgr.deletion.models import DeletionJob

    run = braked(policy)
    resp = maint.post(f"/policies/runs/{run.pk}/confirm-brake", **HTMX,
                      HTTP_HX_TARGET="run-body")
    html = resp.content.decode()
    assert resp.status_code == 200 and html.lstrip().startswith('<div id="run-body"')
    assert f'href="/jobs/{DeletionJob.objects.get().pk}"' in html and "Confirmed by" in html
    again = maint.post(f"/policies/runs/{run.pk}/confirm-brake", **HTMX,
                       HTTP_HX_TARGET="run-body")
    assert again.status_code == 409 and 'role="alert" id="run-message"' in again.content.decode()


def test_a_viewer_sees_no_confirm_button_and_may_not_confirm(client, user, policy, inventory):
    run = braked(policy)
    client.force_login(user)
    html = client.get(f"/policies/runs/{run.pk}/").content.decode()
    assert "held back 4 items" in html and 'id="confirm-brake"' not in html
    assert "A maintainer can confirm this run" in html
    assert client.post(f"/policies/runs/{run.pk}/confirm-brake").status_code == 403
    assert not run.jobs.exists()


def test_confirming_needs_the_csrf_token(maintainer, policy, inventory):
    run = braked(policy)
    client = Client(enforce_csrf_checks=True)
    client.force_login(maintainer)
    assert client.post(f"/policies/runs/{run.pk}/confirm-brake").status_code == 403
    assert not run.jobs.exists()


def test_a_run_that_cannot_be_confirmed_says_why_never_a_500(maint, policy, inventory):
    from hubmgr.policies import runs

    report_only = runs.record_dry_run(policy)
    resp = maint.post(f"/policies/runs/{report_only.pk}/confirm-brake")
    assert resp.status_code == 409 and "report mode" in resp.content.decode()
    run = braked(policy)
    service.save_policy(CleanupPolicy.objects.get(pk=policy.pk), None)  # unchanged: no audit
    assert 'id="confirm-brake"' in maint.get(f"/policies/runs/{run.pk}/").content.decode()
    policy.keep_last = 4
    service.save_policy(policy)
    html = maint.get(f"/policies/runs/{run.pk}/").content.decode()
    assert 'id="confirm-brake"' not in html and "The policy changed after this run" in html
    resp = maint.post(f"/policies/runs/{run.pk}/confirm-brake")
    assert resp.status_code == 409 and "run it again" in resp.content.decode()
    PolicyRun.objects.filter(pk=run.pk).update(finished_at=run.finished_at.replace(year=2020))
    resp = maint.post(f"/policies/runs/{run.pk}/confirm-brake")
    assert resp.status_code == 409 and "too old to confirm" in resp.content.decode()
    assert not run.jobs.exists()


# ---- the audit history on a policy's page ---------------------------------------------------
def test_everyone_sees_the_changes_newest_first_with_before_and_after(logged_in, policy,
                                                                     maintainer):
    policy.keep_last, policy.mode = 5, "delete"
    service.save_policy(policy, maintainer)
    html = logged_in.get(f"/policies/{policy.pk}/").content.decode()
    changes = html[html.index('id="changes"'):]
    assert "<del>2</del> → <ins>5</ins>" in changes and "Keep last" in changes
    assert "Mode: <del>Report only</del> → <ins>Delete</ins>" in changes
    assert changes.index("Changed") < changes.index("Created")  # newest first
    assert "maria" in changes and "Name: <ins>builds</ins>" in changes


def test_the_changes_shown_are_bounded_with_a_count(maint, policy, monkeypatch):
    from hubmgr.web import policy_pages

    monkeypatch.setattr(policy_pages, "MAX_AUDIT", 3)
    for n in range(4):
        policy.keep_last = 10 + n
        service.save_policy(policy)
    html = maint.get(f"/policies/{policy.pk}/").content.decode()
    assert "The 3 latest of 5 changes are shown" in html
    assert "<ins>13</ins>" in html and "<ins>11</ins>" in html and "<ins>10</ins>" not in html


# ---- counts that say what they count (issue 23) ---------------------------------------------
ALPINE = {**BUILDS, "name": "", "include": "library/*", "remove_tag_regex": "",
          "remove_tag_days": "", "remove_untagged_days": "7", "keep_last": "",
          "keep_tag_regex": "", "brake_share": "100"}


@pytest.fixture
def alpine(db):
    from tests.support.factories import alpine_inventory

    return alpine_inventory()


def alpine_policy(**fields):
    return service.save_policy(CleanupPolicy(
        name="alpine", include="library/*", remove_untagged_days=7, brake_share=1.0,
        **fields))


def figures_row(html, repository):
    start = html.index(f'<tr data-repository="{repository}">')
    return html[start:html.index("</tr>", start)]


def test_the_live_preview_counts_an_index_apart_from_its_children(maint, alpine):
    html = maint.post("/policies/preview", ALPINE, **HTMX).content.decode()
    assert ('<td class="num">1 of 3 items, with its 2 child images</td>'
            in figures_row(html, "library/alpine"))
    assert ('id="preview-totals">1 item, with its 2 child images, in 1 of 1 covered '
            "repository: <strong>") in html
    assert "3 of 3" not in html and "3 items" not in html.replace("of 3 items", "")


def test_a_report_counts_an_index_apart_from_its_children(maint, alpine):
    from hubmgr.policies import runs

    policy = alpine_policy()
    inline = maint.post(f"/policies/{policy.pk}/dry-run", **HTMX).content.decode()
    run = runs.record_dry_run(policy)
    page = maint.get(f"/policies/runs/{run.pk}/").content.decode()
    for html in (inline, page):
        assert ('<a href="/repositories/library/alpine">library/alpine</a>: 1 of 3 items, '
                "with its 2 child images, 2.0 kB</h3>") in html
        assert "<h4>Goes: 1 item, with its 2 child images</h4>" in html
        assert ("1 item, with its 2 child images, goes from 1 of 1 covered repository, "
                "reclaiming <strong>2.0 kB</strong>") in html
    assert '<dd id="run-kind">Report only: nothing is deleted</dd>' in page
    assert "would free 2.0 kB" in maint.get("/policies/").content.decode()


def test_a_report_mode_run_the_brake_stopped_says_what_it_held_back(maint, policy,
                                                                     inventory):
    from hubmgr.policies import runs

    policy.brake_count = 1
    service.save_policy(policy)
    run = runs.record_dry_run(policy)
    assert run.status == PolicyRun.Status.BRAKED
    html = maint.get(f"/policies/runs/{run.pk}/").content.decode()
    assert "0 items go" not in html and "Goes" not in html
    assert ("Nothing goes but what the brake stopped; 2 protected by a keep rule, 0 kept by "
            "the planner. The brake stopped 1 repository, holding back 4 items (4.0 kB).") \
        in html
    assert "4 of 9 items, 4.0 kB, held back by the brake</h3>" in html
    assert "<h4>Would go, held back by the brake: 4 items</h4>" in html
    listed = maint.get("/policies/").content.decode()
    assert "would free 0 B; the brake holds back 4.0 kB" in listed


def finish(job, freed_bytes):
    """``job`` done as a worker would leave it: every item deleted, ``freed_bytes`` freed
    and waiting for the garbage collector."""
    from hubmgr.deletion.models import DeletionJob, ItemStatus, JobStatus, ReclaimState

    job.items.update(status=ItemStatus.DONE)
    DeletionJob.objects.filter(pk=job.pk).update(
        status=JobStatus.DONE, reclaim_state=ReclaimState.PENDING, freed_bytes=freed_bytes)


def reclaim_cells(maint, policy):
    """The policy's reclaim as the policies list and the overview show it."""
    listed = maint.get("/policies/").content.decode()
    overview = maint.get("/").content.decode().split('id="policy-figures"')[1]
    cells = []
    for html in (listed, overview):
        row = html[html.index(f'href="/policies/{policy.pk}/"'):]
        last = row[:row.index("</tr>")].rsplit("<td", 1)[1]  # (whatever its attributes)
        cells.append(last.split(">", 1)[1].split("</td>")[0])
    return cells


def test_a_confirmed_brake_shows_what_its_jobs_deleted_and_freed_everywhere(maint, policy,
                                                                           inventory):
    from hubmgr.deletion.models import DeletionJob

    run = braked(policy)
    html = maint.get(f"/policies/runs/{run.pk}/").content.decode()
    assert ('<dd id="run-kind">Delete: the brake stopped 1 repository, where nothing was '
            "deleted</dd>") in html and 'id="run-deleted"' not in html
    assert reclaim_cells(maint, policy) == ["nothing deleted; the brake holds back 4.0 kB"] * 2

    assert maint.post(f"/policies/runs/{run.pk}/confirm-brake").status_code == 302
    job = DeletionJob.objects.get()
    html = maint.get(f"/policies/runs/{run.pk}/").content.decode()
    assert ('<dd id="run-deleted">0 items so far: 1 of its 1 deletion job still deleting, '
            "whose plans free 4.0 kB</dd>") in html
    assert reclaim_cells(maint, policy) == ["deleting, 4.0 kB planned"] * 2

    finish(job, freed_bytes=3_500)  # (less than planned: a layer got another user meanwhile)
    html = maint.get(f"/policies/runs/{run.pk}/").content.decode()
    assert ('<dd id="run-kind">Delete: the brake stopped 1 repository, whose plans became '
            "deletion jobs once a maintainer confirmed them</dd>") in html
    assert ('<dd id="run-deleted">4 items, freeing 3.5 kB, by its 1 deletion job</dd>'
            in html)
    assert ("holding back 4 items (4.0 kB), which a maintainer then confirmed: its plan "
            "became a deletion job.") in html
    assert "reclaiming <strong>0 B</strong>" not in html
    assert reclaim_cells(maint, policy) == ["freed 3.5 kB"] * 2
    page = maint.get(f"/policies/{policy.pk}/").content.decode()
    assert '>freed 3.5 kB</td>' in page  # (the runs table's Reclaim cell)


def test_a_run_now_shows_would_free_until_confirmed_then_what_its_jobs_freed(
        maint, policy, inventory, run_here):
    from hubmgr.deletion.models import DeletionJob

    run = run_now(maint, policy)
    assert reclaim_cells(maint, policy) == ["would free 4.0 kB"] * 2
    maint.post(f"/policies/runs/{run.pk}/confirm")
    finish(DeletionJob.objects.get(), freed_bytes=4_000)
    html = maint.get(f"/policies/runs/{run.pk}/").content.decode()
    assert ('<dd id="run-kind">Delete, confirmed: each repository&#x27;s plan with something '
            "to delete became a deletion job</dd>") in html
    assert '<dd id="run-deleted">4 items, freeing 4.0 kB, by its 1 deletion job</dd>' in html
    assert reclaim_cells(maint, policy) == ["freed 4.0 kB"] * 2

    cancelled = run_now(maint, policy)
    maint.post(f"/policies/runs/{cancelled.pk}/cancel")
    html = maint.get(f"/policies/runs/{cancelled.pk}/").content.decode()
    assert ('<dd id="run-kind">Delete once confirmed: not confirmed, so nothing was '
            "deleted</dd>") in html
    assert reclaim_cells(maint, policy) == [
        "nothing: not confirmed (would have freed 4.0 kB)"] * 2


def test_a_report_recorded_before_the_counts_renders_them(maint, alpine):
    from hubmgr.policies import runs

    run = runs.record_dry_run(alpine_policy())
    keys = ("going_items", "going_children", "going_attached")
    old = {**run.report,
           "repositories": [{k: v for k, v in e.items() if k not in keys}
                            for e in run.report["repositories"]],
           "totals": {k: v for k, v in run.report["totals"].items()
                      if k not in keys + ("braked_going_items",)}}
    PolicyRun.objects.filter(pk=run.pk).update(report=old)
    resp = maint.get(f"/policies/runs/{run.pk}/")
    html = resp.content.decode()
    assert resp.status_code == 200 and "1 of 3 items, with its 2 child images, 2.0 kB" in html
    assert "1 item, with its 2 child images, goes from 1 of 1 covered repository" in html
    report = maint.get(f"/api/v1/policy-runs/{run.pk}").json()["report"]
    assert (report["repositories"][0]["going_items"], report["totals"]["going_children"]) == (
        1, 2)


# ---- run reports grouped by reason (issue 24) ------------------------------------------------
def going_item(name, tags, rule="tag", reason="selected", size=1_000):
    return {"digest": digest(name), "type": "image", "tags": tags, "size": size,
            "reason": reason, "parents": [], "rule": rule if reason == "selected" else None}


def recorded(policy, going, protected=(), kept=()):
    """A done run whose report lists ``going``, ``protected`` and ``kept`` in team/app."""
    rules = {"remove": {"tag": "every tag matches '^build-'", "untagged": "untagged for more "
                        "than 7 days"},
             "keep": {"last": "one of the 2 most recently pushed tagged items",
                      "tag": "a tag matches 'latest'"}}
    entry = {"repository": "team/app", "items": 20, "selected": len(going), "going": going,
             "protected": list(protected), "kept": list(kept), "unread": [],
             "reclaim_bytes": 5_000, "brake": None, "job": None}
    report = {"policy": "builds", "mode": "report", "rules": rules, "note": "cascade",
              "repositories": [entry],
              "totals": {"repositories": 1, "planned": 1, "going": len(going),
                         "protected": len(protected), "kept": len(kept),
                         "reclaim_bytes": 5_000, "braked": 0, "braked_going": 0,
                         "braked_reclaim_bytes": 0}}
    return run_of(policy, status="done", dry_run=True, report=report)


def groups_of(html, kind):
    """[(reason, count text, [first tag or short digest of each listed item])] of a list."""
    found = []
    for part in html.split(f'<section class="report-group {kind}">')[1:]:
        heading = part[part.index('class="group-reason">') + 21:part.index("</h5>")]
        reason, count = heading.split(' <span class="group-count">(')
        items = []
        for li in part[:part.index("</ul>")].split("<li>")[1:]:
            tag = li.split('<span class="tag">')[1].split("<")[0] if "tag" in li else None
            items.append(tag or li.split('">')[1][:12])
        found.append((reason, count.split(")")[0], items))
    return found


def test_a_report_groups_what_goes_by_reason_in_tag_order_with_counts(maint, policy):
    going = [going_item("b10", ["build-10"]), going_item("u1", [], rule="untagged"),
             going_item("b9", ["build-9", "build-x"]), going_item("b2", ["build-2"]),
             going_item("child", [], reason="unreferenced_child"), going_item("B3", ["BUILD-3"]),
             going_item("u2", [], rule="untagged")]
    run = recorded(policy, going)
    html = maint.get(f"/policies/runs/{run.pk}/").content.decode()
    untagged = sorted([digest("u1"), digest("u2")])
    assert groups_of(html, "going") == [
        ("every tag matches &#x27;^build-&#x27;", "4",
         ["build-2", "BUILD-3", "build-9", "build-10"]),
        ("untagged for more than 7 days", "2", [d[7:19] for d in untagged]),
        ("an unreferenced child of an index that goes", "1", [digest("child")[7:19]]),
    ]
    assert html.count("untagged for more than 7 days") == 1  # said once, not on every line
    assert '<span class="tag">build-9</span> <span class="tag">build-x</span> 1.0 kB' in html


def test_a_report_groups_what_is_protected_and_kept_by_reason(maint, policy):
    protected = [{"digest": digest(f"p{n}"), "tags": [f"v1.{n}"], "rule": "tag",
                  "keep": ["last"]} for n in (10, 2)]
    protected.append({"digest": digest("latest"), "tags": ["latest"], "rule": "tag",
                      "keep": ["last", "tag"]})
    kept = [{"digest": digest("k1"), "reason": "referenced by index sha256:aaa", "tags": ["a"]},
            {"digest": digest("k2"), "reason": "has its own tags: x", "tags": ["x"]},
            {"digest": digest("k3"), "reason": "referenced by index sha256:aaa", "tags": []}]
    run = recorded(policy, [going_item("b1", ["build-1"])], protected, kept)
    html = maint.get(f"/policies/runs/{run.pk}/").content.decode()
    assert groups_of(html, "protected") == [
        ("one of the 2 most recently pushed tagged items", "2", ["v1.2", "v1.10"]),
        ("one of the 2 most recently pushed tagged items; a tag matches &#x27;latest&#x27;",
         "1", ["latest"])]
    assert groups_of(html, "kept") == [
        ("has its own tags: x", "1", ["x"]),
        ("referenced by index sha256:aaa", "2", ["a", digest("k3")[7:19]])]


def test_a_report_groups_count_every_item_while_listing_the_first(maint, policy, monkeypatch):
    from hubmgr.policies import reports

    monkeypatch.setattr(reports, "MAX_LISTED_ITEMS", 4)
    going = ([going_item(f"b{n}", [f"build-{n}"]) for n in range(12, 0, -1)]
             + [going_item(f"u{n}", [], rule="untagged") for n in range(3)])
    run = recorded(policy, going)
    html = maint.get(f"/policies/runs/{run.pk}/").content.decode()
    [tagged, untagged] = groups_of(html, "going")
    assert tagged[:2] == ("every tag matches &#x27;^build-&#x27;", "12")
    assert tagged[2] == ["build-1", "build-2"] and len(untagged[2]) == 2
    assert "and 10 more" in html and "and 1 more" in html


def test_a_dry_run_cut_by_the_engine_says_its_groups_count_what_is_listed(maint, policy,
                                                                          inventory,
                                                                          monkeypatch):
    from hubmgr.policies import reports

    monkeypatch.setattr(reports, "MAX_LISTED_ITEMS", 2)  # the engine lists the first two
    html = maint.post(f"/policies/{policy.pk}/dry-run", **HTMX).content.decode()
    counts = [count for _, count, _ in groups_of(html, "going")]
    assert counts and all(count.endswith(" listed") for count in counts)
    assert sum(int(count.split()[0]) for count in counts) == 2
    assert "and 2 more, not listed here." in html


def test_a_report_recorded_without_reasons_still_renders(maint, policy):
    old = going_item("old", ["v1"])
    del old["rule"], old["reason"]
    run = recorded(policy, [old])
    resp = maint.get(f"/policies/runs/{run.pk}/")
    assert resp.status_code == 200
    assert groups_of(resp.content.decode(), "going") == [("no reason recorded", "1", ["v1"])]
