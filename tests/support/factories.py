"""Inventory rows made directly in the database, for page and API tests."""

import hashlib
from datetime import timedelta

from django.utils import timezone

from hubmgr.inventory.catalog.store import refresh
from hubmgr.inventory.models import Blob, IndexChild, Manifest, ManifestBlob, Repository, Tag
from hubmgr.inventory.registries import default_registry


def digest(seed) -> str:
    return "sha256:" + hashlib.sha256(str(seed).encode()).hexdigest()


def days_ago(n):
    return timezone.now() - timedelta(days=n) if n is not None else None


def observe_pulls(days):
    """hubmgr has seen every pull and push of the default registry for ``days`` days."""
    registry = default_registry()
    registry.notified_since = registry.pulls_observed_since = days_ago(days)
    registry.save(update_fields=["notified_since", "pulls_observed_since"])
    return registry


def make_repo(name):
    return Repository.objects.create(registry=default_registry(), name=name)


def make_image(repo, seed, tags=(), size=1000, pushed=1, pulled=None, platform="linux/amd64"):
    m = Manifest.objects.create(repository=repo, digest=digest(seed), kind="image",
                                media_type="application/vnd.oci.image.manifest.v1+json",
                                platform=platform, size=size, fetched=True,
                                last_pushed=days_ago(pushed), last_pushed_source="push_event",
                                last_pulled=days_ago(pulled))
    blob = Blob.objects.create(registry=repo.registry, digest=digest(f"blob-{seed}"), size=size)
    ManifestBlob.objects.create(manifest=m, blob=blob)
    for tag in tags:
        Tag.objects.create(repository=repo, name=tag, manifest=m)
    return m


def make_index(repo, seed, children, tags=(), pushed=1, pulled=None):
    m = Manifest.objects.create(repository=repo, digest=digest(seed), kind="index",
                                media_type="application/vnd.oci.image.index.v1+json",
                                fetched=True, last_pushed=days_ago(pushed),
                                last_pushed_source="push_event", last_pulled=days_ago(pulled))
    for child in children:
        IndexChild.objects.create(index=m, child=child, platform=child.platform)
    for tag in tags:
        Tag.objects.create(repository=repo, name=tag, manifest=m)
    return m


def sample_repo(name="team/app"):
    """An index with two children, three tagged images, one untagged image."""
    repo = make_repo(name)
    amd = make_image(repo, "amd", size=3000, platform="linux/amd64")
    arm = make_image(repo, "arm", size=4000, platform="linux/arm64")
    index = make_index(repo, "idx", [amd, arm], tags=["2.0", "latest"], pushed=2, pulled=1)
    images = [make_image(repo, f"img{n}", tags=[f"1.{n}"], size=100 * (n + 1), pushed=10 + n,
                         pulled=None if n == 0 else 400 * n) for n in range(3)]
    loose = make_image(repo, "loose", size=50, pushed=300)
    refresh(repo)
    return repo, index, images, loose


def policy_inventory():
    """team/app: five builds a day apart, a release, an index with two children and two
    untagged images (3 and 30 days old); other/x, which the policy tests do not cover."""
    observe_pulls(400)
    repo = make_repo("team/app")
    for n in range(5):
        make_image(repo, f"build{n}", tags=[f"build-{n}"], pushed=20 - n)
    make_image(repo, "rel", tags=["v1.0.0"], pushed=200)
    amd, arm = make_image(repo, "amd"), make_image(repo, "arm")
    make_index(repo, "idx", [amd, arm], tags=["latest"], pushed=100)
    make_image(repo, "new", pushed=3)
    make_image(repo, "old", pushed=30)
    refresh(repo)
    other = make_repo("other/x")
    make_image(other, "x0", pushed=100)
    refresh(other)
    return repo


def many(n):
    """n repositories with distinct sizes, item counts and push times; a few never pushed."""
    now = timezone.now()
    Repository.objects.bulk_create([
        Repository(registry=default_registry(), name=f"team{i % 7}/app{i:04d}",
                   item_count=(i * 37) % 101, total_size=(i * 7919) % 100_003,
                   last_pushed=None if i % 10 == 0 else now - timedelta(minutes=(i * 13) % 997))
        for i in range(n)])


def cosign_tag(subject, suffix="sig") -> str:
    """cosign's tag for what it attaches to ``subject`` (a digest): sha256-<hex>.sig|att|sbom."""
    return f"{subject.replace(':', '-')}.{suffix}"


def make_artifact(repo, seed, subject=None, kind="signature", tags=(), size=300, pushed=1):
    """An artifact manifest (a signature, attestation, SBOM...) with a blob of its own, that
    belongs to ``subject`` (a Manifest or a digest, as an OCI 1.1 ``subject`` field says; None
    when only its tags say, e.g. a cosign tag). ``store.refresh(repo)`` then decides, as for
    rows a sync writes, whether it is attached (its subject in the repository) or orphaned."""
    subject = getattr(subject, "digest", subject) or ""
    m = Manifest.objects.create(repository=repo, digest=digest(seed), kind="image",
                                media_type="application/vnd.oci.image.manifest.v1+json",
                                artifact=kind, subject=subject, platform="", size=size,
                                fetched=True, last_pushed=days_ago(pushed),
                                last_pushed_source="push_event")
    blob = Blob.objects.create(registry=repo.registry, digest=digest(f"blob-{seed}"), size=size)
    ManifestBlob.objects.create(manifest=m, blob=blob)
    for tag in tags:
        Tag.objects.create(repository=repo, name=tag, manifest=m)
    return m


def alpine_inventory(attested=False):
    """Issue 23's case: library/alpine, where an untagged index 30 days old (with an
    attestation attached to it, if ``attested``) lists two child images, and two tagged items
    pushed a day ago stay. A policy removing untagged items older than 7 days removes 1 of its
    3 items, with the index's 2 child images."""
    repo = make_repo("library/alpine")
    amd, arm = make_image(repo, "amd"), make_image(repo, "arm")
    index = make_index(repo, "idx", [amd, arm], pushed=30)
    if attested:
        make_artifact(repo, "att", subject=index, kind="attestation", pushed=30)
    make_image(repo, "keep1", tags=["3.19"], pushed=1)
    make_image(repo, "keep2", tags=["3.20"], pushed=1)
    refresh(repo)
    return repo
