"""What hubmgr knows a registry stores. Manifests are per repository (the same digest in two
repositories is two rows); blobs are per registry, since the registry stores each blob once."""

from django.db import models

from hubmgr.registry import manifests, names


class Kind(models.TextChoices):
    IMAGE = manifests.IMAGE, "Image"
    INDEX = manifests.INDEX, "Image index"


class PushSource(models.TextChoices):
    """Where "last pushed" came from: a push event, or (none seen) the image's created time."""

    PUSH_EVENT = "push_event", "push event"
    IMAGE_CREATED = "image_created", "the image's created time"


class Registry(models.Model):
    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(max_length=500)
    # Health as last seen by a sync or a ping, so pages can warn without a live call.
    last_error = models.TextField(blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "registries"

    def __str__(self):
        return self.name


class Repository(models.Model):
    registry = models.ForeignKey(Registry, on_delete=models.CASCADE, related_name="repositories")
    name = models.CharField(max_length=255)
    # Kept up to date by store.refresh_counts() so neither the repositories page nor the
    # table's pager needs an aggregation.
    item_count = models.PositiveIntegerField(default=0)
    tagged_count = models.PositiveIntegerField(default=0)
    index_count = models.PositiveIntegerField(default=0)
    total_size = models.BigIntegerField(default=0)
    # The last push and pull events seen for any of its manifests; they never move back, even
    # when that manifest is later deleted.
    last_pushed = models.DateTimeField(null=True, blank=True)
    last_pulled = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "repositories"
        constraints = [models.UniqueConstraint(fields=["registry", "name"], name="repo_unique")]
        indexes = [models.Index(fields=["registry", "total_size"], name="repo_size"),
                   models.Index(fields=["registry", "item_count"], name="repo_items"),
                   models.Index(fields=["registry", "last_pushed"], name="repo_pushed")]
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def valid_name(self):
        """False only for a row stored before names were checked; its pages cannot be
        linked, and an administrator can remove it."""
        return names.valid_name(self.name)

    def count_for(self, filter_name):
        """Top-level items matching a table filter, from the maintained counters."""
        return {
            "": self.item_count,
            "tagged": self.tagged_count,
            "untagged": self.item_count - self.tagged_count,
            Kind.INDEX: self.index_count,
            Kind.IMAGE: self.item_count - self.index_count,
        }[filter_name]


class Manifest(models.Model):

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="manifests")
    digest = models.CharField(max_length=140)  # sha256:… or sha512:…
    media_type = models.CharField(max_length=120, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.IMAGE)
    # "linux/amd64" for an image; the platforms of its children, comma separated, for an index.
    platform = models.CharField(max_length=500, blank=True)
    size = models.BigIntegerField(default=0)
    manifest_size = models.IntegerField(default=0)
    config_digest = models.CharField(max_length=140, blank=True)
    created = models.DateTimeField(null=True, blank=True)
    last_pushed = models.DateTimeField(null=True, blank=True)
    last_pushed_source = models.CharField(max_length=20, blank=True, choices=PushSource.choices)
    last_pulled = models.DateTimeField(null=True, blank=True)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    # Empty until the manifest's content has been fetched and read.
    fetched = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    # Denormalised for the table: tags as text, and whether the row is a top-level item (not an
    # untagged child shown only under its index).
    tags_text = models.TextField(blank=True)
    is_tagged = models.BooleanField(default=False)
    is_top_level = models.BooleanField(default=True)
    is_attestation = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["repository", "digest"],
                                               name="manifest_unique")]
        # Partial indexes over the table's rows, one per sort: a page is an index range scan
        # (the row id breaks ties and is part of every SQLite index).
        indexes = [
            models.Index(fields=["repository", "last_pushed"], name="m_pushed",
                         condition=models.Q(is_top_level=True)),
            models.Index(fields=["repository", "last_pulled"], name="m_pulled",
                         condition=models.Q(is_top_level=True)),
            models.Index(fields=["repository", "size"], name="m_size",
                         condition=models.Q(is_top_level=True)),
            models.Index(fields=["digest"], name="m_digest"),
        ]

    def __str__(self):
        return f"{self.repository.name}@{self.digest}"

    @property
    def tags(self):
        return self.tags_text.split() if self.tags_text else []

    @property
    def is_index(self):
        return self.kind == Kind.INDEX

    @property
    def pushed_from_created(self):
        return self.last_pushed_source == PushSource.IMAGE_CREATED


class Tag(models.Model):
    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=128)
    manifest = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="tag_set")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["repository", "name"], name="tag_unique")]

    def __str__(self):
        return f"{self.repository.name}:{self.name}"


class IndexChild(models.Model):
    index = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="child_links")
    child = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="parent_links")
    platform = models.CharField(max_length=100, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["index", "child"], name="child_unique")]


class Blob(models.Model):
    registry = models.ForeignKey(Registry, on_delete=models.CASCADE, related_name="blobs")
    digest = models.CharField(max_length=140)
    size = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["registry", "digest"], name="blob_unique")]


class ManifestBlob(models.Model):
    """An image's config and layers."""

    manifest = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="blob_links")
    blob = models.ForeignKey(Blob, on_delete=models.CASCADE, related_name="manifest_links",
                             db_index=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["manifest", "blob"], name="mblob_unique")]
        # A deletion plan asks, per blob, whether a manifest outside the plan references it:
        # one step into this index, answered from the index alone.
        indexes = [models.Index(fields=["blob", "manifest"], name="mblob_blob")]


class ProcessedEvent(models.Model):
    """Notification event ids already seen; the registry may deliver an event twice. An
    event that could not be applied keeps its reason here, for the admin to see."""

    event_id = models.CharField(max_length=100, unique=True)
    received_at = models.DateTimeField(auto_now_add=True)
    action = models.CharField(max_length=10, blank=True)
    repository = models.CharField(max_length=255, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        verbose_name = "notification event"
        indexes = [models.Index(fields=["received_at"], name="event_received")]

    def __str__(self):
        return self.event_id


class SyncRun(models.Model):
    registry = models.ForeignKey(Registry, on_delete=models.CASCADE, related_name="sync_runs")
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    repositories = models.IntegerField(default=0)
    tags = models.IntegerField(default=0)
    manifests_fetched = models.IntegerField(default=0)
    removed = models.IntegerField(default=0)
    # [{"repository", "reference", "error"}]: what could not be read; the sync went on.
    problems = models.JSONField(default=list)
    error = models.TextField(blank=True)
