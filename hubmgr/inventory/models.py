"""What hubmgr knows a registry stores. Manifests are per repository (the same digest in two
repositories is two rows); blobs are per registry, since the registry stores each blob once."""

from django.db import models
from django.db.models import F

from hubmgr.registry import artifacts, manifests, names


class Kind(models.TextChoices):
    IMAGE = manifests.IMAGE, "Image"
    INDEX = manifests.INDEX, "Image index"


class ArtifactKind(models.TextChoices):
    """What an image or index is beyond that, when it is not a runnable image or a plain image
    index (hubmgr.registry.artifacts decides): empty for those."""

    SIGNATURE = artifacts.SIGNATURE, artifacts.LABELS[artifacts.SIGNATURE]
    ATTESTATION = artifacts.ATTESTATION, artifacts.LABELS[artifacts.ATTESTATION]
    SBOM = artifacts.SBOM, artifacts.LABELS[artifacts.SBOM]
    CHART = artifacts.CHART, artifacts.LABELS[artifacts.CHART]
    ARTIFACT = artifacts.ARTIFACT, "Artifact"


class PushSource(models.TextChoices):
    """Where "last pushed" came from: a push event, or (none seen) the image's created time."""

    PUSH_EVENT = "push_event", "push event"
    ACCESS_LOG = "access_log", "a push in an access log"
    IMAGE_CREATED = "image_created", "the image's created time"


# The error of a placeholder row whose manifest the registry answered 404 for.
MISSING = ("the registry has no such manifest (404): an index lists it, but it was deleted "
           "or never pushed")
# The table filter (and count) of artifacts whose subject is gone.
ORPHANED = "orphaned"
# The way of reading a manifest that the inventory's rows hold: a row read by an earlier one
# (or not read) is read again by the next sync. 1: artifact kinds, subjects, foreign layers.
READ_VERSION = 1

# The sources that are evidence of a push at that time (a build time is not).
SEEN_PUSH = (PushSource.PUSH_EVENT, PushSource.ACCESS_LOG)


class Registry(models.Model):
    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(max_length=500)
    # Health as last seen by a sync or a ping, so pages can warn without a live call.
    last_error = models.TextField(blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    # The observation window. notified_since: when the first notification from this registry
    # arrived (None: none yet). pulls_observed_since: since when hubmgr has seen every pull and
    # push; it starts with the first notification, moves back as far as access logs imported
    # with import_pulls --complete cover, and is set outright by --since or --reset-window.
    notified_since = models.DateTimeField(null=True, blank=True)
    pulls_observed_since = models.DateTimeField(null=True, blank=True)
    # The overview's storage snapshot (hubmgr.inventory.storage.snapshots), on the database's
    # clock: when the inventory last changed (a push, delete or sync wrote to it), and when the
    # latest computation of the figures started. Changed after it started: the figures are
    # out of date, and the periodic task computes them again.
    inventory_changed_at = models.DateTimeField(null=True, blank=True)
    snapshot_started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "registries"

    def __str__(self):
        return self.name


class NullsFirstIndex(models.Index):
    """(registry, column, name) for a sort of the repositories page by a column that may be
    empty: listing orders ``column ASC NULLS FIRST, name`` or ``column DESC NULLS LAST, name
    DESC``. PostgreSQL sorts NULL last ascending, so only an index declared NULLS FIRST gives
    both orders (read forward and backward); SQLite cannot declare it, and sorts NULL first
    ascending anyway."""

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor != "postgresql":
            return super().create_sql(model, schema_editor, using, **kwargs)
        fields = [model._meta.get_field(name) for name in self.fields]
        return schema_editor._create_index_sql(
            model, fields=fields, name=self.name, using=using,
            col_suffixes=("", "NULLS FIRST", ""), **kwargs)


class Repository(models.Model):
    registry = models.ForeignKey(Registry, on_delete=models.CASCADE, related_name="repositories")
    name = models.CharField(max_length=255)
    # Kept up to date by store.refresh_counts() so neither the repositories page nor the
    # table's pager needs an aggregation.
    item_count = models.PositiveIntegerField(default=0)
    tagged_count = models.PositiveIntegerField(default=0)
    index_count = models.PositiveIntegerField(default=0)
    orphan_count = models.PositiveIntegerField(default=0, db_default=0)
    total_size = models.BigIntegerField(default=0)
    # The last push and pull events seen for any of its manifests; they never move back, even
    # when that manifest is later deleted.
    last_pushed = models.DateTimeField(null=True, blank=True)
    last_pulled = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    # Its top-level items Stale on evidence as of the latest storage figures (the snapshot's
    # stale_items, written with them by storage.snapshots.take); None: not known then.
    stale_count = models.PositiveIntegerField(null=True, blank=True)
    # Moves forward with every change an open table shows (items, tags, sizes, push and pull
    # times): the page asks for it to know whether to reload its rows.
    version = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "repositories"
        constraints = [models.UniqueConstraint(fields=["registry", "name"], name="repo_unique")]
        # The repositories page's sorts, name breaking ties (hubmgr.inventory.catalog.listing).
        indexes = [models.Index(fields=["registry", "total_size", "name"], name="repo_size"),
                   models.Index(fields=["registry", "item_count", "name"], name="repo_items"),
                   NullsFirstIndex(fields=["registry", "last_pushed", "name"],
                                   name="repo_pushed_nf"),
                   NullsFirstIndex(fields=["registry", "last_pulled", "name"], name="repo_pulled"),
                   models.Index(F("registry"), F("item_count") - F("tagged_count"), F("name"),
                                name="repo_untagged"),
                   NullsFirstIndex(fields=["registry", "stale_count", "name"], name="repo_stale")]
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def valid_name(self):
        """False only for a row stored before names were checked; its pages cannot be
        linked, and an administrator can remove it."""
        return names.valid_name(self.name)

    @property
    def untagged_count(self):
        """Top-level items without a tag (the repositories page sorts by it: repo_untagged)."""
        return self.item_count - self.tagged_count

    def counts_filter(self, filter_name):
        """Whether count_for knows this filter's count."""
        return filter_name in ("", "tagged", "untagged", Kind.INDEX, Kind.IMAGE)

    def count_for(self, filter_name):
        """Top-level items matching a table filter, from the maintained counters."""
        return {
            "": self.item_count,
            "tagged": self.tagged_count,
            "untagged": self.untagged_count,
            Kind.INDEX: self.index_count,
            Kind.IMAGE: self.item_count - self.index_count,
        }[filter_name]


class SortIndex(models.Index):
    """(repository, column) over the table's rows, read forward for one direction of a sort
    and backward for the other; ties are broken by the row id.

    PostgreSQL: (repository, column NULLS FIRST, id) INCLUDE (is_tagged, kind). The table
    orders ``column ASC NULLS FIRST, id ASC`` or ``column DESC NULLS LAST, id DESC``; only an
    index declared NULLS FIRST gives both orders (the default, NULLS LAST, gave neither, and
    every page was a sequential scan and a sort). The included columns let a filtered or deep
    (OFFSET) page find its ids in the index alone.
    SQLite: (repository, column) as declared. SQLite cannot declare NULLS in an index; it sorts
    NULL first ascending and last descending, and every index ends with the row id."""

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor != "postgresql":
            return super().create_sql(model, schema_editor, using, **kwargs)
        repository, column = (model._meta.get_field(name) for name in self.fields)
        return schema_editor._create_index_sql(
            model, fields=[repository, column, model._meta.pk], name=self.name, using=using,
            col_suffixes=("", "NULLS FIRST", ""), include=["is_tagged", "kind"],
            condition=self._get_condition_sql(model, schema_editor), **kwargs)


class WideSortIndex(models.Index):
    """(column) over every repository's table rows: the registry-wide table's sort (/images,
    catalog/wide.py), read forward for one direction and backward for the other.

    PostgreSQL: (column NULLS FIRST, id) INCLUDE every column a filter of that table reads
    (WIDE_FILTER_COLUMNS), so that the ids of a filtered page, or of the first matches, come
    from the index alone (an index-only scan) whatever the filters. SQLite: (column) as
    declared; every SQLite index ends with the row id."""

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor != "postgresql":
            return super().create_sql(model, schema_editor, using, **kwargs)
        column = model._meta.get_field(self.fields[0])
        include = [name for name in WIDE_FILTER_COLUMNS if name != column.name]
        return schema_editor._create_index_sql(
            model, fields=[column, model._meta.pk], name=self.name, using=using,
            col_suffixes=("NULLS FIRST", ""), include=include,
            condition=self._get_condition_sql(model, schema_editor), **kwargs)


# What the registry-wide table's filters read (catalog/wide.py items): in its sort indexes.
WIDE_FILTER_COLUMNS = ("repository_id", "kind", "artifact", "is_tagged", "is_orphan",
                       "last_pushed_source", "last_pushed", "last_pulled", "platform")


class TriggerCounted(models.Model):
    """A model with columns that database triggers keep (migration 0010): Django inserts their
    default, and the save of a loaded instance never writes them back (it could hold a count
    that a trigger has since changed). Only bulk writes are used on these tables anyway."""

    TRIGGER_COUNTED = ()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                field.name for field in self._meta.concrete_fields
                if not field.primary_key and field.name not in self.TRIGGER_COUNTED]
        super().save(*args, **kwargs)


class ManifestQuerySet(models.QuerySet):
    def top_level(self):
        """The items a repository's table lists: indexes and images, but not an untagged image
        reachable only as an index's child (it is listed under its index)."""
        return self.filter(is_top_level=True)

    def read(self):
        """Rows whose manifest was read, the way the inventory reads one now (READ_VERSION):
        a sync does not read them again."""
        return self.filter(fetched=True, read_version__gte=READ_VERSION)

    def not_read(self):
        """Rows a sync reads (again): never read, or read by an earlier way of reading."""
        return self.exclude(fetched=True, read_version__gte=READ_VERSION)


class Manifest(TriggerCounted):

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="manifests")
    digest = models.CharField(max_length=140)  # sha256:… or sha512:…
    # How many repositories of the registry hold this digest, this one included (kept by
    # triggers): the manifest's own blob is freed by deleting it only where this is 1.
    digest_repositories = models.IntegerField(default=1, db_default=1)
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
    artifact = models.CharField(max_length=12, blank=True, choices=ArtifactKind.choices,
                                default="", db_default="")
    # The media type that decided it; who made it (cosign, notation, buildx, helm).
    artifact_type = models.CharField(max_length=255, blank=True, default="", db_default="")
    tool = models.CharField(max_length=12, blank=True, default="", db_default="")
    # The digest of what it belongs to: a manifest's own "subject" field, BuildKit's reference
    # digest, the digest a cosign or referrers tag names (hubmgr.registry.artifacts). While
    # that is in the repository, the row is listed under it (not in the table's top level)
    # and deleted with it. Once learned it stays: the registry keeps the tag-less earlier
    # versions of a cosign signature, which still belong to the same subject.
    subject = models.CharField(max_length=140, blank=True, default="", db_default="")
    referrers_list = models.BooleanField(default=False, db_default=False)  # a fallback index
    # An attestation's in-toto predicate types, space separated.
    predicates = models.CharField(max_length=500, blank=True, default="", db_default="")
    # Has a subject, but it is not in the repository (or its chain loops): a top-level item,
    # with the orphaned filter and count.
    is_orphan = models.BooleanField(default=False, db_default=False)
    # Bytes of layers the manifest lists but the registry does not store (foreign or
    # non-distributable): shown, never counted in a size.
    foreign_size = models.BigIntegerField(default=0, db_default=0)
    read_version = models.PositiveSmallIntegerField(default=0, db_default=0)

    # The bytes of the blobs this manifest alone links to (Blob.manifest_count 1; kept by
    # triggers, migration 0016): what deleting it frees of its blobs, whatever else goes.
    sole_bytes = models.BigIntegerField(default=0, db_default=0)

    # Whether a row of this repository has named this manifest as its subject (set by
    # triggers, migration 0018, and left set): false only where nothing was ever attached, so
    # what is attached is looked up only for the rows it marks.
    has_attached = models.BooleanField(default=False, db_default=False)

    TRIGGER_COUNTED = ("digest_repositories", "sole_bytes", "has_attached")
    objects = ManifestQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["repository", "digest"],
                                               name="manifest_unique")]
        # One index per sort over the table's rows (see SortIndex): a page, a keyset page and
        # a filtered page are an index range scan. On PostgreSQL, migration 0004 also adds a
        # trigram index on tags_text (m_tags_trgm) for the search; SQLite has none.
        indexes = [
            SortIndex(fields=["repository", "last_pushed"], name="m_sort_pushed",
                      condition=models.Q(is_top_level=True)),
            SortIndex(fields=["repository", "last_pulled"], name="m_sort_pulled",
                      condition=models.Q(is_top_level=True)),
            SortIndex(fields=["repository", "size"], name="m_sort_size",
                      condition=models.Q(is_top_level=True)),
            models.Index(fields=["digest"], name="m_digest"),
            # What is attached to a row: the table's artifacts under their subject, a plan's.
            models.Index(fields=["repository", "subject"], name="m_subject",
                         condition=~models.Q(subject="")),
            # The table's Artifact and Orphaned artifact filters: a few rows of many.
            models.Index(fields=["repository"], name="m_top_artifact",
                         condition=models.Q(is_top_level=True) & ~models.Q(artifact="")),
            models.Index(fields=["repository"], name="m_orphan",
                         condition=models.Q(is_orphan=True)),
            # The registry-wide table's sorts (see WideSortIndex), migration 0017; on
            # PostgreSQL that migration also adds a trigram index on platform
            # (m_wide_platform_trgm) for its platform filter.
            WideSortIndex(fields=["last_pushed"], name="m_wide_pushed",
                          condition=models.Q(is_top_level=True)),
            WideSortIndex(fields=["last_pulled"], name="m_wide_pulled",
                          condition=models.Q(is_top_level=True)),
            WideSortIndex(fields=["size"], name="m_wide_size",
                          condition=models.Q(is_top_level=True)),
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
    def artifact_info(self) -> artifacts.Artifact:
        """What the row is, as hubmgr.registry.artifacts describes it (its label)."""
        return artifacts.Artifact(self.artifact or self.kind, self.artifact_type, self.tool,
                                  self.subject, self.referrers_list,
                                  tuple(self.predicates.split()))

    @property
    def is_attached(self):
        """Listed under its subject, and deleted with it."""
        return bool(self.subject) and not self.is_orphan

    @property
    def pushed_from_created(self):
        return self.last_pushed_source == PushSource.IMAGE_CREATED


class Tag(models.Model):
    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=128)
    manifest = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="tag_set")
    updated_at = models.DateTimeField(auto_now=True)
    # When the registry last set it: the push event's timestamp, or the time a sync saw it. A
    # push or tag delete event older than this (delivered late) leaves the tag alone.
    event_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["repository", "name"], name="tag_unique")]

    def __str__(self):
        return f"{self.repository.name}:{self.name}"


class TagHistory(models.Model):
    """Where a tag pointed, and when: from push events (and pushes found in access logs), so a
    pull by tag in an old log line can be resolved to the digest the tag named at that time.
    ``until`` is empty while the tag still points there (as far as hubmgr knows)."""

    class Source(models.TextChoices):
        PUSH_EVENT = "push_event", "push event"
        ACCESS_LOG = "access_log", "access log"

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE,
                                   related_name="tag_history")
    tag = models.CharField(max_length=128)
    digest = models.CharField(max_length=140)
    since = models.DateTimeField()
    until = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=20, choices=Source.choices)

    class Meta:
        # Also the index that finds where a tag pointed at a given time.
        constraints = [models.UniqueConstraint(fields=["repository", "tag", "since"],
                                               name="tag_history_unique")]

    def __str__(self):
        return f"{self.repository.name}:{self.tag}@{self.digest} from {self.since}"


class IndexChild(models.Model):
    index = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="child_links")
    child = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="parent_links")
    platform = models.CharField(max_length=100, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["index", "child"], name="child_unique")]


class Blob(TriggerCounted):
    registry = models.ForeignKey(Registry, on_delete=models.CASCADE, related_name="blobs")
    digest = models.CharField(max_length=140)
    size = models.BigIntegerField()
    # How many manifests link to it (ManifestBlob rows; kept by triggers): a plan frees it
    # when that many of its own manifests reference it.
    manifest_count = models.IntegerField(default=0, db_default=0)

    TRIGGER_COUNTED = ("manifest_count",)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["registry", "digest"], name="blob_unique")]
        # The blobs several manifests share, by how many: a policy's dry run looks for those
        # that as few manifests reference as its plan may delete (setwise._FREED_BLOBS), and
        # read every blob of the registry for it without this index.
        indexes = [models.Index(fields=["manifest_count"], name="blob_shared",
                                condition=models.Q(manifest_count__gte=2))]


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
        indexes = [models.Index(fields=["received_at"], name="event_received"),
                   # The pages' "rejected in the last 7 days" count reads only these.
                   models.Index(fields=["received_at"], name="event_rejected",
                                condition=~models.Q(error=""))]

    def __str__(self):
        return self.event_id


class QueuedEnvelope(models.Model):
    """A notification body as the webhook received it, waiting for a worker to apply its
    events (in arrival order, by id). Applied envelopes are deleted; one that could not be
    applied at all stays, with its error, out of the queue's way."""

    received_at = models.DateTimeField(auto_now_add=True)
    body = models.BinaryField()
    events = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        verbose_name = "queued notification"

    def __str__(self):
        return f"envelope {self.pk} ({self.events} events)"


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
    # The catalog was read whole, so repositories missing from it may be forgotten at the end.
    whole_catalog = models.BooleanField(default=False)
    # Repositories not synced yet; the task that brings it to 0 closes the run.
    remaining = models.IntegerField(default=0)


class RepositorySync(models.Model):
    """One repository of a sync run: a unit of work that any worker may take. Its figures are
    added to the run once, when ``finished_at`` is first set."""

    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="repository_syncs")
    name = models.CharField(max_length=255)
    listed = models.BooleanField(default=True)  # False: known to us, but not in the catalog
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)  # the Celery worker that did it

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="reposync_unique")]


class StorageSnapshot(models.Model):
    """What a registry (``repository`` empty) or one repository stored on a day, for the
    overview and its charts (hubmgr.inventory.storage.snapshots). One row per day: the day's last
    computation replaces its earlier ones. Bytes are distinct blobs (configs and layers): the
    registry's row counts a layer shared by two repositories once, a repository's row counts
    its own distinct blobs, as its Size does. Stale figures are empty when the observation
    window was too short to tell (Stale is said only on evidence)."""

    registry = models.ForeignKey(Registry, on_delete=models.CASCADE, related_name="snapshots")
    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, null=True, blank=True,
                                   related_name="snapshots", db_index=False)
    date = models.DateField()
    computed_at = models.DateTimeField()
    bytes = models.BigIntegerField(default=0)
    items = models.PositiveIntegerField(default=0)
    untagged_bytes = models.BigIntegerField(default=0)
    untagged_items = models.PositiveIntegerField(default=0)
    stale_bytes = models.BigIntegerField(null=True, blank=True)
    stale_items = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        # Also the indexes the pages read: a registry's days, a repository's days.
        constraints = [
            models.UniqueConstraint(fields=["registry", "date"], name="snapshot_registry_day",
                                    condition=models.Q(repository__isnull=True)),
            models.UniqueConstraint(fields=["repository", "date"],
                                    name="snapshot_repository_day",
                                    condition=models.Q(repository__isnull=False)),
        ]
        indexes = [models.Index(fields=["date"], name="snapshot_date")]

    def __str__(self):
        return f"{self.repository or self.registry} on {self.date}"
