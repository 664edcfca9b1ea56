"""Cleanup policies in Chromium: create one with the form, watch its live preview, run it on a
worker and read its report; confirm what the brake stopped."""

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
