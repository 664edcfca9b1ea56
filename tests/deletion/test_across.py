"""A selection across repositories, against the real registry and its garbage collector: one
preview of each repository's plan with one reclaim total, a job per repository, and the total
equal to what garbage-collect frees on disk."""

import pytest

from hubmgr import devstack
from hubmgr.deletion import across
from hubmgr.deletion.models import DeletionJob, JobStatus
from hubmgr.inventory.registries import default_registry
from hubmgr.registry.client import RegistryClient

from tests.support.helpers import process, sync

pytestmark = pytest.mark.django_db(transaction=True)


def world(client):
    """x/one and x/two each hold an image over a layer only those two images link
    (`shared`), each with a layer of its own; x/three an image of its own; x/keep a tagged
    image over a base layer that x/one's image links too (so it stays)."""
    shared = devstack.make_layer("shared", 9000)
    base = devstack.make_layer("base", 5000)
    one = devstack.push_image(client, "x/one", [shared, base, devstack.make_layer("1", 3000)],
                              tag="a")
    two = devstack.push_image(client, "x/two", [shared, devstack.make_layer("2", 2000)],
                              tag="b")
    three = devstack.push_image(client, "x/three", [devstack.make_layer("3", 1000)],
                                tag="old")
    devstack.push_image(client, "x/keep", [base], tag="stays")
    sync()
    return {"x/one": one["digest"], "x/two": two["digest"], "x/three": three["digest"]}


def test_one_preview_across_three_repositories_frees_what_the_collector_frees(
        registry, collect, maintainer, logged_in):
    refs = list(world(RegistryClient(registry.url)).items())
    logged_in.force_login(maintainer)
    page = logged_in.get("/images/?search=a")  # tags "a" and "stays"
    assert {r.repository_name for r in page.context["page"].rows} == {"x/one", "x/keep"}
    shown = logged_in.post("/images/-/preview", {"digest": [f"{n}@{d}" for n, d in refs]})
    assert shown.status_code == 200
    html = shown.content.decode()
    total = shown.context["reclaim_bytes"]
    plans = {p["repo"].name: p["plan"] for p in shown.context["plans"]}
    assert set(plans) == {"x/one", "x/two", "x/three"}
    own = sum(p["reclaim_bytes"] for p in plans.values())
    # The layer that only x/one's and x/two's images link is freed by neither plan alone.
    assert total > own
    assert f'data-bytes="{total}"' in html and "in 3 repositories" in html
    started = logged_in.post("/images/-/delete", {
        "preview_id": [p["preview"].pk for p in shown.context["plans"]]})
    assert started.status_code == 200
    jobs = list(DeletionJob.objects.order_by("repository_name"))
    assert [j.repository_name for j in jobs] == ["x/one", "x/three", "x/two"]
    for job in jobs:
        assert process(job) == JobStatus.DONE
    assert collect() == total
    # A second confirmation of the same previews starts nothing.
    again = logged_in.post("/images/-/delete", {
        "preview_id": [p["preview"].pk for p in shown.context["plans"]]})
    assert again.status_code == 409 and DeletionJob.objects.count() == 3


def test_confirmation_is_all_or_none(registry, maintainer):
    refs = list(world(RegistryClient(registry.url)).items())
    found = across.preview(default_registry(), refs, maintainer)
    ids = [str(p.pk) for p in found.previews]
    with pytest.raises(across.actions.PreviewGone):
        across.confirm(default_registry(), ids + ["00000000-0000-0000-0000-000000000000"],
                       maintainer)
    assert DeletionJob.objects.count() == 0
    assert len(across.confirm(default_registry(), ids, maintainer)) == 3
