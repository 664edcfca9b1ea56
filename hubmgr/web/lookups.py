"""Object lookups shared by the pages and the API."""

from django.http import Http404

from hubmgr.inventory.models import Manifest, Repository
from hubmgr.inventory.registries import DEFAULT_NAME, default_registry
from hubmgr.policies.models import CleanupPolicy, PolicyRun
from hubmgr.registry import names


def get_repository(name) -> Repository:
    _check_name(name)
    repo = Repository.objects.select_related("registry").filter(
        registry=default_registry(), name=name).first()
    if repo is None:
        raise _no_such(name)
    return repo


def get_version(name) -> int:
    """A repository's version, in one small query: open tables ask for it every few seconds."""
    _check_name(name)
    found = list(Repository.objects.filter(registry__name=DEFAULT_NAME, name=name)
                 .values_list("version", flat=True)[:1])
    if not found:
        raise _no_such(name)
    return found[0]


def _check_name(name):
    if not names.valid_name(name):
        raise Http404(f"{names.shown(name)} is not a valid repository name: lower-case "
                      "letters, digits and . _ - separators, in parts joined by /.")


def _no_such(name):
    return Http404(f"There is no repository {name!r} in the inventory. If it was pushed "
                   "recently, run a sync or wait for the registry's notification.")


def get_manifest(repo, digest) -> Manifest:
    if not names.valid_digest(digest):
        raise Http404(f"{names.shown(digest)} is not a digest (sha256: and 64 hex digits).")
    manifest = repo.manifests.filter(digest=digest).first()
    if manifest is None:
        raise Http404(f"{repo.name} has no manifest {digest}.")
    return manifest


def get_policy(policy_id) -> CleanupPolicy:
    policy = CleanupPolicy.objects.filter(pk=policy_id).first()
    if policy is None:
        raise Http404(f"There is no cleanup policy {policy_id}.")
    return policy


def get_run(run_id) -> PolicyRun:
    run = PolicyRun.objects.select_related("policy", "started_by", "brake_confirmed_by").filter(
        pk=run_id).first()
    if run is None:
        raise Http404(f"There is no policy run {run_id}.")
    return run
