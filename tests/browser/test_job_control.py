"""The job page's Cancel and Retry failed items, in Chromium."""

from playwright.sync_api import expect

from hubmgr.deletion import actions, jobs
from hubmgr.deletion.models import DeletionJob, ItemStatus, JobStatus
from hubmgr.inventory.catalog.store import refresh

from tests.support.browser import OUTPUT
from tests.support.factories import make_image, make_repo


def a_job(name, n=3):
    repo = make_repo(name)
    images = [make_image(repo, f"{name}-{k}", tags=[f"v{k}"]) for k in range(n)]
    refresh(repo)
    plan = actions.make_plan(repo, [i.digest for i in images])
    return jobs.create_job(repo, actions.plan_data(plan, freed=True))


def test_cancel_and_retry_on_the_job_page(maintainer_page, live_server):
    page = maintainer_page
    job = a_job("team/app")
    page.goto(f"{live_server.url}/jobs/{job.pk}")
    page.once("dialog", lambda dialog: dialog.dismiss())  # "Cancel deletion #N?" — no
    page.click("#job-cancel")
    expect(page.locator("#job-cancel")).to_be_visible()
    assert DeletionJob.objects.get(pk=job.pk).cancelled_at is None
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#job-cancel")
    expect(page.locator("#job-cancelled")).to_contain_text("Cancelled by maria at")
    expect(page.locator("#job-status")).to_have_text("Cancelled")
    expect(page.locator("#job-cancel")).to_have_count(0)
    assert DeletionJob.objects.get(pk=job.pk).status == JobStatus.CANCELLED

    failed = a_job("team/other")
    for item in failed.items.all():
        jobs._finish(item, ItemStatus.FAILED, "HTTP 403: refused")
    jobs.update_status(failed)
    page.goto(f"{live_server.url}/jobs/{failed.pk}")
    page.click("#job-retry")
    page.wait_for_url(f"**/jobs/{failed.pk + 1}")
    expect(page.locator("#job-retry-of")).to_contain_text(f"deletion #{failed.pk}")
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "job-retried.png"), full_page=True)
    page.goto(f"{live_server.url}/jobs/{failed.pk}")
    expect(page.locator("#job-retried-as")).to_contain_text(f"deletion #{failed.pk + 1}")
    expect(page.locator("#job-retry")).to_have_count(0)
