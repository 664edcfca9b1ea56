"""Artifacts written to cost the inventory and a deletion plan as much as a pusher can: a
referrers list of 10,000 entries that do not belong to its subject. Stored as a sync stores
what it read (the registry refuses an index whose entries it does not hold, so the manifest is
built here); the real-registry cases are in test_artifacts.py."""

import pytest

from hubmgr.deletion import actions
from hubmgr.inventory.catalog.store import refresh, writing
from hubmgr.inventory.models import Manifest, Tag
from hubmgr.inventory.sync.crawl import Fetched
from hubmgr.registry.artifacts import fallback_tag
from hubmgr.registry.manifests import MAX_ENTRIES, OCI_INDEX, OCI_MANIFEST, Descriptor
from hubmgr.registry.manifests import Manifest as Parsed

from tests.support.factories import digest, make_image, make_repo

pytestmark = pytest.mark.django_db


def test_a_referrers_list_of_10000_strangers_is_kept_with_its_reason():
    repo = make_repo("hostile/app")
    subject = make_image(repo, "subject", tags=["v1"])
    refresh(repo)  # (the factory writes rows only)
    entries = [Descriptor(OCI_MANIFEST, digest(f"stranger-{n}"), 500)
               for n in range(MAX_ENTRIES)]
    listing = Parsed(digest("list"), OCI_INDEX, 900_000, "index", children=entries)
    tag = "sha256-" + subject.digest.split(":")[1]
    assert fallback_tag(tag) == subject.digest
    with writing(repo) as batch:
        ids = batch.store_fetched({listing.digest: Fetched(listing.digest, OCI_INDEX, listing)},
                                  {})
        batch.set_tags({tag: ids[listing.digest]})
    found = Manifest.objects.get(repository=repo, digest=listing.digest)
    # Recognised by its tag, listed under its subject; its 10,000 entries are placeholders
    # of unknown content (the next sync reads them), not items.
    assert found.referrers_list and found.subject == subject.digest and found.is_attached
    repo.refresh_from_db()
    assert repo.item_count == 1 and repo.orphan_count == 0
    assert Manifest.objects.filter(repository=repo).count() == MAX_ENTRIES + 2

    # Deleting the subject does not take the list: what it lists does not go with it.
    plan = actions.make_plan(repo, [subject.digest])
    assert plan.going_keys == [("hostile/app", subject.digest)]
    kept = dict(plan.kept)
    assert kept[("hostile/app", listing.digest)].startswith(
        "a referrers list that also lists what stays")
    assert Tag.objects.filter(repository=repo, name=tag).exists()
