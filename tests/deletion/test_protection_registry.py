"""Protected tags against the real registry: what a rule protects survives a deletion from
the page, from the API by digests, and by a policy in delete mode; and a job's recheck applies
the rules in force at the DELETE (a rule added, or a tag moved onto an item and protected,
after its preview)."""

import json

import pytest

from hubmgr.deletion import actions, protection
from hubmgr.deletion.models import DeletionJob, DeletionPreview, ItemStatus, ProtectedTag
from hubmgr.inventory.models import Manifest
from hubmgr.policies import runs, service
from hubmgr.policies.models import CleanupPolicy

from tests.support.factories import days_ago
from tests.support.helpers import image, process, repo, sync

pytestmark = pytest.mark.django_db(transaction=True)


def world(client):
    """pt/app: latest, build-1, build-2 (one image each)."""
    found = {tag: image(client, "pt/app", tag=tag, seed=tag)["digest"]
             for tag in ("latest", "build-1", "build-2")}
    sync()
    return found


def protect(tag_regex, repositories="**"):
    return protection.save_rule(ProtectedTag(tag_regex=tag_regex, repositories=repositories))


def in_registry(client, digest):
    return client.head_manifest("pt/app", digest) == digest


def test_a_protected_tag_survives_a_deletion_from_the_page(registry, registry_client, client,
                                                            maintainer):
    d = world(registry_client)
    protect("^latest$")
    client.force_login(maintainer)
    html = client.post("/repositories/pt/app/-/preview",
                       {"digest": [d["latest"], d["build-1"]]}).content.decode()
    assert "protected tag latest" in html
    preview = DeletionPreview.objects.get()
    assert [i["digest"] for i in preview.plan["items"]] == [d["build-1"]]
    client.post("/repositories/pt/app/-/delete", {"preview_id": str(preview.pk)})
    assert process(DeletionJob.objects.get()) == "done"
    assert in_registry(registry_client, d["latest"])
    assert not in_registry(registry_client, d["build-1"])


def test_a_protected_tag_survives_an_api_deletion_by_digests(registry, registry_client, client,
                                                              maintainer_token):
    d = world(registry_client)
    protect("^(latest|build-2)$", "pt/*")
    resp = client.post("/api/v1/repositories/pt/app/deletions",
                       json.dumps({"digests": [d["latest"], d["build-2"], d["build-1"]]}),
                       content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {maintainer_token}")
    assert resp.status_code == 202, resp.content
    job = DeletionJob.objects.get()
    assert list(job.items.values_list("digest", flat=True)) == [d["build-1"]]
    assert {k["digest"] for k in job.kept} == {d["latest"], d["build-2"]}
    assert process(job) == "done"
    assert in_registry(registry_client, d["latest"]) and in_registry(registry_client,
                                                                     d["build-2"])
    assert not in_registry(registry_client, d["build-1"])


def test_a_policy_that_selects_a_protected_tag_never_deletes_it(registry, registry_client):
    d = world(registry_client)
    Manifest.objects.update(last_pushed=days_ago(40), last_pushed_source="push_event")
    protect("^build-2$")
    policy = service.save_policy(CleanupPolicy(
        name="everything", include="pt/*", mode="delete", remove_tag_regex=".",
        remove_tag_days=30, brake_share=1.0))
    run = runs.record_run(policy, delete=True)
    [report] = run.report["repositories"]
    assert {i["digest"]: i["keep"] for i in report["protected"]} == {d["build-2"]: ["protected"]}
    [job] = run.jobs.all()
    assert process(job) == "done"
    assert in_registry(registry_client, d["build-2"])
    assert not in_registry(registry_client, d["latest"])
    assert not in_registry(registry_client, d["build-1"])


def test_the_recheck_applies_the_rules_in_force_at_the_delete(registry, registry_client):
    d = world(registry_client)
    r = repo("pt/app")
    preview = actions.preview(r, [d["build-1"], d["build-2"]], None)
    # After the preview: a rule protects build-2, and prod moves onto build-1 and is protected.
    protect("^build-2$")
    body = registry_client.get_manifest("pt/app", d["build-1"])
    registry_client.put_manifest("pt/app", "prod", body.body, body.media_type)
    protect("^prod$", "pt/**")
    job = actions.confirm(r, preview.pk, None)
    assert process(job) == "partial"
    kept = dict(job.items.values_list("digest", "last_error"))
    assert set(job.items.values_list("status", flat=True)) == {ItemStatus.SKIPPED}
    assert kept[d["build-2"]].startswith("protected tag build-2")
    assert kept[d["build-1"]].startswith("protected tag prod")
    assert "in force at the deletion" in kept[d["build-1"]]
    assert in_registry(registry_client, d["build-1"]) and in_registry(registry_client,
                                                                      d["build-2"])
