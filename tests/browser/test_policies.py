"""Cleanup policies in Chromium: create one with the form, watch its live preview, run it on a
worker and read its report; confirm what the brake stopped."""

import pytest
from playwright.sync_api import expect

from hubmgr.inventory.catalog.store import refresh
from hubmgr.policies import runs, service
from hubmgr.policies.models import CleanupPolicy

from tests.support.browser import OUTPUT, login
from tests.support.factories import make_image, make_repo, observe_pulls

def test_create_preview_run_and_read_the_report(browser, live_server, celery_worker):
    observe_pulls(400)
    repo = make_repo("team/app")
    for n in range(4):
        make_image(repo, f"build{n}", tags=[f"build-{n}"], pushed=20 - n)
    make_image(repo, "old", pushed=30, size=2_000_000)
    refresh(repo)
    page = login(browser, live_server, "maria", ["delete_images"])
    try:
        page.click("nav >> text=Policies")
        page.click("#new-policy")
        page.fill("#id_name", "untagged")
        page.fill("#id_include", "team/*")
        page.fill("#id_remove_untagged_days", "7")
        expect(page.locator("#preview-totals")).to_contain_text("1 item in 1 of 1")
        expect(page.locator("#policy-preview")).to_contain_text("2.0 MB")
        page.fill("#id_remove_tag_regex", "(unclosed")
        expect(page.locator("#policy-preview")).to_contain_text("Fix these")
        page.fill("#id_remove_tag_regex", "")
        expect(page.locator("#preview-totals")).to_be_visible()
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "policy-form-preview.png"), full_page=True)
        page.click("#save-policy")
        expect(page.locator("h1")).to_have_text("untagged")
        page.click("#dry-run")
        expect(page.locator("#dry-run-report")).to_contain_text("2.0 MB")
        page.click("#run-now")
        page.wait_for_url("**/policies/runs/*/")
        expect(page.locator("#run-status")).to_have_text("Done")
        expect(page.locator(".report-repo")).to_contain_text("untagged for more than 7 days")
        page.screenshot(path=str(OUTPUT / "policy-run-report.png"), full_page=True)
        assert page.csp_violations == []
    finally:
        page.context.close()


def test_confirm_what_the_brake_stopped_and_follow_its_job(browser, live_server):
    repo = make_repo("team/app")
    for n in range(3):
        make_image(repo, f"old{n}", pushed=30)
    refresh(repo)
    policy = service.save_policy(CleanupPolicy(name="untagged", include="team/*", mode="delete",
                                               remove_untagged_days=7, brake_count=1))
    run = runs.record_run(policy, delete=True)
    page = login(browser, live_server, "maria", ["delete_images"])
    try:
        page.goto(f"{live_server.url}/policies/runs/{run.pk}/")
        expect(page.locator("#brake")).to_contain_text("held back 3 items, 3.0 kB")
        page.click("#confirm-brake")
        expect(page.locator("#brake-confirmed")).to_contain_text("Confirmed by maria")
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "policy-brake-confirmed.png"), full_page=True)
        page.click("#brake-confirmed a")
        expect(page.locator("h1")).to_contain_text("team/app")
        assert page.csp_violations == []
    finally:
        page.context.close()


def test_run_now_in_delete_mode_shows_the_figures_first_and_cancel_deletes_nothing(
        browser, live_server, celery_worker):
    from hubmgr.deletion.models import DeletionJob

    repo = make_repo("team/app")
    for n in range(3):
        make_image(repo, f"old{n}", pushed=30)
    make_image(repo, "new", tags=["latest"], pushed=1)
    refresh(repo)
    policy = service.save_policy(CleanupPolicy(name="untagged", include="team/*", mode="delete",
                                               remove_untagged_days=7, brake_share=1.0))
    page = login(browser, live_server, "maria", ["delete_images"])
    try:
        page.goto(f"{live_server.url}/policies/{policy.pk}/")
        page.click("#run-now")
        page.wait_for_url("**/policies/runs/*/")
        expect(page.locator("#run-status")).to_have_text("Awaiting confirmation")
        expect(page.locator("#confirm-totals")).to_contain_text(
            "The run would delete 3 items in 1 of 1 covered repository, reclaiming 3.0 kB")
        expect(page.locator("#confirm-run tr[data-repository='team/app']")).to_contain_text(
            "3 of 4")
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "policy-run-confirm.png"), full_page=True)
        page.click("#cancel-run")
        expect(page.locator("#confirm-reason")).to_contain_text("cancelled by maria")
        assert not DeletionJob.objects.exists()
        page.click("#run-again")  # a fresh run, confirmed this time
        expect(page.locator("#delete-forever")).to_be_visible()
        page.click("#delete-forever")
        expect(page.locator("#run-confirmed")).to_contain_text("deletion job #")
        assert DeletionJob.objects.get().items.count() == 3
        assert page.csp_violations == []
    finally:
        page.context.close()


def in_view(page, selector):
    """``selector``'s box lies inside the viewport (the visible part of the page)."""
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return (box is not None and box["y"] >= 0 and box["y"] + box["height"] <= size["height"]
            and box["x"] >= 0 and box["x"] + box["width"] <= size["width"])


@pytest.mark.parametrize("viewport", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_the_preview_stays_in_view_while_editing_and_on_an_error(browser, live_server,
                                                                 viewport):
    repo = make_repo("team/app")
    for n in range(3):
        make_image(repo, f"old{n}", pushed=30, size=1_000_000)
    make_image(repo, "new", tags=["latest"], pushed=1)
    refresh(repo)
    policy = service.save_policy(CleanupPolicy(name="untagged", include="team/*",
                                               remove_untagged_days=7, brake_share=1.0))
    page = login(browser, live_server, "maria", ["delete_images"], viewport=viewport)
    name = "desktop" if viewport[0] > 900 else "phone"
    try:
        page.goto(f"{live_server.url}/policies/{policy.pk}/edit")
        totals = page.locator("#preview-totals")
        expect(totals).to_contain_text("3 items in 1 of 1 covered repository: 3.0 MB")
        share = page.locator("#id_brake_share")
        expect(share).to_have_value("100")  # the stored 1.0, in per cent
        form, pane = (page.locator(s).bounding_box() for s in ("#policy-form",
                                                               ".policy-preview-pane"))
        if name == "desktop":  # beside the form
            assert pane["x"] >= form["x"] + form["width"]
        else:  # below the form, but stuck to the bottom of the screen as a summary
            assert form["y"] + form["height"] > viewport[1]
            assert abs(pane["y"] + pane["height"] - viewport[1]) <= 2
            assert pane["height"] <= viewport[1] * 0.4
        assert in_view(page, "#preview-totals")
        share.scroll_into_view_if_needed()  # the form's far end: the preview is still there
        assert in_view(page, "#preview-totals") and in_view(page, "#id_brake_share")
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport[0]

        share.fill("")  # the live preview says what to fix and keeps the last figures
        expect(page.locator("#preview-status")).to_contain_text(
            "Brake share (%): This field is required.")
        expect(totals).to_contain_text("3.0 MB")
        page.fill("#id_keep_last", "1")  # also kept while saving fails: no reload
        page.click("#save-policy")
        error = page.locator("#error-brake_share")
        expect(error).to_have_text("This field is required.")
        expect(share).to_be_focused()  # the first field in error
        expect(page.locator("#form-errors")).to_contain_text("Brake share (%)")
        expect(page.locator("#id_keep_last")).to_have_value("1")
        expect(totals).to_contain_text("3.0 MB")
        assert in_view(page, "#error-brake_share") and in_view(page, "#preview-totals")
        field, message = share.bounding_box(), error.bounding_box()
        assert 0 <= message["y"] - (field["y"] + field["height"]) <= 40  # right below it
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / f"policy-form-error-{name}.png"))

        share.fill("90")
        page.click("#save-policy")
        expect(page.locator("h1")).to_have_text("untagged")
        expect(page.locator("dl.settings")).to_contain_text("more than 90% of its items")
        policy.refresh_from_db()
        assert (policy.brake_share, policy.keep_last) == (0.9, 1)
        assert page.csp_violations == []
    finally:
        page.context.close()


def test_a_viewer_dry_runs_a_policy_and_may_not_create_one(browser, live_server):
    repo = make_repo("team/app")
    make_image(repo, "old", pushed=30, size=2_000_000)
    refresh(repo)
    policy = service.save_policy(CleanupPolicy(name="untagged", include="team/*",
                                               remove_untagged_days=7))
    page = login(browser, live_server, "alice")
    try:
        page.goto(f"{live_server.url}/policies/{policy.pk}/")
        expect(page.locator("#run-now")).to_have_count(0)
        page.click("#dry-run")
        expect(page.locator("#dry-run-report")).to_contain_text("2.0 MB")
        page.goto(f"{live_server.url}/policies/new")
        expect(page.locator("main")).to_contain_text("not create, change, run or delete them")
        assert page.csp_violations == []
    finally:
        page.context.close()
