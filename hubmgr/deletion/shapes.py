"""A deletion plan as plain data, declared once: what a preview keeps and shows, what a job
runs item by item, and what a policy run's report lists for each repository. Built by
``actions.plan_data`` (and, for a policy's dry run, ``policies.setwise``); read by
``jobs.create_job``, ``reclaim.record`` and the pages."""

from typing import NotRequired, TypedDict


class PlanItem(TypedDict):
    """One manifest that goes, in deletion order (an index before its children)."""

    digest: str
    type: str  # "image" or "index"
    tags: list[str]  # as the preview showed them
    size: int
    reason: str  # planner.SELECTED, or planner.CHILD for an index's unreferenced child
    parents: list[str]  # digests of the going indexes that list it


class KeptItem(TypedDict):
    """A manifest the planner keeps, with the reason in words."""

    digest: str
    reason: str


class Freed(TypedDict):
    """What the reclaim figure counts, by digest: [[digest, bytes], ...]."""

    manifests: list[list]
    blobs: list[list]


class PlanData(TypedDict):
    # The going items (``Plan.going``). The key stays "items": it is stored (DeletionPreview.plan)
    # and a preview's API answer shows it (see docs/glossary.md).
    items: list[PlanItem]
    kept: list[KeptItem]
    reclaim_bytes: int
    unread: NotRequired[list[str]]  # digests whose manifests could not be read
    freed: NotRequired[Freed]  # (a preview's, for the reclaim check)
