"""Artifacts on the real page in Chromium: a signed image says so, expanding it shows the
signature and the SBOM under it, and an orphan is found with its filter."""

from playwright.sync_api import expect

from hubmgr.inventory.catalog.store import refresh

from tests.support.browser import wait_for_rows
from tests.support.factories import (
    cosign_tag, digest, make_artifact, make_image, make_repo)


def test_a_signed_image_shows_its_marks_and_expands_to_what_is_attached(page, live_server):
    repo = make_repo("signed/app")
    image = make_image(repo, "signed", tags=["v1"])
    make_artifact(repo, "sig", kind="signature", tags=[cosign_tag(image.digest)])
    make_artifact(repo, "sbom", image, kind="sbom")
    orphan = make_artifact(repo, "lost", digest("deleted"), kind="signature")
    refresh(repo)

    page.goto(f"{live_server.url}/repositories/signed/app")
    wait_for_rows(page, 2)  # the image and the orphan; what is attached is under the image
    item = page.locator(f'tbody.item[data-digest="{image.digest}"]')
    expect(item.locator(".badge.mark")).to_have_text(["signed", "has SBOM"])
    item.locator("button.expand").click()
    children = page.locator(f"tbody#children-{image.id} tr.child")
    expect(children).to_have_count(2)
    expect(children.nth(0)).to_contain_text("Signature")
    expect(children.nth(0)).to_contain_text("sha256-")  # its cosign tag
    expect(children.nth(1)).to_contain_text("SBOM")

    page.select_option("#filter", "orphaned")
    wait_for_rows(page, 1)
    row = page.locator(f'tbody.item[data-digest="{orphan.digest}"]')
    expect(row).to_contain_text("Orphaned: what it belongs to")
