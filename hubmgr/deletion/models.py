"""Deletion jobs. The database is the source of truth; the broker only wakes workers."""

import uuid

from django.conf import settings
from django.db import models

from hubmgr.patterns import (
    MAX_GLOB_LENGTH, MAX_REGEX_LENGTH, validate_globs, validate_regex)


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    DONE = "done"  # every item deleted
    PARTIAL = "partial"  # finished, some items kept or failed, each with its reason
    FAILED = "failed"  # no item could be deleted
    CANCELLED = "cancelled"  # a maintainer cancelled it (cancelled_by, cancelled_at)


class ItemStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"  # claimed by a worker, under a lease
    RETRYING = "retrying"  # a transient failure; tried again at next_attempt_at
    DONE = "done"
    SKIPPED = "skipped"  # kept: something refers to it that the preview did not show
    FAILED = "failed"
    CANCELLED = "cancelled"  # not deleted: its job was cancelled before its DELETE was sent


class ReclaimState(models.TextChoices):
    """Where the bytes a job frees are: see reclaim.py."""

    OPEN = "open"  # the job runs: reclaim_bytes is the plan's estimate
    NOTHING = "nothing"  # finished, and freed nothing (every blob it named is still used)
    PENDING = "pending"  # finished: freed_bytes wait on disk for the garbage collector
    RECLAIMED = "reclaimed"  # the garbage collector ran: reclaimed_bytes left the disk
    UNTRACKED = "untracked"  # a job from before hubmgr recorded what jobs free

    @property
    def is_settled(self):
        """The job finished and its freed bytes are known."""
        return self in (ReclaimState.NOTHING, ReclaimState.PENDING, ReclaimState.RECLAIMED)


class StatusQuerySet(models.QuerySet):
    """Jobs or items by whether they finished (the model's FINISHED statuses)."""

    def finished(self):
        return self.filter(status__in=self.model.FINISHED)

    def unfinished(self):
        return self.exclude(status__in=self.model.FINISHED)


class DeletionJob(models.Model):
    FINISHED = (JobStatus.DONE, JobStatus.PARTIAL, JobStatus.FAILED, JobStatus.CANCELLED)
    objects = StatusQuerySet.as_manager()

    repository = models.ForeignKey("inventory.Repository", on_delete=models.SET_NULL, null=True,
                                   related_name="deletion_jobs")
    repository_name = models.CharField(max_length=255)  # kept for the audit record
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, related_name="deletion_jobs")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField()
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    reclaim_bytes = models.BigIntegerField(default=0)
    kept = models.JSONField(default=list)  # [{"digest", "reason"}] from the plan
    # When a worker is next due to wake up for this job; one pending wake-up at a time.
    wake_at = models.DateTimeField(null=True, blank=True)
    # What the finished job freed on disk, and whether the garbage collector has run since.
    reclaim_state = models.CharField(max_length=10, choices=ReclaimState.choices,
                                     default=ReclaimState.OPEN)
    freed_bytes = models.BigIntegerField(default=0)  # set when the job finishes
    reclaimed_bytes = models.BigIntegerField(default=0)  # set when the collector is detected
    reclaimed_at = models.DateTimeField(null=True, blank=True)  # when it was detected
    reclaim_checked_at = models.DateTimeField(null=True, blank=True)  # last check while pending
    reclaim_error = models.CharField(max_length=500, blank=True)  # why that check failed
    # The plan keeps what is attached to its items (a retry plans its failed items the same).
    keep_attached = models.BooleanField(default=False)
    # Job control (control.py). Set once each, by a conditional update: a job is cancelled
    # once and retried once; the retry is a job of its own, created by whoever retried.
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                     null=True, blank=True, related_name="+")
    retried_as = models.OneToOneField("self", on_delete=models.SET_NULL, null=True,
                                      blank=True, related_name="+")
    retry_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="+")

    class Meta:
        ordering = ["-created_at"]
        permissions = [("delete_images", "Can delete images and indexes from the registry")]
        indexes = [models.Index(fields=["reclaim_state", "finished_at"], name="job_reclaim")]

    def __str__(self):
        return f"deletion {self.pk} of {self.repository_name}"

    @property
    def is_finished(self):
        return self.status in self.FINISHED

    @property
    def is_cancelling(self):
        """Cancelled, and a DELETE that was in flight then has not answered yet."""
        return self.cancelled_at is not None and not self.is_finished

    @property
    def reclaim_pending(self):
        return self.reclaim_state == ReclaimState.PENDING

    @property
    def reclaim_done(self):
        return self.reclaim_state == ReclaimState.RECLAIMED

    @property
    def reclaim_nothing(self):
        return self.reclaim_state == ReclaimState.NOTHING


class ReclaimBlob(models.Model):
    """A blob (config or layer) or a manifest that a job's plan frees, with its size. Recorded
    when the job is created; at its end only those no manifest in the inventory still uses
    stay; they go when the garbage collector is detected (a job can free thousands)."""

    job = models.ForeignKey(DeletionJob, on_delete=models.CASCADE, related_name="reclaim_blobs")
    digest = models.CharField(max_length=140)
    size = models.BigIntegerField(default=0)
    # A manifest's own bytes: the registry never serves them as a blob, so never probed.
    manifest = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "digest"], name="reclaim_unique")]


class DeletionItem(models.Model):
    FINISHED = (ItemStatus.DONE, ItemStatus.SKIPPED, ItemStatus.FAILED, ItemStatus.CANCELLED)
    objects = StatusQuerySet.as_manager()

    job = models.ForeignKey(DeletionJob, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveIntegerField()  # plan order: indexes before their children
    digest = models.CharField(max_length=140)
    kind = models.CharField(max_length=10)
    tags = models.JSONField(default=list)  # the tags the preview showed
    size = models.BigIntegerField(default=0)
    reason = models.CharField(max_length=30)  # "selected" | "unreferenced_child" | "attached"
    # What the item waits for: the indexes of this job that list it (earlier in it), and, for
    # an attached artifact, its subject (earlier in it too): deleted once they are, kept when
    # one of them was kept.
    parents = models.JSONField(default=list)
    subject = models.CharField(max_length=140, blank=True, default="", db_default="")
    status = models.CharField(max_length=10, choices=ItemStatus.choices,
                              default=ItemStatus.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["job", "digest"], name="item_unique")]
        indexes = [models.Index(fields=["status", "claim_expires_at"], name="item_claims")]


class DeletionPreview(models.Model):
    """What a user was shown before "Delete forever": the plan as data, frozen. Confirming it
    runs exactly these items with exactly these tags and parents, never a new plan."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    repository = models.ForeignKey("inventory.Repository", on_delete=models.CASCADE,
                                   related_name="deletion_previews")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                   null=True, related_name="deletion_previews")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    # A shapes.PlanData: {"items": [...], "kept": [...], "reclaim_bytes", "unread": [...],
    #  "keep_attached", "orphaned": [...], "freed": {...}}
    plan = models.JSONField()
    # Set once, by the conditional update that confirms it: a preview runs at most once.
    job = models.OneToOneField(DeletionJob, on_delete=models.SET_NULL, null=True, blank=True,
                               related_name="preview")

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="preview_expires")]

    def __str__(self):
        return f"preview {self.pk} of {self.repository}"


class ProtectedTag(models.Model):
    """A rule that no deletion overrides (the page, the API, the CLI, a policy): an item with a
    tag that ``tag_regex`` finds (RE2, unanchored, as a policy's tag expressions) in a
    repository that ``repositories`` matches (a glob, as a policy's include) stays, and so does
    every manifest it lists (protection.py). Only holders of ``manage_protected_tags`` change
    the rules, through ``protection.save_rule`` / ``protection.delete_rule``, which write a
    ProtectionAudit row in the same transaction."""

    tag_regex = models.CharField(
        max_length=MAX_REGEX_LENGTH, validators=[validate_regex],
        help_text="Tags protected: an RE2 expression found anywhere in the tag; write ^ and $ "
                  "to match whole tags, e.g. ^(latest|prod)$ or ^v\\d+\\.\\d+\\.\\d+$.")
    repositories = models.CharField(
        max_length=MAX_GLOB_LENGTH, default="**", validators=[validate_globs],
        help_text="Repositories where it applies: a glob (team/* one path segment, team/** any "
                  "depth, ** all).")
    note = models.CharField(max_length=200, blank=True, help_text="Why, for the next reader.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["id"]
        permissions = [("manage_protected_tags", "Can add, change and remove protected tags")]

    def __str__(self):
        return f"{self.tag_regex} on {self.repositories}"


class ProtectionAudit(models.Model):
    """One change to the protected-tag rules: who, when, and the rule before and after."""

    class Action(models.TextChoices):
        CREATE = "create", "Added"
        CHANGE = "change", "Changed"
        DELETE = "delete", "Removed"

    rule = models.ForeignKey(ProtectedTag, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="audit")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                             on_delete=models.SET_NULL, related_name="+")
    at = models.DateTimeField(auto_now_add=True)
    action = models.CharField(max_length=10, choices=Action.choices)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "protected tag change"

    def __str__(self):
        return f"protected tag {self.action} at {self.at:%Y-%m-%d %H:%M}"
