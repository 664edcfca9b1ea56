"""The inventory knows each artifact for what it is (issue 22): manifests pushed to a real
docker-registry shaped as today's tools write them (tests/support/artifacts.py, from the
fixtures in tests/fixtures/artifacts), synced, and read back from the rows and the
repository's counts; sizes checked against the blobs the registry holds on disk.

Distribution 2.8 has no referrers API: referrers are found through the fallback tag
``sha256-<hex>`` (and push notifications), as clients of such a registry leave them."""

import pytest
from django.db.models import F

from hubmgr import devstack
from hubmgr.deletion import actions
from hubmgr.inventory.catalog.store import refresh
from hubmgr.inventory.models import Blob, Manifest, ManifestBlob, Repository
from hubmgr.registry.artifacts import (
    ARTIFACT, ATTESTATION, BUILDX, CHART, COSIGN, DSSE, HELM, HELM_CONFIG, IN_TOTO, NOTATION,
    NOTATION_SIGNATURE, SBOM, SIGNATURE, SIMPLE_SIGNING)
from hubmgr.registry.client import RegistryClient
from hubmgr.registry.manifests import MAX_TEXT, OCI_MANIFEST
from hubmgr.registry.names import clean

from tests.support import artifacts
from tests.support.artifacts import SLSA, SPDX_PREDICATE
from tests.support.helpers import image, multiarch, repo, row, sync, wait_until

pytestmark = pytest.mark.django_db
REPO = "art/app"


@pytest.fixture
def registry(tmp_path, settings):
    """conftest's registry, accepting foreign layers (as one holding Windows images must):
    it replaces conftest's for this module, registry_client included."""
    service = devstack.start_registry(tmp_path / "registry", foreign_layers=True)
    settings.REGISTRY_URL = service.url
    yield service
    service.stop()


def shown(pushed, name=REPO) -> tuple:
    """What the inventory says a pushed manifest (or a digest) is: (artifact kind, tool,
    subject, top level, orphan)."""
    found = row(name, getattr(pushed, "digest", pushed))
    return found.artifact, found.tool, found.subject, found.is_top_level, found.is_orphan


def counts(name=REPO) -> tuple:
    found = repo(name)
    return found.item_count, found.tagged_count, found.index_count, found.orphan_count


def stored_on_disk(registry, manifests) -> int:
    """The config and layer bytes the registry holds: every blob file on its disk, less the
    manifests (which it stores as blobs too)."""
    return devstack.blob_bytes(registry.root) - sum(m.size for m in manifests)


def synced():
    """Sync, and check the registry's answers raised no problem."""
    run = sync()
    assert run.error == "" and run.problems == []
    return run


def test_a_signed_buildx_index_and_all_attached_to_it_are_each_known(registry,
                                                                     registry_client):
    family = artifacts.push_family(registry_client, REPO, seen=synced)
    synced()
    build, index = family.build, family.build.index.digest
    amd64 = build.images[0]

    assert shown(build.index) == ("", "", "", True, False)
    for image_ in build.images:
        assert shown(image_) == ("", "", "", False, False)
    for attestation, image_ in zip(build.attestations, build.images):
        assert shown(attestation) == (ATTESTATION, BUILDX, image_.digest, False, False)
        assert row(REPO, attestation.digest).predicates == f"{SPDX_PREDICATE} {SLSA}"
        assert row(REPO, attestation.digest).artifact_type == IN_TOTO
    assert shown(family.signature) == (SIGNATURE, COSIGN, index, False, False)
    assert shown(family.attestation) == (ATTESTATION, COSIGN, index, False, False)
    assert row(REPO, family.attestation.digest).predicates == SLSA
    assert shown(family.sbom) == (SBOM, COSIGN, index, False, False)
    assert shown(family.child_signature) == (SIGNATURE, COSIGN, amd64.digest, False, False)
    assert shown(family.notation) == (SIGNATURE, NOTATION, index, False, False)
    assert shown(family.spdx) == (SBOM, "", index, False, False)
    for listed in (family.referrers_list, family.earlier_list):
        assert shown(listed) == ("", "", index, False, False)
        assert row(REPO, listed.digest).referrers_list
    types = {p.digest: t for p, t in [
        (family.signature, SIMPLE_SIGNING), (family.attestation, DSSE),
        (family.sbom, "spdx+json"), (family.notation, NOTATION_SIGNATURE),
        (family.spdx, "application/spdx+json"), (family.referrers_list, ""),
        (build.index, ""), (amd64, "")]}
    assert dict(Manifest.objects.filter(digest__in=types).values_list(
        "digest", "artifact_type")) == types
    assert row(REPO, family.signature.digest).tags == [
        artifacts.cosign_tag(index, "sig")]
    assert row(REPO, family.referrers_list.digest).tags == [artifacts.referrers_tag(index)]
    assert row(REPO, family.earlier_list.digest).tags == []

    # Sizes: each the distinct blobs below it; the repository's what the registry stores.
    top = row(REPO, index)
    assert top.platform == "linux/amd64, linux/arm64/v8"
    assert top.size == build.index.stored_size == sum(
        artifacts.union(build.images + build.attestations).values())
    for pushed in (amd64, family.notation, family.referrers_list, family.earlier_list):
        assert row(REPO, pushed.digest).size == pushed.stored_size > 0
    assert counts() == (1, 1, 1, 0)
    assert repo(REPO).total_size == sum(family.blobs.values()) == stored_on_disk(
        registry, family.manifests)
    assert Manifest.objects.count() == len(family.manifests)


def test_deleting_the_subject_in_the_registry_leaves_its_attachments_orphaned(
        registry, registry_client):
    family = artifacts.push_family(registry_client, REPO, seen=synced)
    synced()
    index = family.build.index.digest
    assert registry_client.delete_manifest(REPO, index)
    synced()

    assert not Manifest.objects.filter(digest=index).exists()
    for image_, attestation in zip(family.build.images, family.build.attestations):
        assert shown(image_) == ("", "", "", True, False)  # no index lists them now
        assert shown(attestation)[2:] == (image_.digest, False, False)  # still attached
    assert shown(family.child_signature)[2:] == (family.build.images[0].digest, False, False)
    # Tagged or unlisted, each is an orphaned item of its own; the referrers a list holds
    # are orphaned under their (orphaned) list.
    for pushed in (family.signature, family.attestation, family.sbom,
                   family.referrers_list, family.earlier_list):
        assert shown(pushed)[2:] == (index, True, True)
    for pushed in (family.notation, family.spdx):
        assert shown(pushed)[2:] == (index, False, True)
    # Items: 2 images, 3 cosign tags, 2 lists; tagged: the cosign tags and the fallback tag.
    assert counts() == (7, 4, 2, 5)
    # The index had no blob of its own: everything still holds every blob.
    assert repo(REPO).total_size == sum(family.blobs.values())


def test_a_helm_chart_is_a_chart_made_by_helm(registry, registry_client):
    chart = artifacts.push_helm_chart(registry_client, REPO)
    synced()
    found = row(REPO, chart.digest)
    assert shown(chart) == (CHART, HELM, "", True, False)
    assert (found.artifact_type, found.media_type, found.tags) == (
        HELM_CONFIG, OCI_MANIFEST, ["0.1.0"])
    assert found.artifact_info.label == "Helm chart" and found.platform == ""
    assert found.size == chart.stored_size == stored_on_disk(registry, [chart])
    assert counts() == (1, 1, 0, 0) and repo(REPO).total_size == chart.stored_size


def test_a_foreign_layer_is_listed_with_its_image_but_never_counted_as_stored(
        registry, registry_client):
    windows = artifacts.push_windows_image(registry_client, REPO, tag="ltsc2019")
    synced()
    [(foreign, foreign_size)] = windows.foreign.items()
    found = row(REPO, windows.digest)
    assert shown(windows) == ("", "", "", True, False)
    assert found.platform == "windows/amd64"
    assert found.foreign_size == foreign_size == 1_488_373_422
    assert found.size == windows.stored_size == stored_on_disk(registry, [windows])
    assert repo(REPO).total_size == windows.stored_size
    assert not Blob.objects.filter(digest=foreign).exists()
    assert not registry_client.blob_exists(REPO, foreign)  # never stored: nothing to probe


def test_a_nested_index_is_sized_and_platformed_through_every_level(registry,
                                                                   registry_client):
    windows = artifacts.push_windows_image(registry_client, REPO)
    linux = artifacts.push_buildx_image(registry_client, REPO, "linux/amd64", "nested")
    outer, inner = artifacts.push_nested_index(registry_client, REPO, windows, linux)
    synced()
    top, middle = row(REPO, outer.digest), row(REPO, inner.digest)
    assert (top.is_top_level, middle.is_top_level, row(REPO, linux.digest).is_top_level) == (
        True, False, False)
    assert top.platform == "windows/amd64, linux/amd64" and middle.platform == "windows/amd64"
    assert middle.size == windows.stored_size
    assert top.size == outer.stored_size == windows.stored_size + linux.stored_size
    assert repo(REPO).total_size == outer.stored_size == stored_on_disk(
        registry, [outer, inner, windows, linux])
    assert counts() == (1, 1, 1, 0)


def test_a_signature_replaced_under_its_tag_stays_attached(registry, registry_client):
    """Signing again pushes a new manifest to the same ``sha256-<hex>.sig`` tag; the earlier
    one, now untagged, still belongs to the same subject."""
    build = artifacts.push_buildx_index(registry_client, REPO)
    first = artifacts.push_cosign(registry_client, REPO, build.index.digest, "sig")
    synced()
    again = artifacts.push_cosign(registry_client, REPO, build.index.digest, "sig",
                                  signatures=2)
    synced()
    assert row(REPO, first.digest).tags == [] and row(REPO, again.digest).tags == [first.tag]
    for pushed in (first, again):
        assert shown(pushed) == (SIGNATURE, COSIGN, build.index.digest, False, False)
    assert counts() == (1, 1, 1, 0)


# ---- hostile input ---------------------------------------------------------------------------
def test_a_cosign_style_tag_whose_hex_is_not_a_digest_is_a_plain_item(registry,
                                                                      registry_client):
    hexes = ["A" * 64, "a" * 63, "g" * 64]
    pushed = {hex_: image(registry_client, REPO, tag=f"sha256-{hex_}.sig", seed=hex_)
              for hex_ in hexes}
    synced()
    for desc in pushed.values():
        assert shown(desc["digest"]) == ("", "", "", True, False)
    assert counts() == (3, 3, 0, 0)


def test_tags_and_annotations_cannot_make_someone_elses_image_belong_to_anything(
        registry, registry_client):
    """Anyone who can push can tag or annotate any manifest: a subject learned from a tag or
    an index entry is believed only where the manifest's own content is an artifact, so
    deleting the named subject can never take these along."""
    subject = image(registry_client, REPO, tag="v1", seed="subject")["digest"]
    victim = image(registry_client, REPO, tag="victim", seed="victim")
    index, kids = multiarch(registry_client, REPO, tag="multi", seed="victim-index")
    # The victim image tagged as the subject's signature, the victim index as its referrers
    # list, and an index that marks the victim image as a BuildKit attestation of it.
    body = registry_client.get_manifest(REPO, victim["digest"])
    registry_client.put_manifest(REPO, artifacts.cosign_tag(subject, "sig"), body.body,
                                 body.media_type)
    listed = registry_client.get_manifest(REPO, index)
    registry_client.put_manifest(REPO, artifacts.referrers_tag(subject), listed.body,
                                 listed.media_type)
    marked = dict(victim, annotations={"vnd.docker.reference.type": "attestation-manifest",
                                       "vnd.docker.reference.digest": subject})
    devstack.push_index(registry_client, REPO, [kids[0], marked], tag="marker")
    synced()
    for digest in (victim["digest"], index):
        found = row(REPO, digest)
        assert (found.artifact, found.subject, found.is_top_level) == ("", "", True)
        assert not found.referrers_list
    assert counts() == (4, 4, 2, 0)  # v1, victim, multi, marker
    plan = actions.make_plan(repo(REPO), [subject])
    assert plan.going_keys == [(REPO, subject)]


@pytest.mark.timeout(120)
def test_a_cycle_through_cosign_tags_leaves_both_visible_as_orphans(registry,
                                                                    registry_client):
    # Two cosign signatures (of something never pushed), each tagged as the other's.
    a, b = (artifacts.push_cosign(registry_client, REPO, artifacts.absent(seed).digest, "sig",
                                  tag=seed).digest for seed in "ab")
    for digest, other in ((a, b), (b, a)):
        body = registry_client.get_manifest(REPO, digest)
        registry_client.put_manifest(REPO, artifacts.cosign_tag(other, "sig"), body.body,
                                     body.media_type)
    synced()
    for digest, other in ((a, b), (b, a)):
        assert shown(digest) == (SIGNATURE, COSIGN, other, True, True)
    assert counts() == (2, 2, 0, 2)
    synced()  # and again, with nothing new: the same
    assert counts() == (2, 2, 0, 2)


def test_an_artifact_type_of_5000_characters_is_cut_to_its_column(registry,
                                                                  registry_client):
    long_type = "application/vnd.example." + "x" * (5000 - 24)
    assert len(long_type) == 5000
    pushed = artifacts.push_spdx_referrer(registry_client, REPO, None, long_type, tag="v1")
    synced()
    found = row(REPO, pushed.digest)
    column = Manifest._meta.get_field("artifact_type").max_length
    assert len(found.artifact_type) == column == MAX_TEXT
    assert found.artifact_type == clean(long_type, column)  # cut, with an ellipsis
    assert shown(pushed) == (ARTIFACT, "", "", True, False)
    assert found.size == pushed.stored_size


def test_a_subject_not_in_the_repository_makes_an_orphan_there(registry, registry_client):
    """In another repository, or nowhere: the attachment is an orphan of the repository
    that holds it, and the subject's repository is untouched."""
    elsewhere = artifacts.push_buildx_image(registry_client, "art/base", seed="base")
    registry_client.put_manifest("art/base", "1.0", artifacts.layout(
        elsewhere.data, artifacts.BUILDKIT), OCI_MANIFEST)
    nowhere = artifacts.absent("never pushed")
    signature = artifacts.push_cosign(registry_client, REPO, elsewhere.digest, "sig")
    spdx = artifacts.push_spdx_referrer(registry_client, REPO, elsewhere)
    spdx_list = artifacts.push_referrers_list(registry_client, REPO, elsewhere, [spdx])
    notation = artifacts.push_notation_signature(registry_client, REPO, nowhere)
    notation_list = artifacts.push_referrers_list(registry_client, REPO, nowhere, [notation])
    synced()
    assert shown(signature) == (SIGNATURE, COSIGN, elsewhere.digest, True, True)
    assert shown(spdx) == (SBOM, "", elsewhere.digest, False, True)
    assert shown(spdx_list) == ("", "", elsewhere.digest, True, True)
    assert shown(notation) == (SIGNATURE, NOTATION, nowhere.digest, False, True)
    assert shown(notation_list) == ("", "", nowhere.digest, True, True)
    assert counts() == (3, 3, 2, 3)
    assert shown(elsewhere, "art/base") == ("", "", "", True, False)
    assert counts("art/base") == (1, 1, 0, 0)

    # The subject arrives in the repository: what named it is attached from then on.
    copy = artifacts.push_buildx_image(registry_client, REPO, seed="base")
    registry_client.put_manifest(REPO, "base", artifacts.layout(
        copy.data, artifacts.BUILDKIT), OCI_MANIFEST)
    assert copy.digest == elsewhere.digest
    synced()
    assert shown(signature) == (SIGNATURE, COSIGN, elsewhere.digest, False, False)
    assert shown(spdx_list) == ("", "", elsewhere.digest, False, False)
    assert shown(spdx) == (SBOM, "", elsewhere.digest, False, False)
    assert counts() == (2, 2, 1, 1)  # the image and the notation list


# ---- rows read before ------------------------------------------------------------------------
CLASSIFIED = ("digest", "artifact", "artifact_type", "tool", "subject", "referrers_list",
              "predicates", "is_top_level", "is_orphan", "size", "foreign_size", "platform")


def test_rows_read_before_artifacts_were_known_are_read_again_and_classified(
        registry, registry_client):
    family = artifacts.push_family(registry_client, REPO, seen=synced)
    windows = artifacts.push_windows_image(registry_client, REPO, tag="win")
    synced()
    rows = Manifest.objects.order_by("digest")
    known, figures = list(rows.values_list(*CLASSIFIED)), counts()
    assert figures == (2, 2, 1, 0) and len(known) == len(family.manifests) + 1
    # As an earlier hubmgr left them: nothing of what they are, the foreign layer linked and
    # counted as stored.
    rows.update(read_version=0, artifact="", artifact_type="", tool="", subject="",
                referrers_list=False, predicates="", is_orphan=False, is_top_level=True,
                foreign_size=0)
    [(foreign, foreign_size)] = windows.foreign.items()
    linked = Blob.objects.create(registry=repo(REPO).registry, digest=foreign, size=foreign_size)
    ManifestBlob.objects.create(manifest=row(REPO, windows.digest), blob=linked)
    Manifest.objects.filter(digest=windows.digest).update(size=F("size") + foreign_size)
    Repository.objects.filter(name=REPO).update(  # every row an item, the layer counted
        item_count=len(known), total_size=F("total_size") + foreign_size)
    synced()
    assert list(rows.values_list(*CLASSIFIED)) == known
    assert counts() == figures
    assert repo(REPO).total_size == sum(family.blobs.values()) + windows.stored_size
    assert not Manifest.objects.filter(read_version=0).exists()


# ---- notifications ---------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_referrers_pushed_after_their_subject_are_attached_by_notifications(
        notified_registry, celery_worker):
    """The crawl cannot find a referrer pushed by digest on a registry without the referrers
    API, nor an earlier referrers list a client left untagged; their push events name them,
    and they end attached. The subject's delete event leaves them orphaned."""
    client = RegistryClient(notified_registry.url)
    family = artifacts.push_family(client, REPO)

    def settled():
        rows = Manifest.objects.filter(digest__in=[p.digest for p in family.manifests])
        return (rows.filter(fetched=True).count() == len(family.manifests)
                and counts() == (1, 1, 1, 0))
    assert wait_until(settled), list(Manifest.objects.values_list(
        "digest", "fetched", "artifact", "subject", "is_top_level"))
    index = family.build.index.digest
    assert shown(family.notation) == (SIGNATURE, NOTATION, index, False, False)
    assert shown(family.spdx) == (SBOM, "", index, False, False)
    assert shown(family.signature) == (SIGNATURE, COSIGN, index, False, False)
    assert shown(family.earlier_list) == ("", "", index, False, False)
    assert row(REPO, family.earlier_list.digest).referrers_list
    assert shown(family.build.attestations[0]) == (ATTESTATION, BUILDX,
                                                   family.build.images[0].digest, False, False)

    assert_counts_kept_equal_a_recount()

    client.delete_manifest(REPO, index)
    assert wait_until(lambda: counts() == (7, 4, 2, 5)), counts()
    assert shown(family.signature) == (SIGNATURE, COSIGN, index, True, True)
    assert shown(family.earlier_list) == ("", "", index, True, True)
    assert_counts_kept_equal_a_recount()
    client.close()


def assert_counts_kept_equal_a_recount(name=REPO):
    """What events moved the counts by (differences) is what counting again finds."""
    def figures():
        found = repo(name)
        return counts(name), found.total_size, sorted(Manifest.objects.filter(
            repository=found).values_list("digest", "is_top_level", "is_orphan", "size"))
    kept = figures()
    refresh(repo(name))
    assert figures() == kept


# ---- the demo --------------------------------------------------------------------------------
def test_the_demo_samples_show_a_signature_an_sbom_and_a_chart(registry, registry_client):
    seeded = devstack.seed_samples(registry_client, scale=0.01)
    synced()
    alpine = seeded["alpine:3.20"]
    assert shown(seeded["alpine:3.20 signature"], "library/alpine") == (
        SIGNATURE, COSIGN, alpine, False, False)
    assert shown(seeded["alpine:3.20 sbom"], "library/alpine") == (
        SBOM, "", alpine, False, False)
    assert row("library/alpine", seeded["alpine:3.20 referrers"]).referrers_list
    assert shown(seeded["charts/web:1.0.0"], "charts/web") == (CHART, HELM, "", True, False)
    # 3.19 and 3.20 (also latest): what is attached to 3.20 is listed under it. (The older
    # untagged index is known from push events only, which this registry does not send.)
    assert counts("library/alpine") == (2, 2, 2, 0)
