"""Cleanup policies: which repositories, which items to remove, which to keep, and a brake.

Every change goes through ``service.save_policy`` / ``service.delete_policy``, which write the
audit row in the same transaction."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from hubmgr.patterns import (
    MAX_REGEX_LENGTH, RepositoryMatcher, validate_globs, validate_regex)


class Schedule(models.TextChoices):
    OFF = "off", "Off"
    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly"


class Mode(models.TextChoices):
    REPORT = "report", "Report only"
    DELETE = "delete", "Delete"


class Weekday(models.IntegerChoices):
    MONDAY = 0, "Monday"
    TUESDAY = 1, "Tuesday"
    WEDNESDAY = 2, "Wednesday"
    THURSDAY = 3, "Thursday"
    FRIDAY = 4, "Friday"
    SATURDAY = 5, "Saturday"
    SUNDAY = 6, "Sunday"


MAX_DAYS = 36500  # a hundred years


def _days(**kwargs):
    return models.PositiveIntegerField(null=True, blank=True,
                                       validators=[MaxValueValidator(MAX_DAYS)], **kwargs)


def _regex(**kwargs):
    return models.CharField(max_length=MAX_REGEX_LENGTH, blank=True,
                            validators=[validate_regex], **kwargs)


class CleanupPolicy(models.Model):
    name = models.CharField(max_length=100, unique=True)
    include = models.TextField(
        validators=[validate_globs],
        help_text="Repositories covered, one glob per line: team/* (one path segment), "
                  "team/** (any depth), ** (all); a line starting with ! excludes.")
    exclude = models.TextField(blank=True, validators=[validate_globs],
                               help_text="Repositories never covered, one glob per line.")
    schedule = models.CharField(max_length=10, choices=Schedule.choices, default=Schedule.OFF)
    run_at = models.TimeField(null=True, blank=True, help_text="Time of day (UTC).")
    weekday = models.PositiveSmallIntegerField(choices=Weekday.choices, null=True, blank=True)
    # When the schedule was set or last changed (service.save_policy): it applies from its
    # next time after this, never to a time already passed. None: since the policy was made.
    schedule_from = models.DateTimeField(null=True, blank=True, editable=False)
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.REPORT)

    # Remove rules.
    remove_tag_regex = _regex(help_text="Remove tagged items whose every tag matches this ...")
    remove_tag_days = _days(help_text="... and that were last pushed more than this many days "
                                      "ago (a push seen, never a build time).")
    remove_untagged_days = _days(help_text="Remove untagged items older than this many days "
                                           "(last push seen, else first seen).")
    remove_stale = models.BooleanField(default=False, help_text="Remove items that are Stale "
                                       "on evidence (never those whose state is unknown).")
    remove_orphans_days = _days(help_text="Remove orphaned artifacts (signatures, "
                                          "attestations, SBOMs... whose subject is gone) older "
                                          "than this many days (last push seen, else first "
                                          "seen).")

    # Keep rules: they always win.
    keep_last = models.PositiveIntegerField(
        null=True, blank=True, help_text="Keep the N most recently pushed tagged items of "
                                         "each repository.")
    keep_tag_regex = _regex(help_text="Keep items with any tag matching this.")
    keep_pulled_days = _days(help_text="Keep items pulled within this many days.")

    # The brake, per repository.
    brake_share = models.FloatField(
        default=0.5, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Stop a repository whose plan removes more than this share of its items.")
    brake_count = models.PositiveIntegerField(
        null=True, blank=True, help_text="Stop a repository whose plan removes more than this "
                                         "many items.")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")

    class Meta:
        verbose_name_plural = "cleanup policies"
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        errors = {}
        if bool(self.remove_tag_regex) != (self.remove_tag_days is not None):
            field = "remove_tag_days" if self.remove_tag_regex else "remove_tag_regex"
            errors[field] = "The tagged-items rule needs both an expression and a number of days."
        if self.schedule != Schedule.OFF and self.run_at is None:
            errors["run_at"] = "A scheduled policy needs a time of day."
        if self.schedule == Schedule.WEEKLY and self.weekday is None:
            errors["weekday"] = "A weekly policy needs a day of the week."
        if not self.has_remove_rule:
            errors.setdefault("remove_untagged_days", "A policy needs at least one remove rule.")
        if errors:
            raise ValidationError(errors)

    @property
    def has_remove_rule(self):
        return bool(self.remove_tag_regex or self.remove_untagged_days is not None
                    or self.remove_stale or self.remove_orphans_days is not None)

    def covers(self):
        """A callable: repository name -> covered by this policy."""
        return RepositoryMatcher(self.include, self.exclude)


class PolicyRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        BRAKED = "braked", "Done; the brake stopped some repositories"
        FAILED = "failed", "Failed"
        # "Run now" on the page in delete mode: planned, nothing deleted until a maintainer
        # confirms (runs.confirm_run), then DONE or BRAKED; UNCONFIRMED when cancelled or
        # left past its time (runs.expire_unconfirmed), and nothing of it is ever deleted.
        AWAITING = "awaiting", "Awaiting confirmation"
        UNCONFIRMED = "unconfirmed", "Not confirmed; nothing deleted"

        @property
        def is_finished(self):
            return self != PolicyRun.Status.RUNNING

    policy = models.ForeignKey(CleanupPolicy, on_delete=models.CASCADE, related_name="runs")
    started_at = models.DateTimeField(auto_now_add=True)
    # Moved forward while the run works; a running run without a sign of life for
    # runs.ABANDONED_AFTER was interrupted (its process died) and is marked failed.
    heartbeat_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING)
    dry_run = models.BooleanField(default=True)
    scheduled = models.BooleanField(default=False)  # started by the schedule, not by a person
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    report = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    # The deletion jobs a run in delete mode started, one per repository it deletes from.
    jobs = models.ManyToManyField("deletion.DeletionJob", blank=True, related_name="+")
    # Set once, by the conditional update in runs.confirm_brake that lets one confirmation of
    # what the brake stopped through (a double click or a second maintainer finds it set).
    brake_confirmed_at = models.DateTimeField(null=True, blank=True)
    brake_confirmed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                           on_delete=models.SET_NULL, related_name="+")
    # A run that plans first and deletes only once a maintainer confirms what it showed
    # ("Run now" on the page in delete mode); the API, the CLI and the schedule delete at once.
    confirm_first = models.BooleanField(default=False)
    # Set once, by the conditional update in runs.confirm_run ("Delete forever") or
    # runs.cancel_run ("Cancel"): who answered and when; the status says which answer.
    answered_at = models.DateTimeField(null=True, blank=True)
    answered_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [models.UniqueConstraint(
            fields=["policy"], condition=models.Q(status="running"), name="one_running_run")]

    def __str__(self):
        return f"{self.policy.name} run {self.pk} ({self.status})"


class PolicyAudit(models.Model):
    class Action(models.TextChoices):
        CREATE = "create", "Created"
        CHANGE = "change", "Changed"
        DELETE = "delete", "Deleted"

    policy = models.ForeignKey(CleanupPolicy, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="audit")
    policy_name = models.CharField(max_length=100)  # kept when the policy is deleted
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                             on_delete=models.SET_NULL, related_name="+")
    at = models.DateTimeField(auto_now_add=True)
    action = models.CharField(max_length=10, choices=Action.choices)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "policy change"

    def __str__(self):
        return f"{self.policy_name} {self.action} at {self.at:%Y-%m-%d %H:%M}"
