"""Deleting a nested index over a Windows image: every level goes, the reclaim figure counts
what the registry stores (never the foreign base layer it never held) and equals what its
garbage collector frees, and the reclaim check has nothing foreign to probe. Against the real
registry, accepting foreign layers as one that holds Windows images must."""

import pytest

from hubmgr import devstack
from hubmgr.deletion import actions, reclaim
from hubmgr.deletion.models import JobStatus, ReclaimBlob, ReclaimState
from hubmgr.inventory.registries import client_for, default_registry

from tests.support import artifacts
from tests.support.helpers import process, repo, row, sync

pytestmark = pytest.mark.django_db(transaction=True)
REPO = "win/app"


@pytest.fixture
def registry(tmp_path, settings):
    """conftest's registry, accepting foreign layers (and the one `collect` restarts)."""
    service = devstack.start_registry(tmp_path / "registry", foreign_layers=True)
    settings.REGISTRY_URL = service.url
    yield service
    service.stop()


def test_a_nested_index_over_a_windows_image_frees_what_the_collector_frees(
        registry, registry_client, collect):
    windows = artifacts.push_windows_image(registry_client, REPO)
    linux = artifacts.push_buildx_image(registry_client, REPO, "linux/amd64", "nested")
    outer, inner = artifacts.push_nested_index(registry_client, REPO, windows, linux)
    sync()
    [(foreign, foreign_size)] = windows.foreign.items()
    assert row(REPO, outer.digest).size == outer.stored_size == windows.stored_size \
        + linux.stored_size
    assert repo(REPO).total_size == outer.stored_size  # 1.49 GB of foreign layer left out

    preview = actions.preview(repo(REPO), [outer.digest], None)
    going = {item["digest"] for item in preview.plan["items"]}
    assert going == {outer.digest, inner.digest, windows.digest, linux.digest}
    manifests = sum(m.size for m in (outer, inner, windows, linux))
    assert preview.plan["reclaim_bytes"] == outer.stored_size + manifests

    job = actions.confirm(repo(REPO), preview.pk, None)
    process(job)
    job.refresh_from_db()
    assert job.status == JobStatus.DONE
    # What the reclaim check may probe: the stored blobs only.
    recorded = set(ReclaimBlob.objects.filter(job=job).values_list("digest", flat=True))
    assert foreign not in recorded and foreign_size > 10**9
    assert collect() == preview.plan["reclaim_bytes"]
    client = client_for(default_registry())
    try:
        assert reclaim.check(client)["reclaimed"] == [job.pk]
    finally:
        client.close()
    job.refresh_from_db()
    assert job.reclaim_state == ReclaimState.RECLAIMED
