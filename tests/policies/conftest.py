"""Fixtures of the cleanup policy tests."""

import pytest

from hubmgr.inventory.catalog.store import refresh
from hubmgr.inventory.models import Repository

from tests.support.factories import make_image, make_index, make_repo


@pytest.fixture
def builds_repo(db):
    """team/app: 12 build tags a day apart, two release tags, an index with two untagged
    children, three untagged images of various ages."""
    repo = make_repo("team/app")
    for n in range(12):
        make_image(repo, f"build{n}", tags=[f"build-{n}"], pushed=40 - n)
    make_image(repo, "rel", tags=["v1.0.0"], pushed=200)
    amd, arm = make_image(repo, "amd"), make_image(repo, "arm")
    make_index(repo, "idx", [amd, arm], tags=["latest"], pushed=100)
    for n, age in enumerate((1, 10, 30)):
        make_image(repo, f"loose{n}", pushed=age)
    refresh(repo)
    make_image(make_repo("other/x"), "x0", pushed=100)
    refresh(Repository.objects.get(name="other/x"))
    return repo
