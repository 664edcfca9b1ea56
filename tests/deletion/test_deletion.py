"""Deletion jobs against the real registry: exact reclaim after its own garbage collector,
re-checks before each DELETE, and the registry's refusals."""

from types import SimpleNamespace

import pytest

from hubmgr import devstack
from hubmgr.deletion import jobs
from hubmgr.deletion.actions import plan_data
from hubmgr.deletion.graph import load_graph
from hubmgr.deletion.models import DeletionJob, ItemStatus, JobStatus
from hubmgr.deletion.planner import plan
from hubmgr.inventory.models import Manifest, Tag
from hubmgr.inventory.registries import client_for, default_registry
from hubmgr.registry.client import RegistryClient

from tests.support.artifacts import push_buildx_attestation
from tests.support.helpers import image, repo, sync

pytestmark = pytest.mark.django_db(transaction=True)


def run(repo_name, digests, wait=True):
    r = repo(repo_name)
    graph, selected = load_graph(r, digests)
    p = plan(graph, selected)
    job = jobs.create_job(r, plan_data(p))
    client = client_for(default_registry())
    jobs.process_job(job.pk, client, wait=wait)
    job.refresh_from_db()
    return p, job


def push_world(client):
    """Two repositories sharing a base layer; indexes sharing a child; tagged and untagged
    images."""
    base = devstack.make_layer("base", 20_000)
    c1 = devstack.push_image(client, "gc/app", [base, devstack.make_layer("c1", 3000)])
    c2 = devstack.push_image(client, "gc/app", [base, devstack.make_layer("c2", 4000)],
                             platform="linux/arm64")
    c3 = devstack.push_image(client, "gc/app", [base, devstack.make_layer("c3", 5000)],
                             platform="linux/s390x")
    # BuildKit's attestation manifest of c1 (in-toto layers), marked so on the index entry.
    pushed = push_buildx_attestation(client, "gc/app", SimpleNamespace(digest=c1["digest"]))
    att = {"mediaType": pushed.media_type, "digest": pushed.digest, "size": pushed.size,
           "platform": {"os": "unknown", "architecture": "unknown"},
           "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                           "vnd.docker.reference.digest": c1["digest"]}}
    i = devstack.push_index(client, "gc/app", [c1, c2, att], tag="1.0")
    j = devstack.push_index(client, "gc/app", [c2, c3], tag="2.0")
    solo = image(client, "gc/app", tag="solo", seed="solo")
    loose = image(client, "gc/app", seed="loose")
    other = devstack.push_image(client, "gc/other", [base, devstack.make_layer("o", 900)],
                                tag="x")
    return {"i": i, "j": j, "c1": c1["digest"], "c2": c2["digest"], "c3": c3["digest"],
            "att": att["digest"], "solo": solo["digest"], "loose": loose["digest"],
            "other": other["digest"]}


def test_garbage_collection_frees_exactly_the_reclaim_estimate(registry, registry_client):
    d = push_world(registry_client)
    sync()
    Manifest.objects.create(repository=repo("gc/app"), digest=d["loose"])  # from a push event
    sync()
    p, job = run("gc/app", [d["i"], d["loose"]])
    assert {n.digest for n, _ in p.going} == {d["i"], d["c1"], d["att"], d["loose"]}
    assert dict(p.kept)[("gc/app", d["c2"])].startswith("also referenced by index")
    assert job.status == JobStatus.DONE and job.reclaim_bytes == p.reclaim_bytes > 0
    assert set(job.items.values_list("status", flat=True)) == {ItemStatus.DONE}

    for digest in (d["i"], d["c1"], d["att"], d["loose"]):
        assert registry_client.head_manifest("gc/app", digest) is None
        assert not Manifest.objects.filter(digest=digest).exists()
    for digest in (d["j"], d["c2"], d["c3"], d["solo"]):
        assert registry_client.head_manifest("gc/app", digest) == digest
    assert registry_client.head_manifest("gc/other", d["other"]) == d["other"]

    registry.stop()  # the collector runs offline
    before = devstack.blob_bytes(registry.root)
    devstack.garbage_collect(registry.config_path)
    assert before - devstack.blob_bytes(registry.root) == p.reclaim_bytes


def test_deleting_the_last_index_frees_its_shared_child_too(registry, registry_client):
    d = push_world(registry_client)
    sync()
    p, job = run("gc/app", [d["i"], d["j"]])
    assert {n.digest for n, _ in p.going} == {d["i"], d["j"], d["c1"], d["c2"], d["c3"],
                                              d["att"]}
    registry.stop()
    before = devstack.blob_bytes(registry.root)
    devstack.garbage_collect(registry.config_path)
    assert before - devstack.blob_bytes(registry.root) == p.reclaim_bytes


def test_a_tag_added_after_the_preview_keeps_the_item(registry, registry_client):
    d = push_world(registry_client)
    sync()
    r = repo("gc/app")
    graph, selected = load_graph(r, [d["i"]])
    job = jobs.create_job(r, plan_data(plan(graph, selected)))
    child = Manifest.objects.get(repository=r, digest=d["c1"])
    Tag.objects.create(repository=r, name="pinned", manifest=child)  # as a push event would
    jobs.process_job(job.pk, client_for(default_registry()), wait=True)
    item = job.items.get(digest=d["c1"])
    assert item.status == ItemStatus.SKIPPED
    assert item.last_error == "tagged since the preview: pinned"
    assert registry_client.head_manifest("gc/app", d["c1"]) == d["c1"]
    job.refresh_from_db()
    assert job.status == JobStatus.PARTIAL


def test_a_child_whose_index_failed_is_not_deleted(registry, registry_client, settings):
    d = push_world(registry_client)
    sync()
    r = repo("gc/app")
    graph, selected = load_graph(r, [d["i"]])
    job = jobs.create_job(r, plan_data(plan(graph, selected)))
    job.items.filter(digest=d["i"]).update(status=ItemStatus.FAILED, last_error="x")
    jobs.process_job(job.pk, client_for(default_registry()), wait=True)
    assert set(job.items.exclude(digest=d["i"]).values_list("status", flat=True)) == {
        ItemStatus.SKIPPED}
    assert registry_client.head_manifest("gc/app", d["c1"]) == d["c1"]


def test_a_registry_with_deletion_disabled_fails_the_item_with_the_reason(tmp_path, settings):
    service = devstack.start_registry(tmp_path / "nodelete", delete=False)
    try:
        settings.REGISTRY_URL = service.url
        desc = image(RegistryClient(service.url), "nd/app", tag="t")
        sync()
        _, job = run("nd/app", [desc["digest"]])
        item = job.items.get()
        assert item.status == ItemStatus.FAILED and item.attempts == 1
        assert item.last_error == "the registry has deletion disabled (storage.delete.enabled)"
        assert job.status == JobStatus.FAILED
        assert Manifest.objects.filter(digest=desc["digest"]).exists()
    finally:
        service.stop()


def test_credentials_that_may_not_delete_fail_the_item(basic_registry, settings):
    settings.REGISTRY_URL = basic_registry.url
    settings.REGISTRY_USERNAME, settings.REGISTRY_PASSWORD = "robot", "s3cret"
    desc = image(RegistryClient(basic_registry.url, "robot", "s3cret"), "cred/app", tag="t")
    sync()
    settings.REGISTRY_PASSWORD = "wrong"
    _, job = run("cred/app", [desc["digest"]])
    item = job.items.get()
    assert item.status == ItemStatus.FAILED
    # Refused already when listing the tags, before any DELETE was sent.
    assert item.last_error.startswith("could not check the registry's tags first")
    assert "refused hubmgr's credentials" in item.last_error


def test_delete_command_runs_the_plan_and_waits(registry, registry_client, capsys):
    d = push_world(registry_client)
    sync()
    from django.core.management import call_command

    call_command("delete", "gc/app", "--search", "solo")
    out = capsys.readouterr().out
    assert "To delete: 1 item; 0 kept" in out and "done: 1 deleted, 0 kept, 0 failed" in out
    assert registry_client.head_manifest("gc/app", d["solo"]) is None


def test_an_image_also_in_another_repository_frees_nothing(registry, registry_client):
    layers = [devstack.make_layer("twin", 5000)]
    one = devstack.push_image(registry_client, "twin/one", layers, tag="t")
    two = devstack.push_image(registry_client, "twin/two", layers, tag="t")
    assert one["digest"] == two["digest"]
    sync()
    p, job = run("twin/one", [one["digest"]])
    assert p.reclaim_bytes == 0 and job.status == JobStatus.DONE
    assert registry_client.head_manifest("twin/two", two["digest"]) == two["digest"]
    registry.stop()
    before = devstack.blob_bytes(registry.root)
    devstack.garbage_collect(registry.config_path)
    assert devstack.blob_bytes(registry.root) == before


def confirm_and_run(repo_name, digests):
    """Preview as a user would, then change the registry (the caller), then confirm."""
    from hubmgr.deletion import actions

    r = repo(repo_name)
    found = actions.preview(r, digests, None)

    def go():
        job = actions.confirm(r, found.pk, None)
        jobs.process_job(job.pk, client_for(default_registry()), wait=True)
        job.refresh_from_db()
        return job
    return go


def test_a_tag_pushed_without_any_notification_keeps_the_image(registry, registry_client):
    d = push_world(registry_client)
    sync()
    go = confirm_and_run("gc/app", [d["solo"]])
    body = registry_client.get_manifest("gc/app", "solo")
    registry_client.put_manifest("gc/app", "hotfix", body.body, body.media_type)  # unseen
    job = go()
    item = job.items.get()
    assert item.status == ItemStatus.SKIPPED
    assert item.last_error == "tagged since the preview: hotfix (seen in the registry)"
    assert registry_client.head_manifest("gc/app", d["solo"]) == d["solo"]


def test_a_known_tag_moved_onto_the_image_keeps_it(registry, registry_client):
    d = push_world(registry_client)
    sync()
    Manifest.objects.create(repository=repo("gc/app"), digest=d["loose"])  # from a push event
    sync()
    go = confirm_and_run("gc/app", [d["loose"]])
    body = registry_client.get_manifest("gc/app", d["loose"])
    registry_client.put_manifest("gc/app", "solo", body.body, body.media_type)  # solo moves
    item = go().items.get()
    assert item.status == ItemStatus.SKIPPED and "tagged since the preview: solo" in \
        item.last_error
    assert registry_client.head_manifest("gc/app", d["loose"]) == d["loose"]


def test_a_new_index_on_a_child_keeps_the_child_and_deletes_the_rest(registry, registry_client):
    d = push_world(registry_client)
    sync()
    go = confirm_and_run("gc/app", [d["i"]])
    c1 = registry_client.get_manifest("gc/app", d["c1"])
    new_index = devstack.push_index(registry_client, "gc/app", [
        {"mediaType": c1.media_type, "digest": d["c1"], "size": len(c1.body),
         "platform": {"os": "linux", "architecture": "amd64"}}], tag="3.0")
    job = go()
    statuses = dict(job.items.values_list("digest", "status"))
    assert statuses == {d["i"]: "done", d["c1"]: "skipped", d["att"]: "skipped"}
    reason = job.items.get(digest=d["c1"]).last_error
    assert reason.startswith(f"referenced since the preview by index {new_index[:19]} (tag 3.0")
    assert registry_client.head_manifest("gc/app", d["c1"]) == d["c1"]
    # The attestation of c1 stays with it.
    assert job.items.get(digest=d["att"]).last_error == (
        f"kept: {d['c1'][:19]}, which it is attached to, was not deleted")
    assert registry_client.head_manifest("gc/app", d["att"]) == d["att"]


def test_nothing_is_deleted_while_the_registrys_tags_cannot_be_read(
        fault_proxy, registry_client, settings):
    settings.DELETE_RETRY_BASE_SECONDS = 30
    d = push_world(registry_client)
    sync()
    fault_proxy.add("GET", r"/tags/list", "status", 503)
    _, job = run("gc/app", [d["solo"]], wait=False)
    item = job.items.get()
    assert item.status == ItemStatus.RETRYING
    assert item.last_error.startswith("could not check the registry's tags first")
    assert fault_proxy.count("DELETE", r"/manifests/") == 0
    assert registry_client.head_manifest("gc/app", d["solo"]) == d["solo"]


def test_a_worker_stops_taking_items_after_its_batch_time_and_the_next_wake_up_goes_on(
        registry, registry_client):
    d = push_world(registry_client)
    sync()
    r = repo("gc/app")
    graph, selected = load_graph(r, [d["solo"], d["loose"]])
    job = jobs.create_job(r, plan_data(plan(graph, selected)))
    client = client_for(default_registry())
    status = jobs.process_job(job.pk, client, seconds=0)  # its time is up before it starts
    assert status not in DeletionJob.FINISHED
    assert set(job.items.values_list("status", flat=True)) == {ItemStatus.QUEUED}
    assert registry_client.head_manifest("gc/app", d["solo"]) == d["solo"]
    assert jobs.process_job(job.pk, client, wait=True, seconds=60) == JobStatus.DONE
