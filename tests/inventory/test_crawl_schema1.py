"""A Docker schema1 manifest parses (its layers, no sizes), but the inventory does not store
sizes it does not know: the crawl keeps it unread, with a problem that says why, as before
schema1 could be parsed, rather than as an image of 0 bytes."""

from pathlib import Path

from hubmgr.inventory.sync.crawl import Crawler
from hubmgr.registry.client import FetchedManifest
from hubmgr.registry.manifests import SCHEMA1_SIGNED, sha256_digest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "artifacts"
BODY = (FIXTURES / "schema1.json").read_bytes()


class OneManifest:
    """A client that serves one schema1 manifest (a 2.8 registry refuses to store them
    unless compatibility.schema1.enabled)."""

    def get_manifest(self, repository, reference):
        return FetchedManifest(sha256_digest(BODY), SCHEMA1_SIGNED, BODY)


def test_a_schema1_manifest_is_kept_unread_with_its_reason():
    digest = sha256_digest(BODY)
    crawler = Crawler(OneManifest(), concurrency=1)
    try:
        result = crawler.crawl("old/app", {}, set(), [digest])
    finally:
        crawler.close()
    fetched = result.fetched[digest]
    assert fetched.manifest is None
    assert "Docker schema1" in fetched.error and "kept as unread" in fetched.error
