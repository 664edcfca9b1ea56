"""Deleting an item takes what is attached to it (cosign signatures, OCI 1.1 referrers, the
referrers fallback index), counts their bytes as the registry's garbage collector frees them,
and leaves nothing of them in the registry; keeping them is a choice the preview carries.
Against the real registry and its real garbage collector."""

import json

import pytest
import requests
from django.core.management import call_command
from playwright.sync_api import expect

from hubmgr import devstack
from hubmgr.deletion import actions, jobs
from hubmgr.deletion.models import DeletionJob, ItemStatus, JobStatus
from hubmgr.deletion.planner import ATTACHED, CHILD, SELECTED
from hubmgr.inventory.models import Manifest
from hubmgr.inventory.registries import client_for, default_registry
from hubmgr.registry.client import ACCEPT, RegistryClient

from tests.support.artifacts import (
    cosign_tag, push_cosign, push_notation_signature, push_referrers_list, push_spdx_referrer,
    referrers_tag, stored)
from tests.support.browser import OUTPUT, login
from tests.support.helpers import bearer, image, process, repo, sync

pytestmark = pytest.mark.django_db(transaction=True)
APP = "sig/app"


def signed_world(client):
    """sig/app: index 1.0 over two images (their base layer is shared with sig/other, so it
    stays) signed by cosign, its amd64 image signed too; a notation signature and an SPDX
    SBOM referring to the index, listed by the referrers fallback index; and `keep`, an image
    with its own cosign signature and notation referrer (which shares the referrers' empty
    config), which stays."""
    base = devstack.make_layer("base", 5000)
    a = devstack.push_image(client, APP, [base, devstack.make_layer("a", 3000)])
    b = devstack.push_image(client, APP, [base, devstack.make_layer("b", 2000)],
                            platform="linux/arm64")
    index = devstack.push_index(client, APP, [a, b], tag="1.0")
    subject = stored(client, APP, index)
    notation = push_notation_signature(client, APP, subject)
    sbom = push_spdx_referrer(client, APP, subject)
    keep = stored(client, APP, image(client, APP, tag="keep", seed="keep")["digest"])
    kept_referrer = push_notation_signature(client, APP, keep)
    devstack.push_image(client, "sig/other", [base, devstack.make_layer("o", 900)], tag="x")
    world = {
        "index": index, "a": a["digest"], "b": b["digest"],
        "sig": push_cosign(client, APP, index, "sig").digest,
        "sig_a": push_cosign(client, APP, a["digest"], "sig").digest,
        "notation": notation.digest, "sbom": sbom.digest,
        "list": push_referrers_list(client, APP, subject, [notation, sbom]).digest,
        "keep": keep.digest,
        "keep_sig": push_cosign(client, APP, keep.digest, "sig").digest,
        "keep_list": push_referrers_list(client, APP, keep, [kept_referrer]).digest}
    sync()
    return world


ARTIFACTS = ("sig", "sig_a", "notation", "sbom", "list")


def run(preview, user=None):
    """Confirm a preview ("Delete forever") and run its job here, to the end."""
    job = actions.confirm(repo(APP), preview.pk, user)
    process(job)
    job.refresh_from_db()
    return job


def status(registry, digest):
    """What the registry answers to GET /v2/sig/app/manifests/<digest>."""
    return requests.get(f"{registry.url}/v2/{APP}/manifests/{digest}",
                        headers={"Accept": ACCEPT}, timeout=10).status_code


def tags(registry):
    client = RegistryClient(registry.url)
    try:
        return sorted(client.tags(APP))
    finally:
        client.close()


def test_the_world_is_attached_as_the_tools_attach_it(registry):
    w = signed_world(RegistryClient(registry.url))
    rows = {m.digest: m for m in Manifest.objects.filter(repository__name=APP)}
    for name in ARTIFACTS:
        assert rows[w[name]].is_attached and not rows[w[name]].is_top_level, name
    assert rows[w["sig_a"]].subject == w["a"] and rows[w["sbom"]].subject == w["index"]
    assert rows[w["list"]].referrers_list


def test_deleting_a_signed_index_takes_what_is_attached_and_frees_what_the_collector_frees(
        registry, collect, maintainer):
    w = signed_world(RegistryClient(registry.url))
    preview = actions.preview(repo(APP), [w["index"]], maintainer)
    plan = preview.plan
    assert {i["digest"]: i["reason"] for i in plan["items"] if i["reason"] != ATTACHED} == {
        w["index"]: SELECTED, w["a"]: CHILD, w["b"]: CHILD}
    assert {i["digest"]: (i["artifact"], i["tool"], i["subject"]) for i in plan["items"]
            if i["reason"] == ATTACHED} == {
        w["sig"]: ("Signature", "cosign", w["index"]),
        w["sig_a"]: ("Signature", "cosign", w["a"]),
        w["notation"]: ("Signature", "notation", w["index"]),
        w["sbom"]: ("SBOM", "", w["index"]),
        w["list"]: ("Referrers list", "", w["index"])}
    assert plan["kept"] == [] and plan["orphaned"] == [] and plan["keep_attached"] is False
    # Each goes after what it is attached to, the list before the referrers it lists.
    order = [i["digest"] for i in plan["items"]]
    assert order.index(w["index"]) < order.index(w["list"]) < order.index(w["notation"])
    assert order.index(w["a"]) < order.index(w["sig_a"])

    job = run(preview, maintainer)
    assert job.status == JobStatus.DONE
    for name in ("index", "a", "b", *ARTIFACTS):
        assert status(registry, w[name]) == 404, name
    keep = w["keep"]  # only its tags stay: no .sig of what went
    assert tags(registry) == sorted(["keep", referrers_tag(keep), cosign_tag(keep, "sig")])
    assert collect() == plan["reclaim_bytes"] > 0
    sync()
    assert not Manifest.objects.filter(repository__name=APP, is_orphan=True).exists()
    assert status(registry, w["keep_sig"]) == status(registry, w["keep_list"]) == 200


def test_the_preview_page_and_the_api_list_what_goes_with_what_it_is_attached_to(
        registry, client, maintainer, maintainer_token):
    w = signed_world(RegistryClient(registry.url))
    client.force_login(maintainer)
    page = client.post(f"/repositories/{APP}/-/preview", {"digest": [w["index"]]})
    text = page.content.decode()
    assert page.status_code == 200
    assert "Also removed (attached to what goes) (5)" in text
    for word in ("Signature", "SBOM", "Referrers list", "by cosign", "by Notation",
                 'id="keep-attached"', "attached to <span class=\"tag\">1.0</span>"):
        assert word in text, word
    body = client.post(f"/api/v1/repositories/{APP}/deletions/preview",
                       json.dumps({"digests": [w["index"]]}), content_type="application/json",
                       **bearer(maintainer_token)).json()
    assert {i["digest"] for i in body["items"] if i["reason"] == ATTACHED} == {
        w[name] for name in ARTIFACTS}
    assert body["keep_attached"] is False and body["orphaned"] == []


def test_keeping_attached_artifacts_leaves_them_orphaned_and_they_can_be_deleted_later(
        registry, collect, client, maintainer, maintainer_token):
    w = signed_world(RegistryClient(registry.url))
    body = client.post(f"/api/v1/repositories/{APP}/deletions/preview",
                       json.dumps({"digests": [w["index"]], "keep_attached": True}),
                       content_type="application/json", **bearer(maintainer_token)).json()
    assert [(i["digest"], i["reason"]) for i in body["items"]] == [
        (w["index"], SELECTED), *sorted([(w["a"], CHILD), (w["b"], CHILD)])]
    assert body["keep_attached"] is True
    assert {o["digest"]: (o["artifact"], o["subject"]) for o in body["orphaned"]} == {
        w["sig"]: ("Signature", w["index"]), w["sig_a"]: ("Signature", w["a"]),
        w["notation"]: ("Signature", w["index"]), w["sbom"]: ("SBOM", w["index"]),
        w["list"]: ("Referrers list", w["index"])}
    reasons = {k["digest"]: k["reason"] for k in body["kept"]}
    assert reasons[w["sig"]] == (f"kept by choice: attached to {w['index'][:19]} (1.0), it "
                                 "will be orphaned")
    assert set(reasons) == {w[name] for name in ARTIFACTS}
    # The page says so too, and offers the choice back.
    client.force_login(maintainer)
    text = client.post(f"/repositories/{APP}/-/preview",
                       {"digest": [w["index"]], "keep_attached": "1"}).content.decode()
    assert "Kept, and orphaned once what they are attached to goes (5)" in text
    assert 'value="1" checked' in text and "Also removed (attached" not in text

    # A confirmed preview runs with the choice it was made with.
    resp = client.post(f"/api/v1/repositories/{APP}/deletions",
                       json.dumps({"preview_id": body["preview_id"]}),
                       content_type="application/json", **bearer(maintainer_token))
    assert resp.status_code == 202
    job = DeletionJob.objects.get(pk=resp.json()["id"])
    client_ = client_for(default_registry())
    jobs.process_job(job.pk, client_, wait=True)
    client_.close()
    job.refresh_from_db()
    assert job.status == JobStatus.DONE
    assert [status(registry, w[n]) for n in ("index", "a", "b")] == [404] * 3
    assert [status(registry, w[n]) for n in ARTIFACTS] == [200] * 5
    assert {referrers_tag(w["index"]), cosign_tag(w["index"], "sig"),
            cosign_tag(w["a"], "sig")} <= set(tags(registry))
    assert collect() == body["reclaim_bytes"]

    sync()
    rows = {m.digest: m for m in Manifest.objects.filter(repository__name=APP)}
    assert all(rows[w[n]].is_orphan for n in ARTIFACTS)
    top = {w[n] for n in ("sig", "sig_a", "list")}
    assert {d for d, m in rows.items() if m.is_orphan and m.is_top_level} == top
    assert repo(APP).orphan_count == 3

    # Orphans are items like any other: selected, they go (the list with what it lists).
    preview = actions.preview(repo(APP), sorted(top), maintainer)
    assert {i["digest"]: i["reason"] for i in preview.plan["items"]} == {
        **dict.fromkeys(top, SELECTED), w["notation"]: CHILD, w["sbom"]: CHILD}
    assert preview.plan["kept"] == [] and preview.plan["orphaned"] == []
    assert run(preview, maintainer).status == JobStatus.DONE
    assert [status(registry, w[n]) for n in ARTIFACTS] == [404] * 5
    assert collect() == preview.plan["reclaim_bytes"]
    sync()
    assert repo(APP).orphan_count == 0


def test_what_is_attached_after_the_preview_is_not_deleted_and_shows_as_orphaned(
        registry, maintainer):
    w = signed_world(RegistryClient(registry.url))
    preview = actions.preview(repo(APP), [w["index"]], maintainer)
    client = RegistryClient(registry.url)
    # cosign signs again (a new manifest takes the .sig tag); notation adds a signature and,
    # without the referrers API, pushes a new referrers list and moves its tag.
    resigned = push_cosign(client, APP, w["index"], "sig", signatures=2)
    index = stored(client, APP, w["index"])
    later = push_notation_signature(client, APP, index, signature=b"later")
    new_list = push_referrers_list(client, APP, index, [stored(client, APP, w["notation"]), later])
    client.close()

    job = run(preview, maintainer)
    items = {i.digest: i for i in job.items.all()}
    assert set(items) == {i["digest"] for i in preview.plan["items"]}  # exactly the preview
    for name in ("index", "a", "b", "sig", "sig_a", "sbom", "list"):
        assert items[w[name]].status == ItemStatus.DONE, name
        assert status(registry, w[name]) == 404, name
    # The new list refers to the notation signature now: it is kept, as the recheck says.
    assert items[w["notation"]].status == ItemStatus.SKIPPED
    assert "referenced since the preview by index" in items[w["notation"]].last_error
    for digest in (resigned.digest, later.digest, new_list.digest):
        assert status(registry, digest) == 200

    sync()
    rows = {m.digest: m for m in Manifest.objects.filter(repository__name=APP)}
    for digest in (resigned.digest, later.digest, new_list.digest, w["notation"]):
        assert rows[digest].is_orphan, digest


def test_the_delete_command_keeps_attached_artifacts_when_asked(registry, capsys):
    w = signed_world(RegistryClient(registry.url))
    call_command("delete", APP, "--digest", w["index"], "--dry-run")
    out = capsys.readouterr().out
    assert f"delete  {w['sig']}  Signature" in out and f"(attached to {w['index'][:19]})" in out
    assert "Referrers list" in out
    assert ("To delete: 1 item, with its 2 child images and 5 attached artifacts; 0 kept"
            in out)
    call_command("delete", APP, "--digest", w["index"], "--keep-attached")
    out = capsys.readouterr().out
    assert "To delete: 1 item, with its 2 child images; 5 kept" in out
    assert "5 attached artifacts stay" in out
    assert "kept by choice: attached to" in out
    assert [status(registry, w[n]) for n in ARTIFACTS] == [200] * 5
    assert status(registry, w["index"]) == 404


def test_the_preview_modal_offers_to_keep_what_is_attached_in_chromium(
        browser, live_server, registry):
    w = signed_world(RegistryClient(registry.url))
    page = login(browser, live_server, "maria", ["delete_images"])
    try:
        page.goto(f"{live_server.url}/repositories/{APP}")
        page.check(f"tbody.item[data-digest='{w['index']}'] input.select-item")
        page.click("#preview-delete")
        page.wait_for_selector("dialog#preview-dialog[open]")
        modal = page.inner_text("#preview-dialog")
        assert "Also removed (attached to what goes) (5)" in modal
        page.screenshot(path=str(OUTPUT / "preview-attached.png"))
        # Ticking the box previews the same selection again, keeping them.
        page.check("#keep-attached")
        expect(page.locator("#plan-orphaned li")).to_have_count(5)
        assert page.is_checked("#keep-attached")
        assert page.locator("#plan-attached").count() == 0
        page.screenshot(path=str(OUTPUT / "preview-keep-attached.png"))
        page.click("#delete-forever")  # (no worker here: the job is only recorded)
        expect(page.locator("dialog#preview-dialog[open]")).to_have_count(0)
    finally:
        page.context.close()
    job = DeletionJob.objects.get()
    assert {i.digest for i in job.items.all()} == {w["index"], w["a"], w["b"]}
    assert job.preview.plan["keep_attached"] is True
