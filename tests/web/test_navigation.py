"""The navigation marks the section of the page (aria-current="page" on exactly one link), and
every page starts with a link that skips to its main content (issue 24)."""

import re

import pytest

from hubmgr.deletion import actions, jobs
from hubmgr.policies import runs, service
from hubmgr.policies.models import CleanupPolicy

from tests.support.factories import sample_repo

pytestmark = pytest.mark.django_db


def current(html):
    """The texts of the navigation's links marked as the current page."""
    nav = re.search(r'<nav aria-label="Main"[^>]*>.*?</nav>', html, re.S).group(0)
    return re.findall(r'<a href="[^"]*" aria-current="page">([^<]+)</a>', nav)


def test_each_page_marks_its_section_and_only_it(logged_in):
    repo, index, images, loose = sample_repo()
    policy = service.save_policy(CleanupPolicy(name="p", include="team/*",
                                               remove_untagged_days=7))
    run = runs.record_run(policy)
    job = jobs.create_job(repo, actions.plan_data(actions.make_plan(repo, [loose.digest])))
    expected = {
        "/": "Overview", "/repositories/": "Repositories", "/repositories/team/app":
        "Repositories", "/repositories/team/app/-/storage": "Repositories",
        "/images/": "All images", "/jobs/": "Deletion jobs", f"/jobs/{job.pk}": "Deletion jobs",
        "/policies/": "Policies", f"/policies/{policy.pk}/": "Policies",
        f"/policies/runs/{run.pk}/": "Policies", "/protected-tags/": "Protected tags",
    }
    for url, section in expected.items():
        resp = logged_in.get(url)
        assert resp.status_code == 200, url
        html = resp.content.decode()
        assert current(html) == [section], url
        assert '<a class="skip-link" href="#main">Skip to main content</a>' in html
        assert '<main id="main" tabindex="-1">' in html


def test_a_page_outside_every_section_marks_none(logged_in):
    resp = logged_in.get("/no-such-page")
    assert resp.status_code == 404 and current(resp.content.decode()) == []
