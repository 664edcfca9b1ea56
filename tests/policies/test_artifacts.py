"""Cleanup policies and artifacts (issue 22). An artifact attached to an item (a cosign tag, an
OCI 1.1 subject, a BuildKit attestation) is judged with it, never on its own: no rule selects
it, it is never untagged, it counts for no keep rule, it stays while its subject stays and goes
when its subject goes, its bytes in the reclaim. Orphaned artifacts (their subject gone) have
a remove rule of their own: in the model, the form, the API, the reports and both engines."""

import json

import pytest

from hubmgr.deletion.planner import ATTACHED, CHILD, SELECTED
from hubmgr.inventory.catalog.store import refresh
from hubmgr.policies import rules, runs
from hubmgr.policies.models import MAX_DAYS, CleanupPolicy

from tests.support.factories import (
    cosign_tag, digest, make_artifact, make_image, make_index, make_repo)
from tests.support.policies import NOW, RELEASE, cleanup, policy

def planned(p):
    """The report of planning every item, which the set-wise dry run answers alike."""
    report = runs.plan_every_item(p, now=NOW)
    assert runs.preview(p, 1000, now=NOW) == report
    for limit in (0, 1):
        bounded = runs.preview(p, limit, now=NOW)
        assert bounded["totals"] == report["totals"]
    return report


def going(entry):
    return {i["digest"]: (i["reason"], i["rule"]) for i in entry["going"]}


@pytest.mark.django_db
def test_a_referrer_pushed_by_digest_is_never_untagged_while_its_subject_stays():
    """The issue's case: "remove untagged" deleted an SBOM pushed by digest whose subject
    still exists, and removing an old build left its .sig tag pointing at nothing."""
    repo = make_repo("team/app")
    app = make_image(repo, "app", tags=["v1.0.0"], pushed=60)
    make_artifact(repo, "sbom", subject=app, kind="sbom", pushed=60)
    make_artifact(repo, "sig", tags=[cosign_tag(app.digest)], pushed=60)
    make_artifact(repo, "sarif", subject=app, kind="artifact", tags=["scan"], pushed=60)
    make_image(repo, "old", pushed=60)
    refresh(repo)
    p = policy(remove_untagged_days=0, remove_tag_regex=".", remove_tag_days=0,
               keep_tag_regex=RELEASE, brake_share=1.0)
    [r] = planned(p)["repositories"]
    assert going(r) == {digest("old"): (SELECTED, rules.REMOVE_UNTAGGED)}
    assert [i["digest"] for i in r["protected"]] == [digest("app")]
    assert r["kept"] == [] and r["items"] == 2  # what is attached is not an item


@pytest.mark.django_db
def test_an_item_that_goes_takes_what_is_attached_to_it_to_any_depth_with_its_bytes():
    repo = make_repo("team/app")
    build = make_image(repo, "build", tags=["build-1"], pushed=60, size=1000)
    make_artifact(repo, "sig", tags=[cosign_tag(build.digest)], size=300, pushed=60)
    att = make_artifact(repo, "att", subject=build, kind="attestation", size=200, pushed=60)
    make_artifact(repo, "att-sig", tags=[cosign_tag(att.digest)], size=50, pushed=60)
    make_image(repo, "keep", tags=["build-2"], pushed=1)
    refresh(repo)
    [r] = planned(policy(remove_tag_regex="^build-", remove_tag_days=30,
                         brake_share=1.0))["repositories"]
    assert going(r) == {digest("build"): (SELECTED, rules.REMOVE_TAG),
                        digest("sig"): (ATTACHED, None), digest("att"): (ATTACHED, None),
                        digest("att-sig"): (ATTACHED, None)}
    assert r["reclaim_bytes"] == 1000 + 300 + 200 + 50 and r["kept"] == []
    assert r["selected"] == 1 and r["items"] == 2


@pytest.mark.django_db
def test_an_index_takes_its_attestations_but_not_one_whose_image_stays():
    """BuildKit's attestation manifests are the index's children and attached to one of its
    images: they go with that image, and stay while it stays (here: another index uses it)."""
    repo = make_repo("team/app")
    amd, arm = make_image(repo, "amd"), make_image(repo, "arm", platform="linux/arm64")
    amd_att = make_artifact(repo, "amd-att", subject=amd, kind="attestation")
    arm_att = make_artifact(repo, "arm-att", subject=arm, kind="attestation")
    make_index(repo, "old", [amd, arm, amd_att, arm_att], tags=["build-1"], pushed=60)
    make_index(repo, "new", [arm], tags=["build-2"], pushed=1)
    refresh(repo)
    [r] = planned(policy(remove_tag_regex="^build-", remove_tag_days=30,
                         brake_share=1.0))["repositories"]
    assert going(r) == {digest("old"): (SELECTED, rules.REMOVE_TAG),
                        digest("amd"): (CHILD, None), digest("amd-att"): (ATTACHED, None)}
    assert {i["digest"] for i in r["kept"]} == {digest("arm"), digest("arm-att")}


@pytest.mark.django_db
def test_keep_last_counts_items_never_their_signatures():
    repo = make_repo("team/app")
    for n, age in enumerate((30, 20, 10)):
        build = make_image(repo, f"build{n}", tags=[f"build-{n}"], pushed=age)
        make_artifact(repo, f"sig{n}", tags=[cosign_tag(build.digest)], pushed=age - 1)
    refresh(repo)
    [r] = planned(policy(remove_tag_regex=".", remove_tag_days=0, keep_last=2,
                         brake_share=1.0))["repositories"]
    assert going(r) == {digest("build0"): (SELECTED, rules.REMOVE_TAG),
                        digest("sig0"): (ATTACHED, None)}
    assert {i["digest"] for i in r["protected"]} == {digest("build1"), digest("build2")}


@pytest.mark.django_db
def test_orphaned_artifacts_older_than_the_rule_go_with_what_is_attached_to_them():
    repo = make_repo("team/app")
    orphan = make_artifact(repo, "orphan", subject=digest("gone"), kind="sbom", pushed=30)
    make_artifact(repo, "orphan-sig", tags=[cosign_tag(orphan.digest)], pushed=30)
    make_artifact(repo, "cosign-orphan", tags=[cosign_tag(digest("gone"), "att")], pushed=30)
    make_artifact(repo, "young", subject=digest("gone"), pushed=3)
    make_image(repo, "untagged", pushed=30)
    refresh(repo)
    p = policy(remove_orphans_days=7, brake_share=1.0)
    report = planned(p)
    [r] = report["repositories"]
    assert going(r) == {digest("orphan"): (SELECTED, rules.REMOVE_ORPHANED),
                        digest("orphan-sig"): (ATTACHED, None),
                        digest("cosign-orphan"): (SELECTED, rules.REMOVE_ORPHANED)}
    assert report["rules"]["remove"] == {
        "orphaned": "an orphaned artifact (its subject is gone) older than 7 days"}
    # Named first: an untagged orphan goes as orphaned, the untagged image as untagged.
    p.remove_untagged_days = 7
    [r] = planned(p)["repositories"]
    assert going(r)[digest("orphan")] == (SELECTED, rules.REMOVE_ORPHANED)
    assert going(r)[digest("untagged")] == (SELECTED, rules.REMOVE_UNTAGGED)
    out = cleanup_of(p)
    assert f"delete   {digest('orphan-sig')}" in out and "(attached to an item that goes)" in out


def cleanup_of(p):
    from hubmgr.policies import service

    p.name = "orphans"
    service.save_policy(p)
    return cleanup("orphans", "--dry-run")


@pytest.mark.django_db
def test_the_orphan_rule_alone_is_a_policy_and_its_days_are_bounded():
    CleanupPolicy(name="o", include="**", remove_orphans_days=0).full_clean()
    with pytest.raises(Exception, match="remove_orphans_days"):
        CleanupPolicy(name="o", include="**", remove_orphans_days=MAX_DAYS + 1).full_clean()
    with pytest.raises(Exception, match="at least one remove rule"):
        CleanupPolicy(name="o", include="**").full_clean()


def api(client, method, url, body):
    return getattr(client, method)(url, json.dumps(body), content_type="application/json")


@pytest.mark.django_db
def test_the_api_sets_checks_and_clears_the_orphan_rule(maint):
    resp = api(maint, "post", "/api/v1/policies",
               {"name": "orphans", "include": "**", "remove_orphans_days": 14})
    assert resp.status_code == 201 and resp.json()["remove_orphans_days"] == 14
    url = resp.json()["url"]
    for value in (-1, MAX_DAYS + 1, "7", 1.5, True):
        resp = api(maint, "patch", url, {"remove_orphans_days": value})
        assert resp.status_code == 400 and '"remove_orphans_days"' in resp.json()["error"]
    resp = api(maint, "patch", url, {"remove_orphans_days": None})  # its only remove rule
    assert resp.status_code == 400 and "at least one remove rule" in resp.json()["error"]
    resp = api(maint, "patch", url, {"remove_orphans_days": None, "remove_stale": True})
    assert resp.status_code == 200 and resp.json()["remove_orphans_days"] is None


@pytest.mark.django_db
def test_the_form_sets_the_orphan_rule_and_the_policy_page_says_it(maint):
    resp = maint.post("/policies/new", {"name": "orphans", "include": "**", "exclude": "",
                                        "schedule": "off", "mode": "report",
                                        "remove_orphans_days": "30", "brake_share": "0.5"})
    p = CleanupPolicy.objects.get()
    assert resp.status_code == 302 and p.remove_orphans_days == 30
    html = maint.get(f"/policies/{p.pk}/").content.decode()
    assert "orphaned artifacts (their subject is gone) older than 30 days" in html
    assert 'name="remove_orphans_days"' in maint.get(f"/policies/{p.pk}/edit").content.decode()


@pytest.mark.django_db(transaction=True)
def test_against_the_registry_an_old_build_goes_with_its_signature_as_reported(
        registry, registry_client):
    """A run in delete mode deletes the old build and its cosign signature (the tag
    sha256-<hex>.sig on a simple-signing manifest), keeps the new build's, and the
    collector frees exactly the bytes the report and the set-wise dry run promised."""
    from hubmgr import devstack
    from hubmgr.inventory.models import Manifest
    from hubmgr.policies import service
    from hubmgr.policies.models import PolicyRun

    from tests.support.artifacts import push_cosign
    from tests.support.factories import days_ago
    from tests.support.helpers import image, process, sync

    c = registry_client
    old = image(c, "pol/app", tag="build-1", seed="old")["digest"]
    new = image(c, "pol/app", tag="build-2", seed="new")["digest"]
    sig = push_cosign(c, "pol/app", old, "sig").digest
    new_sig = push_cosign(c, "pol/app", new, "sig").digest
    sync()
    Manifest.objects.update(last_pushed=days_ago(40), last_pushed_source="push_event")
    Manifest.objects.filter(digest__in=[new, new_sig]).update(last_pushed=days_ago(1))
    p = service.save_policy(policy(name="pol", include="pol/app", remove_tag_regex="^build-",
                                   remove_tag_days=30, mode="delete", brake_share=1.0))
    [dry] = runs.preview(p, 100)["repositories"]
    cleanup("pol")
    run = PolicyRun.objects.filter(dry_run=False).get()
    [entry] = run.report["repositories"]
    assert going(entry) == {old: (SELECTED, rules.REMOVE_TAG), sig: (ATTACHED, None)}
    assert {k: v for k, v in entry.items() if k != "job"} == dry
    [job] = run.jobs.all()
    assert process(job) == "done"
    assert c.head_manifest("pol/app", old) is None and c.head_manifest("pol/app", sig) is None
    assert c.head_manifest("pol/app", new) and c.head_manifest("pol/app", new_sig)
    registry.stop()  # the collector runs offline
    before = devstack.blob_bytes(registry.root)
    devstack.garbage_collect(registry.config_path)
    assert before - devstack.blob_bytes(registry.root) == job.reclaim_bytes == dry[
        "reclaim_bytes"] > 0
