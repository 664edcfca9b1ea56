"""A deletion plan as plain data, declared once: what a preview keeps and shows, what a job
runs item by item, and what a policy run's report lists for each repository. Built by
``actions.plan_data`` (and, for a policy's dry run, ``policies.setwise``); read by
``jobs.create_job``, ``reclaim.record`` and the pages."""

from typing import NotRequired, TypedDict


class PlanItem(TypedDict):
    """One manifest that goes, in deletion order (an index before its children, a subject
    before what is attached to it)."""

    digest: str
    type: str  # "image" or "index"
    tags: list[str]  # as the preview showed them
    size: int
    # planner.SELECTED; planner.ATTACHED for what goes with the going item it is attached to;
    # planner.CHILD for an index's unreferenced child
    reason: str
    parents: list[str]  # digests of the going indexes that list it
    artifact: NotRequired[str]  # what it is, when an artifact: "Signature", "SBOM", ...
    tool: NotRequired[str]  # who made that artifact, when known ("" when not)
    subject: NotRequired[str]  # (ATTACHED) digest of the going item it is attached to


class OrphanedItem(TypedDict):
    """An artifact attached to a going item that stays (kept by choice, or for the reason
    ``kept`` gives): orphaned once its subject is deleted."""

    digest: str
    type: str
    tags: list[str]
    size: int
    artifact: str  # its label ("" for a plain image or index)
    tool: str
    subject: str  # digest of the going item it is attached to


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
    keep_attached: NotRequired[bool]  # the plan keeps attached artifacts (by choice)
    orphaned: NotRequired[list[OrphanedItem]]  # (absent from plans made before artifacts)
