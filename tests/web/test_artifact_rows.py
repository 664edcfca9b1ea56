"""Artifacts in the Image Management table, the repositories page and the items API: attached
ones under their subject with marks on its row, orphans as items of their own, pull commands
by kind. Rows are made in the database and refreshed as a sync would (store.refresh); the
real-registry side is tests/inventory/test_artifacts.py."""

import re

import pytest

from hubmgr.inventory.catalog.store import refresh
from hubmgr.inventory.models import IndexChild, Manifest, Tag
from hubmgr.registry import artifacts

from tests.support.factories import digest, make_image, make_index, make_repo

pytestmark = pytest.mark.django_db


def rows(html):
    return re.findall(r'<tbody class="item" data-digest="([^"]+)"', html)


def artifact(repo, seed, kind, subject="", tags=(), tool="", predicates="", media_type=""):
    row = Manifest.objects.create(
        repository=repo, digest=digest(seed), kind="image", fetched=True, artifact=kind,
        artifact_type=media_type, tool=tool, subject=subject, predicates=predicates,
        media_type="application/vnd.oci.image.manifest.v1+json")
    for tag in tags:
        Tag.objects.create(repository=repo, name=tag, manifest=row)
    return row


def cosign_tag(subject, suffix="sig"):
    return "sha256-" + subject.split(":")[1] + "." + suffix


@pytest.fixture
def signed(db):
    """team/app: v1 signed by cosign (its .sig tag), with an SBOM referrer; an orphaned
    signature; a Helm chart."""
    repo = make_repo("team/app")
    image = make_image(repo, "img", tags=["v1"])
    sig = artifact(repo, "sig", artifacts.SIGNATURE, tags=[cosign_tag(image.digest)],
                   tool=artifacts.COSIGN)
    sbom = artifact(repo, "sbom", artifacts.SBOM, subject=image.digest,
                    media_type="application/spdx+json")
    orphan = artifact(repo, "orphan", artifacts.SIGNATURE, subject=digest("gone"),
                      tool=artifacts.NOTATION)
    chart = artifact(repo, "chart", artifacts.CHART, tags=["1.2.3"], tool=artifacts.HELM,
                     media_type="application/vnd.cncf.helm.config.v1+json")
    refresh(repo)
    repo.refresh_from_db()
    return repo, image, sig, sbom, orphan, chart


def test_attached_artifacts_leave_the_top_level_and_mark_their_subject(logged_in, signed):
    repo, image, sig, sbom, orphan, chart = signed
    sig.refresh_from_db()
    assert sig.subject == image.digest and not sig.is_top_level  # learned from its tag
    html = logged_in.get("/repositories/team/app").content.decode()
    assert set(rows(html)) == {image.digest, orphan.digest, chart.digest}
    item = html.split(f'data-digest="{image.digest}"')[1].split("</tbody>")[0]
    assert '<span class="badge mark">signed</span>' in item
    assert '<span class="badge mark">has SBOM</span>' in item
    assert "Show what is attached to this item" in item
    assert repo.item_count == 3 and repo.orphan_count == 1


def test_expanding_an_item_lists_what_is_attached_with_kind_and_tool(logged_in, signed):
    repo, image, sig, sbom, *_ = signed
    html = logged_in.get(f"/repositories/team/app/-/children/{image.digest}").content.decode()
    assert html.index(sig.digest[7:19]) < html.index(sbom.digest[7:19])  # in id order
    assert "Signature <span class=\"muted\">· cosign</span>" in html
    assert ">SBOM</td>" in html
    assert "oras pull" in html and "docker pull" not in html


def test_an_orphan_is_an_item_with_a_note_and_its_own_filter(logged_in, signed):
    repo, image, sig, sbom, orphan, chart = signed
    html = logged_in.get("/repositories/team/app?filter=orphaned").content.decode()
    assert rows(html) == [orphan.digest]
    assert "Orphaned: what it belongs to (" + digest("gone")[:19] in html
    assert "1 item" in html
    html = logged_in.get("/repositories/team/app?filter=artifact").content.decode()
    assert set(rows(html)) == {orphan.digest, chart.digest}
    page = logged_in.get("/repositories/").content.decode()
    assert 'href="/repositories/team/app?filter=orphaned"' in page and "1 orphaned" in page


def test_a_chart_offers_helm_pull_by_version(logged_in, signed):
    *_, chart = signed
    html = logged_in.get("/repositories/team/app").content.decode()
    item = html.split(f'data-digest="{chart.digest}"')[1].split("</tbody>")[0]
    assert "helm pull oci://" in item and "/team/app --version 1.2.3" in item
    assert "docker pull" not in item and ">Helm chart <span class=\"muted\">· Helm</span>" in item


def test_the_items_api_gives_kind_subject_and_attachments(client, token, signed):
    repo, image, sig, sbom, orphan, chart = signed
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    results = {r["digest"]: r for r in client.get(
        "/api/v1/repositories/team/app/images", **auth).json()["results"]}
    assert set(results) == {image.digest, orphan.digest, chart.digest}
    assert results[image.digest]["artifact"] is None
    assert {a["digest"]: a["artifact"]["kind"] for a in results[image.digest]["attached"]} \
        == {sig.digest: "signature", sbom.digest: "sbom"}
    attached_sig = next(a for a in results[image.digest]["attached"] if a["digest"] == sig.digest)
    assert attached_sig["subject"] == image.digest and attached_sig["artifact"]["tool"] == "cosign"
    assert results[orphan.digest]["orphaned"] is True
    assert results[orphan.digest]["subject"] == digest("gone")
    assert results[chart.digest]["artifact"]["label"] == "Helm chart"
    orphans = client.get("/api/v1/repositories/team/app/images?filter=orphaned", **auth).json()
    assert [r["digest"] for r in orphans["results"]] == [orphan.digest]
    repos = client.get("/api/v1/repositories", **auth).json()["results"]
    assert repos[0]["orphaned"] == 1


def test_deleting_the_subject_orphans_what_was_attached(signed):
    repo, image, sig, sbom, orphan, chart = signed
    from hubmgr.inventory.catalog.store import writing

    with writing(repo) as batch:
        batch.forget([image.id])
    repo.refresh_from_db()
    for row in (sig, sbom):
        row.refresh_from_db()
        assert row.is_orphan and row.is_top_level
    assert repo.orphan_count == 3 and repo.item_count == 4


def test_a_nested_index_lists_every_level_with_attestations_under_images(logged_in):
    repo = make_repo("nested/app")
    amd, arm = make_image(repo, "amd"), make_image(repo, "arm", platform="linux/arm64")
    inner = make_index(repo, "inner", [arm])
    outer = make_index(repo, "outer", [amd, inner], tags=["multi"])
    att = artifact(repo, "att", artifacts.ATTESTATION, subject=amd.digest,
                   tool=artifacts.BUILDX, predicates="https://slsa.dev/provenance/v0.2")
    IndexChild.objects.create(index=outer, child=att, platform="unknown/unknown")
    refresh(repo)
    outer.refresh_from_db()
    assert outer.size == amd.size + arm.size
    assert outer.platform == "linux/amd64, linux/arm64"  # the attestation has none
    html = logged_in.get("/repositories/nested/app").content.decode()
    assert rows(html) == [outer.digest]
    assert '<span class="badge mark">attested</span>' in html
    html = logged_in.get(f"/repositories/nested/app/-/children/{outer.digest}").content.decode()
    depths = re.findall(r'class="child depth-(\d)', html)
    # amd (1), its attestation (2), inner (1), arm (2); the attestation is also an entry of
    # the outer index, listed once, under the image it attests.
    assert depths == ["1", "2", "1", "2"]


def test_marks_say_signed_sbom_and_attested():
    sign = artifacts.Artifact(artifacts.SIGNATURE)
    spdx = artifacts.Artifact(artifacts.ATTESTATION, predicates=("https://spdx.dev/Document",))
    prov = artifacts.Artifact(artifacts.ATTESTATION, predicates=("https://slsa.dev/provenance/v1",))
    assert artifacts.marks([]) == []
    assert artifacts.marks([sign, spdx]) == [artifacts.SIGNED, artifacts.HAS_SBOM]
    assert artifacts.marks([prov]) == [artifacts.ATTESTED]
    assert artifacts.marks([artifacts.Artifact(artifacts.SBOM)]) == [artifacts.HAS_SBOM]
