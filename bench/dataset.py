"""What the synthetic inventories of `make bench` share: rows written straight into the tables
(insert_rows, recount_references), and the artifacts attached to a tenth of their items
(carries_artifacts, add_artifacts), so that the shape of an attached artifact is written here
only."""

import hashlib
import importlib
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection

from hubmgr.registry import artifacts

# The predicate of docker buildx's default attestation (SLSA provenance, mode=min).
SLSA_PROVENANCE = "https://slsa.dev/provenance/v0.2"
# Their manifests' sizes, as tests/fixtures/artifacts has them (the attestation with one layer).
SIGNATURE_MANIFEST_SIZE, ATTESTATION_MANIFEST_SIZE = 558, 600
# Blob digests of attached artifacts start with this: the builders find their own blobs by
# their first hex digit (a to f), and no builder uses 9.
ARTIFACT_BLOB_PREFIX = "sha256:9"


@dataclass(frozen=True)
class Attached:
    """One kind of artifact a carrying item has: what the sync stores for it (artifact, the
    media type that decided it, tool, predicates), its manifest's size, its one blob's size
    range, and when it was pushed after its subject."""

    artifact: str
    artifact_type: str
    tool: str
    predicates: str
    manifest_size: int
    blob_sizes: range
    pushed_after: timedelta
    tagged: bool  # cosign's tag sha256-<hex>.sig names its subject; BuildKit tags nothing


# A cosign signature (tag sha256-<hex>.sig, a simple-signing payload) and a docker buildx
# provenance attestation (in-toto), as tests/fixtures/artifacts shapes them; each with one
# blob of its own.
ATTACHED = (
    Attached(artifacts.SIGNATURE, artifacts.SIMPLE_SIGNING, artifacts.COSIGN, "",
             SIGNATURE_MANIFEST_SIZE, range(300, 701), timedelta(minutes=1), True),
    Attached(artifacts.ATTESTATION, artifacts.IN_TOTO, artifacts.BUILDX, SLSA_PROVENANCE,
             ATTESTATION_MANIFEST_SIZE, range(1000, 5001), timedelta(0), False),
)


def carries_artifacts(i):
    """Whether item i of a dataset carries a signature and an attestation: one number in each
    ten, at a different place in each ten (0, 19, 28, 37, ...), so that a tenth of the indexes
    and a tenth of the images carry them, tagged and untagged alike. The builders ask it of
    their top-level items only."""
    return (i + i // 10) % 10 == 0


def carrier_of(i):
    """The number in i's ten that carries artifacts."""
    return i - i % 10 + (-(i // 10)) % 10


def cosign_tag(subject):
    """cosign's tag for the signature of ``subject``: ``sha256-<hex>.sig``."""
    return subject.replace(":", "-", 1) + ".sig"


def attached_digest(repository, subject, artifact):
    """The digest of the ``artifact`` (a kind) attached to ``subject`` in the repository
    named ``repository``: a SHA-256 like a real one, the same for every builder and for the
    ingest section's pushes. The repository is part of it because two builders use the same
    subject digests in different repositories."""
    return "sha256:" + hashlib.sha256(f"{repository}@{subject}/{artifact}".encode()).hexdigest()


def add_artifacts(registry_id, subjects):
    """Attach a signature and an attestation (ATTACHED) to each of ``subjects``:
    (repository id, digest, time pushed or None) of items already written. The rows are as a
    sync stores them: attached (is_top_level and is_orphan false, subject the item's digest),
    read (READ_VERSION), the signature tagged with its cosign tag (a Tag row too), each with one
    blob of its own linked, the blobs' reference counts and the repositories' total_size moved
    by what was added. Written straight into the tables (insert_rows); a builder calls it once
    it has read its own rows' ids. Returns how many manifests it added."""
    from django.db.models import Max
    from django.utils import timezone

    from hubmgr.inventory.models import (
        READ_VERSION, Blob, Manifest, ManifestBlob, PushSource, Repository, Tag)
    from hubmgr.registry.manifests import IMAGE, OCI_MANIFEST

    subjects = list(subjects)
    if not subjects:
        return 0
    names = dict(Repository.objects.filter(id__in={r for r, _, _ in subjects})
                 .values_list("id", "name"))
    now = timezone.now()
    # One writer, rows in order: the ids after these are the new rows', in order.
    last_manifest = Manifest.objects.aggregate(m=Max("id"))["m"] or 0
    last_blob = Blob.objects.aggregate(m=Max("id"))["m"] or 0
    added = []  # (repository id, subject, pushed, Attached, blob size), one per manifest
    for k, (repo_id, subject, pushed) in enumerate(subjects):
        for shape in ATTACHED:
            size = shape.blob_sizes[(k * 7919) % len(shape.blob_sizes)]
            added.append((repo_id, subject, pushed and pushed + shape.pushed_after, shape, size))

    def manifests():
        for repo_id, subject, pushed, shape, size in added:
            tag = cosign_tag(subject) if shape.tagged else ""
            yield (repo_id, attached_digest(names[repo_id], subject, shape.artifact), IMAGE,
                   OCI_MANIFEST, "", size, shape.manifest_size, "", pushed,
                   PushSource.PUSH_EVENT.value if pushed else "", now, True, "", tag, bool(tag),
                   False, READ_VERSION, shape.artifact, shape.artifact_type, shape.tool,
                   subject, shape.predicates, False)

    insert_rows(Manifest, [
        "repository_id", "digest", "kind", "media_type", "platform", "size", "manifest_size",
        "config_digest", "last_pushed", "last_pushed_source", "first_seen", "fetched", "error",
        "tags_text", "is_tagged", "is_top_level", "read_version", "artifact", "artifact_type",
        "tool", "subject", "predicates", "is_orphan"], manifests())
    insert_rows(Blob, ["registry_id", "digest", "size"],
                ((registry_id, _blob_digest(names[repo_id], subject, shape.artifact), size)
                 for repo_id, subject, _, shape, size in added))
    ids = list(Manifest.objects.filter(id__gt=last_manifest).order_by("id")
               .values_list("id", flat=True))
    blob_ids = list(Blob.objects.filter(id__gt=last_blob).order_by("id")
                    .values_list("id", flat=True))
    assert len(ids) == len(blob_ids) == len(added), (len(ids), len(blob_ids), len(added))
    insert_rows(ManifestBlob, ["manifest_id", "blob_id"], zip(ids, blob_ids))
    insert_rows(Tag, ["repository_id", "name", "manifest_id", "updated_at", "event_at"],
                ((repo_id, cosign_tag(subject), pk, now, pushed or now)
                 for pk, (repo_id, subject, pushed, shape, _) in zip(ids, added) if shape.tagged))
    # What the triggers count (a COPY as a superuser fires none): one link to each new blob,
    # and each new digest in one repository (the column's default); each new manifest alone
    # links its blob (Manifest.sole_bytes), and its subject has something attached
    # (Manifest.has_attached).
    Blob.objects.filter(id__gt=last_blob).update(manifest_count=1)
    sole = importlib.import_module("hubmgr.inventory.migrations.0016_sole_bytes")
    new = f"SELECT id FROM {connection.ops.quote_name(Manifest._meta.db_table)} WHERE id > %s"
    _analyze()
    with connection.cursor() as cursor:
        cursor.execute(sole.RECOUNT.format(ids=new), [last_manifest])
    _mark_subjects(last_manifest)
    _add_sizes(added)
    return len(added)


def _analyze():
    """Statistics of the tables just written, on PostgreSQL: without them the recounts below
    were planned as a scan of every link for each manifest (over 11 minutes at a million)."""
    from hubmgr.inventory.models import Blob, Manifest, ManifestBlob

    if connection.vendor == "postgresql":
        tables = (connection.ops.quote_name(m._meta.db_table) for m in (Manifest, ManifestBlob,
                                                                          Blob))
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {', '.join(tables)}")


def _mark_subjects(after):
    """Manifest.has_attached of the subjects the manifests written after ``after`` name."""
    from hubmgr.inventory.models import Manifest

    table = connection.ops.quote_name(Manifest._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET has_attached = %s WHERE (repository_id, digest) IN "
                       f"(SELECT repository_id, subject FROM {table} WHERE id > %s "
                       "AND NOT (subject = ''))", [True, after])


def _blob_digest(repository, subject, artifact):
    return ARTIFACT_BLOB_PREFIX + hashlib.sha256(
        f"{repository}@{subject}/{artifact}/blob".encode()).hexdigest()[1:]


def _add_sizes(added):
    """Move each repository's total_size by the bytes of the blobs added to it (a builder that
    counts its repositories afresh afterwards overwrites it with the same figure)."""
    from hubmgr.inventory.models import Repository

    sizes = {}
    for repo_id, _, _, _, size in added:
        sizes[repo_id] = sizes.get(repo_id, 0) + size
    table = connection.ops.quote_name(Repository._meta.db_table)
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {table} SET total_size = total_size + %s WHERE id = %s",
                           [(size, repo_id) for repo_id, size in sizes.items()])


def recount_references():
    """The reference counts that triggers keep, counted afresh after ``insert_rows``: a COPY as
    a superuser fires no trigger (the migrations' own backfills; has_attached is set by
    add_artifacts, which writes every attached row of the synthetic inventories)."""
    if connection.vendor == "postgresql":
        counts = importlib.import_module("hubmgr.inventory.migrations.0010_reference_counts")
        sole = importlib.import_module("hubmgr.inventory.migrations.0016_sole_bytes")
        _analyze()
        with connection.cursor() as cursor:
            for sql in [*counts.BACKFILL, sole.BACKFILL]:
                cursor.execute(sql)


def insert_rows(model, columns, rows):
    """Write rows (tuples in ``columns`` order) into ``model``'s table, bypassing the ORM."""
    table = connection.ops.quote_name(model._meta.db_table)
    names = ", ".join(connection.ops.quote_name(c) for c in columns)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The rows are consistent by construction: as a superuser, skip the foreign-key
            # checks, which are most of a COPY's time (a plain user keeps them).
            cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            if cursor.fetchone()[0]:
                cursor.execute("SET session_replication_role = replica")
            try:
                with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            finally:
                cursor.execute("RESET session_replication_role")
            return
        adapt = connection.ops.adapt_datetimefield_value
        marks = ", ".join(["%s"] * len(columns))
        batch = []
        for row in rows:
            batch.append(tuple(adapt(v) if hasattr(v, "tzinfo") else v for v in row))
            if len(batch) == 10_000:
                cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", batch)
                batch = []
        if batch:
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", batch)
