"""`sync` against a real registry: what it reads, what it keeps, what it reconciles away."""

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command

from hubmgr import devstack
from hubmgr.inventory.models import Manifest, SyncRun, Tag

from tests.support.helpers import image, multiarch, repo, row, sync

pytestmark = pytest.mark.django_db


def test_it_reads_indexes_children_tags_and_sizes(registry, registry_client):
    base = devstack.make_layer("shared", 5000)
    index, kids = multiarch(registry_client, "app/web", tag="1.0", base=base)
    registry_client.put_manifest("app/web", "latest",
                                 registry_client.get_manifest("app/web", "1.0").body,
                                 devstack.OCI_INDEX)
    plain = image(registry_client, "app/web", tag="solo", seed="solo")
    run = sync()
    assert run.error == "" and run.problems == [] and run.tags == 3

    idx = row("app/web", index)
    assert idx.kind == "index" and idx.tags == ["1.0", "latest"] and idx.is_top_level
    assert idx.platform == "linux/amd64, linux/arm64"
    children = [row("app/web", k["digest"]) for k in kids]
    assert all(not c.is_top_level and c.kind == "image" for c in children)
    assert [c.platform for c in children] == ["linux/amd64", "linux/arm64"]
    # Image size: config + layers. Index size: distinct blobs of its children (the shared
    # base layer once).
    blobs = {}
    for child in children:
        manifest = registry_client.get_manifest("app/web", child.digest).parse()
        assert child.size == sum(b.size for b in manifest.blobs)
        blobs.update({b.digest: b.size for b in manifest.blobs})
    assert idx.size == sum(blobs.values()) < sum(c.size for c in children)
    solo = row("app/web", plain["digest"])
    assert solo.tags == ["solo"] and solo.created is not None
    assert solo.last_pushed == solo.created and solo.last_pushed_source == "image_created"
    assert repo("app/web").item_count == 2


def test_a_second_sync_fetches_each_digest_once(fault_proxy, registry_client):
    multiarch(registry_client, "once/app", tag="a")
    image(registry_client, "once/app", tag="b", seed="b")
    sync()
    gets = fault_proxy.count("GET", r"/manifests/")
    configs = fault_proxy.count("GET", r"/blobs/")
    assert gets == 4 and configs == 3
    run = sync()
    assert run.manifests_fetched == 0
    assert fault_proxy.count("GET", r"/manifests/") == gets
    assert fault_proxy.count("GET", r"/blobs/") == configs


def test_tags_that_left_the_registry_are_reconciled_away(registry, registry_client):
    first = image(registry_client, "moving/app", tag="v1", seed="one")
    sync()
    second = image(registry_client, "moving/app", tag="v1", seed="two")  # v1 moves on
    sync()
    assert Tag.objects.get(name="v1").manifest.digest == second["digest"]
    # The old image is untagged but the registry still has it: it stays listed.
    old = row("moving/app", first["digest"])
    assert old.tags == [] and old.is_top_level
    registry_client.delete_manifest("moving/app", first["digest"])
    run = sync()
    assert run.removed == 1
    assert not Manifest.objects.filter(digest=first["digest"]).exists()


def test_an_untagged_image_known_from_a_push_stays_until_the_registry_says_gone(
        registry, registry_client):
    desc = image(registry_client, "untagged/app", seed="u")  # pushed by digest, no tag
    image(registry_client, "untagged/app", tag="keep", seed="k")
    sync()
    r = repo("untagged/app")
    Manifest.objects.create(repository=r, digest=desc["digest"], kind="image")
    sync()
    kept = row("untagged/app", desc["digest"])
    assert kept.fetched and kept.platform == "linux/amd64" and kept.is_top_level
    registry_client.delete_manifest("untagged/app", desc["digest"])
    sync()
    assert not Manifest.objects.filter(digest=desc["digest"]).exists()


def test_a_malformed_manifest_is_recorded_and_the_sync_goes_on(fault_proxy, registry_client):
    image(registry_client, "bad/app", tag="broken", seed="b1")
    good = image(registry_client, "bad/app", tag="fine", seed="b2")
    fault_proxy.add("GET", r"/v2/bad/app/manifests/broken", "corrupt")
    run = sync()
    assert row("bad/app", good["digest"]).tags == ["fine"]
    broken = Manifest.objects.get(tags_text="broken")
    assert "not valid JSON" in broken.error
    # The tag resolved; the manifest row carries the error, and the run says it too.
    assert run.problems == [{"reference": f"bad/app@{broken.digest}", "error": broken.error}]


def test_an_unreachable_manifest_keeps_what_we_knew(fault_proxy, registry_client):
    desc = image(registry_client, "flaky/app", tag="v1", seed="f1")
    sync()
    image(registry_client, "flaky/app", tag="v1", seed="f2")  # v1 moves
    fault_proxy.add("*", r"/v2/flaky/app/manifests/v1", "status", 503)
    run = sync()
    assert run.problems and "503" in run.problems[0]["error"]
    assert Tag.objects.get(name="v1").manifest.digest == desc["digest"]


def test_sync_command_reports_a_registry_that_is_down(settings, db):
    settings.REGISTRY_URL = f"http://127.0.0.1:{devstack.free_port()}"
    with pytest.raises(CommandError, match="Cannot connect to the registry"):
        call_command("sync", "--no-progress")
    run = SyncRun.objects.get()
    assert "Cannot connect" in run.error


def test_sync_command_for_one_repository(registry, registry_client, capsys):
    image(registry_client, "one/a", tag="t", seed="a")
    image(registry_client, "one/b", tag="t", seed="b")
    call_command("sync", "--repository", "one/a", "--no-progress")
    assert "Synced 1 repository, 1 tag;" in capsys.readouterr().out
    assert list(Manifest.objects.values_list("repository__name", flat=True)) == ["one/a"]


def test_a_repository_that_left_the_catalog_is_emptied(registry, registry_client):
    desc = image(registry_client, "gone/app", tag="t", seed="g")
    sync()
    registry_client.delete_manifest("gone/app", desc["digest"])
    sync()
    assert not Manifest.objects.filter(repository__name="gone/app").exists()


def test_an_index_whose_child_is_gone_says_so(registry, registry_client, client, user):
    index, kids = multiarch(registry_client, "holes/app", tag="1.0")
    registry_client.delete_manifest("holes/app", kids[0]["digest"])  # the index still lists it
    run = sync()
    gone = row("holes/app", kids[0]["digest"])
    assert not gone.fetched and gone.error.startswith("the registry has no such manifest (404)")
    assert row("holes/app", kids[1]["digest"]).fetched
    assert run.finished_at is not None
    sync()  # read again, still gone: still says so
    assert row("holes/app", kids[0]["digest"]).error == gone.error
    client.force_login(user)
    html = client.get(f"/repositories/holes/app/-/children/{index}").content.decode()
    assert "the registry has no such manifest (404)" in html


# ---- per-repository runs, chunks and the fan-out -------------------------------------------
def test_a_repository_is_read_in_chunks_like_in_one_go(registry, registry_client, monkeypatch):
    from hubmgr.inventory.sync import runs as sync_module

    monkeypatch.setattr(sync_module, "CHUNK_TAGS", 2)
    index, kids = multiarch(registry_client, "chunks/app", tag="multi")
    old = image(registry_client, "chunks/app", tag="t0", seed="c-old")
    for n in range(1, 5):
        image(registry_client, "chunks/app", tag=f"t{n}", seed=f"c{n}")
    assert sync().tags == 6
    registry_client.delete_manifest("chunks/app", old["digest"])
    moved = image(registry_client, "chunks/app", tag="t1", seed="c-moved")
    run = sync()
    assert run.problems == [] and run.removed == 1 and run.manifests_fetched == 1
    r = repo("chunks/app")
    assert sorted(Tag.objects.filter(repository=r).values_list("name", flat=True)) == [
        "multi", "t1", "t2", "t3", "t4"]
    assert row("chunks/app", moved["digest"]).tags == ["t1"]
    assert all(not row("chunks/app", k["digest"]).is_top_level for k in kids)
    assert r.item_count == 6 and r.tagged_count == 5  # the image t1 left stays, untagged


def test_each_repository_counts_once_and_the_last_one_closes_the_run(
        registry, registry_client):
    from hubmgr.inventory.registries import client_for, default_registry
    from hubmgr.inventory.sync import runs as sync_module

    for name in ("fan/a", "fan/b"):
        image(registry_client, name, tag="t", seed=name)
    registry_obj = default_registry()
    client = client_for(registry_obj)
    run = sync_module.open_run(registry_obj, client)
    assert run.remaining == 2 and run.finished_at is None
    sync_module.sync_repository(run, "fan/a", client, worker="w1@host")
    sync_module.sync_repository(run, "fan/a", client, worker="w2@host")  # a redelivery
    run.refresh_from_db()
    assert run.finished_at is None and run.repositories == 1 and run.tags == 1
    sync_module.sync_repository(run, "fan/b", client, worker="w2@host")
    client.close()
    run.refresh_from_db()
    assert run.finished_at is not None and run.repositories == 2 and run.tags == 2
    assert dict(run.repository_syncs.values_list("name", "worker")) == {
        "fan/a": "w1@host", "fan/b": "w2@host"}


def test_a_repository_that_fails_costs_only_itself_and_the_run_closes(
        registry, registry_client, monkeypatch):
    from hubmgr.inventory.sync import runs as sync_module

    image(registry_client, "ok/app", tag="t", seed="ok")
    image(registry_client, "poison/repo", tag="t", seed="poison")
    real = sync_module.write_chunk

    def failing(repo, *args):
        if repo.name == "poison/repo":
            raise ValueError("boom")
        return real(repo, *args)

    monkeypatch.setattr(sync_module, "write_chunk", failing)
    run = sync()
    assert run.finished_at is not None and run.error == "" and run.repositories == 2
    assert run.problems == [{"reference": "poison/repo",
                             "error": "could not be written: ValueError: boom"}]
    assert row("ok/app", Manifest.objects.get(repository__name="ok/app").digest).tags == ["t"]


def test_the_fan_out_runs_on_workers_and_a_second_waits_for_the_first(
        registry, registry_client, celery_worker):
    from hubmgr.inventory.registries import default_registry
    from hubmgr.inventory.tasks import fan_out, reconcile

    for name in ("queued/a", "queued/b", "queued/c"):
        image(registry_client, name, tag="t", seed=name)
    run_id = reconcile()  # lists the catalog here, queues a task per repository
    devstack.wait_for(lambda: SyncRun.objects.filter(pk=run_id, finished_at__isnull=False)
                      .exists(), "the fanned-out run", timeout=60)
    run = SyncRun.objects.get(pk=run_id)
    assert run.repositories == 3 and run.tags == 3 and run.problems == []
    assert all(run.repository_syncs.values_list("worker", flat=True))
    assert Tag.objects.count() == 3
    # A run still going (its tasks queued) makes the next reconcile wait; one that made no
    # progress for hours is closed as abandoned, and a new one starts.
    stuck = SyncRun.objects.create(registry=default_registry(), remaining=1)
    assert fan_out(default_registry()) is None
    SyncRun.objects.filter(pk=stuck.pk).update(started_at=stuck.started_at - timedelta(hours=4))
    assert fan_out(default_registry()) is not None
    stuck.refresh_from_db()
    assert stuck.finished_at is not None and stuck.error.startswith("abandoned")


def test_repositories_are_forgotten_only_after_a_whole_catalog(registry, registry_client):
    desc = image(registry_client, "leaving/app", tag="t", seed="leaving")
    image(registry_client, "staying/app", tag="t", seed="staying")
    sync()
    registry_client.delete_manifest("leaving/app", desc["digest"])
    sync("staying/app")  # one repository: the catalog was not read, nothing is forgotten
    assert repo("leaving/app").manifests.count() == 1
    sync()
    assert not Manifest.objects.filter(repository__name="leaving/app").exists()


def test_sync_command_queues_the_run_for_the_workers(registry, registry_client, celery_worker,
                                                     capsys):
    image(registry_client, "queue/app", tag="t", seed="queue")
    call_command("sync", "--queue")
    assert "Queued 1 repository for the workers" in capsys.readouterr().out
    devstack.wait_for(lambda: SyncRun.objects.filter(finished_at__isnull=False).exists(),
                      "the queued run", timeout=60)
    assert SyncRun.objects.get().tags == 1 and Tag.objects.get().name == "t"
