"""A Docker schema1 manifest parses (its layers, no sizes), but the inventory does not store
sizes it does not know: the crawl keeps it unread, with a problem that says why, rather than as
an image of 0 bytes; stored, it stays unread (a plan counts it so) and the next sync reads it
again."""

from pathlib import Path

import pytest

from hubmgr.deletion import actions
from hubmgr.inventory.catalog.store import writing
from hubmgr.inventory.models import Manifest
from hubmgr.inventory.sync.crawl import Crawler
from hubmgr.registry.client import FetchedManifest
from hubmgr.registry.manifests import SCHEMA1_SIGNED, sha256_digest

from tests.support.factories import make_repo

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "artifacts"
BODY = (FIXTURES / "schema1.json").read_bytes()
DIGEST = sha256_digest(BODY)


class OneManifest:
    """A client that serves one schema1 manifest (a 2.8 registry refuses to store them
    unless compatibility.schema1.enabled)."""

    def get_manifest(self, repository, reference):
        return FetchedManifest(DIGEST, SCHEMA1_SIGNED, BODY)


def crawled():
    """What a crawl of old/app reads of the schema1 manifest."""
    crawler = Crawler(OneManifest(), concurrency=1)
    try:
        return crawler.crawl("old/app", {}, set(), [DIGEST])
    finally:
        crawler.close()


def test_a_schema1_manifest_is_kept_unread_with_its_reason():
    result = crawled()
    fetched = result.fetched[DIGEST]
    assert fetched.manifest is None
    assert "Docker schema1" in fetched.error and "kept as unread" in fetched.error


@pytest.mark.django_db
def test_a_stored_schema1_manifest_is_unread_in_the_inventory_and_in_a_plan():
    result = crawled()
    repo = make_repo("old/app")
    with writing(repo) as batch:
        batch.store_fetched(result.fetched, result.configs, result.missing)
    row = Manifest.objects.get(repository=repo, digest=DIGEST)
    assert not row.fetched and row.size == 0 and "Docker schema1" in row.error
    assert row.media_type == SCHEMA1_SIGNED
    assert Manifest.objects.filter(pk=row.pk).not_read().exists()  # the next sync reads it
    assert actions.make_plan(repo, [DIGEST]).unread == [("old/app", DIGEST)]


def test_the_crawl_reports_an_unreadable_manifest_as_a_problem():
    result = crawled()
    assert result.problems == [{"reference": f"old/app@{DIGEST}",
                                "error": result.fetched[DIGEST].error}]
