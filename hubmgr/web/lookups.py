"""Object lookups shared by the pages and the API."""

from django.http import Http404

from hubmgr.inventory.models import Manifest, Repository
from hubmgr.inventory.queries import clean_text
from hubmgr.inventory.registries import default_registry


def _plain(text) -> bool:
    """No control characters: nothing stored has them, and PostgreSQL refuses NUL in a query."""
    return clean_text(text) == text


def get_repository(name) -> Repository:
    repo = Repository.objects.select_related("registry").filter(
        registry=default_registry(), name=name).first() if _plain(name) else None
    if repo is None:
        raise Http404(f"There is no repository {name!r} in the inventory. If it was pushed "
                      "recently, run a sync or wait for the registry's notification.")
    return repo


def get_manifest(repo, digest) -> Manifest:
    manifest = repo.manifests.filter(digest=digest).first() if _plain(digest) else None
    if manifest is None:
        raise Http404(f"{repo.name} has no manifest {digest}.")
    return manifest
