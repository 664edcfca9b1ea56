"""A selection across repositories: each repository's plan as the planner makes it (one graph
around the whole selection, planned repository by repository, as cleanup policies do), kept as
one preview per repository, and the one reclaim figure of them all.

The registry stores a blob once, whatever the repositories linking it, and its garbage
collector frees it when no remaining manifest links it. Each repository's plan counts what
its own deletion frees; a blob that only the selection's items in two repositories link is
freed by neither alone but by both together: ``reclaim_bytes`` (``planner.freed`` over every
plan's going items at once) counts it, once.
"""

import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hubmgr.inventory.models import Manifest, Repository

from . import actions
from .graph import collector_paused, load_graphs
from .models import DeletionJob, DeletionPreview
from .planner import freed, plan


@dataclass
class Across:
    previews: list  # [DeletionPreview], by repository name
    reclaim_bytes: int  # what the garbage collector frees once every plan has run


def preview(registry, refs, user, keep_attached=False) -> Across:
    """Plan deleting ``refs`` ((repository name, digest) pairs) and keep one preview per
    repository. A repository hubmgr does not know is left out (its items are not in the
    inventory)."""
    by_name = {}
    for name, digest in refs:
        by_name.setdefault(name, []).append(digest)
    repos = {r.name: r for r in Repository.objects.filter(registry=registry,
                                                          name__in=list(by_name))}
    names = {r.pk: r.name for r in repos.values()}
    ids = []
    for name, repo in repos.items():
        ids += Manifest.objects.filter(repository=repo, digest__in=by_name[name]) \
            .values_list("id", flat=True)
    with collector_paused():
        graph = load_graphs(names, ids)
        plans = {name: plan(graph, [(name, d) for d in dict.fromkeys(by_name[name])],
                            keep_attached) for name in sorted(repos)}
        going = {key for p in plans.values() for key in p.going_keys}
        manifests, blobs = freed(graph, going)
    expires = timezone.now() + timedelta(minutes=settings.DELETE_PREVIEW_MINUTES)
    previews = [DeletionPreview.objects.create(
        repository=repos[name], created_by=user, expires_at=expires,
        plan=actions.plan_data(p, freed=True)) for name, p in plans.items()]
    return Across(previews, sum(manifests.values()) + sum(blobs.values()))


def confirm(registry, preview_ids, user) -> list[DeletionJob]:
    """Start the job of each preview (actions.confirm: the same checks, and what was previewed
    is what runs), all or none: one that cannot run (gone, expired, already confirmed) stops
    them all, with its error."""
    found = dict(DeletionPreview.objects.filter(
        pk__in=[u for u in map(_as_uuid, preview_ids) if u],
        repository__registry=registry).values_list("pk", "repository_id"))
    repos = Repository.objects.in_bulk(set(found.values()))
    with transaction.atomic():
        jobs = []
        for preview_id in dict.fromkeys(preview_ids):
            repo = repos.get(found.get(_as_uuid(preview_id)))
            if repo is None:
                raise actions.PreviewGone(f"There is no preview {str(preview_id)[:40]!r} for "
                                          "you. Preview the selection again.", 404)
            jobs.append(actions.confirm(repo, preview_id, user))
    return jobs


def _as_uuid(value):
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
