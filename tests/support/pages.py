"""Every page of hubmgr with something on it, for the browser tests that visit them all (on a
phone, and with axe-core): a repository with an index, tags and long names, a second one, the
storage figures, a cleanup policy with a run, a deletion job and a protected-tag rule."""

from django.urls import NoReverseMatch, reverse

from hubmgr.deletion import actions, jobs
from hubmgr.deletion.models import ProtectedTag
from hubmgr.deletion.protection import save_rule
from hubmgr.inventory.catalog.store import refresh
from hubmgr.inventory.registries import default_registry
from hubmgr.inventory.storage import snapshots
from hubmgr.policies import runs, service
from hubmgr.policies.models import CleanupPolicy

from tests.support.factories import make_image, make_repo, observe_pulls, sample_repo

# What a maintainer who also manages protected tags may do: every control of every page shows.
PERMISSIONS = ["delete_images", "manage_protected_tags"]


def every_page():
    """[(name, path)] of every page, with rows on each. The login page is apart (it needs
    nobody logged in): LOGIN."""
    observe_pulls(400)
    repo, index, images, loose = sample_repo()
    long = make_repo("platform-team/a-service-with-a-rather-long-repository-name")
    for n in range(3):
        make_image(long, f"long{n}", tags=[f"release-candidate-build-{n:03}-linux-amd64"],
                   pushed=200 + n, pulled=190)
    refresh(long)
    snapshots.take(default_registry())
    policy = service.save_policy(CleanupPolicy(
        name="untagged and old builds", include="team/*\nplatform-team/*", exclude="team/keep",
        remove_untagged_days=7, remove_tag_regex="^release-candidate-", remove_tag_days=30,
        keep_last=1, mode="delete"))
    runs.record_run(policy)  # a report
    run = runs.execute(runs.claim_run(policy, delete=True, confirm_first=True))  # awaiting
    plan = actions.make_plan(repo, [loose.digest, images[0].digest])
    job = jobs.create_job(repo, actions.plan_data(plan, freed=True))
    save_rule(ProtectedTag(tag_regex="^latest$", repositories="team/*", note="what we ship"))
    pages = [
        ("overview", "/"),
        ("repositories", "/repositories/"),
        ("repository", f"/repositories/{repo.name}"),
        ("storage", f"/repositories/{repo.name}/-/storage"),
        ("jobs", "/jobs/"),
        ("job", f"/jobs/{job.pk}"),
        ("policies", "/policies/"),
        ("policy", f"/policies/{policy.pk}/"),
        ("run", f"/policies/runs/{run.pk}/"),
        ("policy-form", "/policies/new"),
        ("protected-tags", "/protected-tags/"),
    ]
    try:  # the registry-wide table, where this checkout has it
        pages.insert(3, ("images", reverse("images")))
    except NoReverseMatch:
        pass
    return pages


LOGIN = ("login", "/login/")
