"""Writing what a crawl, a notification or a deletion learned into the inventory, and keeping
the denormalised columns the table reads (tags_text, is_top_level, sizes, counts) true.

Every write goes through ``writing(repo)``: one transaction whose changed rows are refreshed
before it commits, so no caller has to remember the follow-up and no reader sees half a state.
Values from the registry arrive parsed and bounded (hubmgr.registry.manifests); text that is
stored as it came is cleaned here (no control characters, cut to its column).
"""

from collections import defaultdict
from contextlib import contextmanager

from django.db import connection, transaction
from django.db.models import Count, Exists, F, Max, OuterRef, Q, Sum
from django.db.models.functions import Greatest
from django.utils import timezone

from hubmgr.registry import artifacts
from hubmgr.registry.artifacts import MAX_DEPTH
from hubmgr.registry.manifests import (
    INDEX_TYPES, MAX_BLOB_SIZE, MAX_ENTRIES, SCHEMA1_TYPES, ImageConfig)
from hubmgr.registry.names import clean

from ..models import (
    MISSING, READ_VERSION, SEEN_PUSH, ArtifactKind, Blob, IndexChild, Kind, Manifest,
    ManifestBlob, PushSource, Repository, Tag)
from ..storage import snapshots
from .conditions import seen_push_q

CHUNK = 500
MAX_ERROR = 2000


class Batch:
    """The writes of one ``writing`` block; each records the manifests it changed, and what
    they counted for (top-level, tagged, index) before the block changed them, so the
    repository's counts move by the difference instead of being counted again."""

    def __init__(self, repo, whole=False):
        self.repo = repo
        self.touched = set()
        self.changed = False  # rows were added or removed
        self.whole = whole  # refresh the whole repository
        self.prior = {}  # manifest id -> its count flags before the block; None: new in it
        self.size_delta = 0  # bytes of blobs the block added to (or took from) the repository
        self.times_moved = False  # push or pull times moved (rows that need no refresh)
        self.recount = False  # count the repository's size again at the end

    def store_fetched(self, fetched, configs, missing=()):
        if self.whole:
            ids = store_fetched(self.repo, fetched, configs, missing)
        else:
            digests = set(fetched) | set(missing) | {
                c.digest for item in fetched.values() if item.manifest is not None
                and item.manifest.kind == Kind.INDEX for c in item.manifest.children}
            before = _flags(Manifest.objects.filter(repository=self.repo), digests=digests)
            blobs = {b.digest for item in fetched.values() if item.manifest is not None
                     and item.manifest.kind == Kind.IMAGE for b in item.manifest.stored_blobs}
            present = self._blobs_present(blobs)
            # A row read again (an earlier read_version) may lose links: count the size anew.
            self.recount |= any(Manifest.objects.filter(
                repository=self.repo, digest__in=chunk, fetched=True,
                read_version__lt=READ_VERSION).exists() for chunk in chunks(fetched))
            ids = store_fetched(self.repo, fetched, configs, missing)
            for manifest_id in ids.values():
                self.prior.setdefault(manifest_id, before.get(manifest_id))
            added = self._blobs_present(blobs - present)
            self.size_delta += _blob_sizes(self.repo.registry, digests=added)
        self.touched |= set(ids.values())
        return ids

    def added(self, ids):
        """Manifest rows this block inserted itself (e.g. placeholders for events)."""
        for manifest_id in ids:
            self.prior.setdefault(manifest_id, None)
        self.touched |= set(ids)

    def set_tags(self, mapping, at=None):
        """Point each tag ({name: manifest id}) at its manifest, set by the registry at ``at``
        ({name: time}; now when not given)."""
        if not mapping:
            return
        if not self.whole:  # the manifests these tags leave change too
            self.touched |= set(Tag.objects.filter(repository=self.repo, name__in=list(mapping))
                                .values_list("manifest_id", flat=True))
            self.touched |= set(mapping.values())
        set_tags(self.repo, mapping, at)

    def drop_tags(self, names, set_before=None):
        """Remove these tags; with ``set_before``, only those last set no later than it."""
        for chunk in chunks(names):
            tags = Tag.objects.filter(repository=self.repo, name__in=chunk)
            if set_before is not None:
                tags = tags.filter(Q(event_at__isnull=True) | Q(event_at__lte=set_before))
            if not self.whole:
                self.touched |= set(tags.values_list("manifest_id", flat=True))
            tags.delete()

    def forget(self, ids):
        """Remove manifests the registry says are gone (with their tags and links)."""
        ids = set(ids)
        if not ids:
            return
        self.changed = True
        if self.whole:
            self.touched |= remove_manifests(self.repo, ids)
        else:
            for manifest_id, flags in _flags(Manifest.objects.filter(repository=self.repo),
                                             ids=ids).items():
                self.prior.setdefault(manifest_id, flags)
            blobs = set()
            for chunk in chunks(ids):
                blobs |= set(ManifestBlob.objects.filter(manifest_id__in=chunk)
                             .values_list("blob_id", flat=True))
            self.touched |= remove_manifests(self.repo, ids)
            kept = set()
            for chunk in chunks(blobs):
                kept |= set(ManifestBlob.objects.filter(
                    blob_id__in=chunk, manifest__repository=self.repo)
                    .values_list("blob_id", flat=True).distinct())
            self.size_delta -= _blob_sizes(self.repo.registry, ids=blobs - kept)
        self.touched -= ids

    def touch(self, ids):
        self.touched |= set(ids)

    def _blobs_present(self, digests):
        """Which of these blob digests a manifest of the repository links to."""
        present = set()
        for chunk in chunks(digests):
            present |= set(ManifestBlob.objects.filter(
                manifest__repository=self.repo, blob__registry=self.repo.registry,
                blob__digest__in=chunk).values_list("blob__digest", flat=True).distinct())
        return present


def _flags(queryset, ids=None, digests=None) -> dict:
    """{manifest id: (top level, tagged top level, index top level, orphan top level)}: what
    a row counts for."""
    flags = {}
    key, wanted = ("id__in", ids) if ids is not None else ("digest__in", digests)
    for chunk in chunks(wanted):
        for pk, top, tagged, kind, orphan in queryset.filter(**{key: chunk}).values_list(
                "id", "is_top_level", "is_tagged", "kind", "is_orphan"):
            flags[pk] = (top, top and tagged, top and kind == Kind.INDEX, top and orphan)
    return flags


def _blob_sizes(registry, ids=(), digests=()) -> int:
    total = 0
    for key, values in (("id__in", ids), ("digest__in", digests)):
        for chunk in chunks(values):
            total += Blob.objects.filter(registry=registry, **{key: chunk}).aggregate(
                s=Sum("size"))["s"] or 0
    return total


@contextmanager
def writing(repo: Repository, whole=False):
    """One transactional write into ``repo``'s inventory. The rows the block changed (or the
    whole repository, with ``whole``) are refreshed, counts included, before it commits.
    Writers of one repository take turns (its row is locked on PostgreSQL), so the counts
    each moves by stay exact. A block that changed anything moves the repository's version
    once, in the same transaction: an open table sees the change with it, never before."""
    batch = Batch(repo, whole)
    with transaction.atomic():
        list(Repository.objects.select_for_update().filter(pk=repo.pk).values_list("pk"))
        yield batch
        if batch.whole:
            refresh(repo)
        elif batch.touched or batch.prior or batch.size_delta:
            refresh(repo, batch.touched, batch.prior, batch.size_delta)
            if batch.recount:
                refresh_counts(repo)
        if batch.whole or batch.touched or batch.prior or batch.size_delta:
            snapshots.note_change(repo.registry_id)  # the overview's figures are out of date
        if batch.whole or batch.touched or batch.prior or batch.size_delta or batch.times_moved:
            bump_version(repo)


def bump_version(repo: Repository):
    """Tell open tables that ``repo`` changed (they poll the version, see web.live)."""
    Repository.objects.filter(pk=repo.pk).update(version=F("version") + 1)


def chunks(items, size=CHUNK):
    """``items`` in lists of at most ``size`` (what one statement's IN list takes)."""
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def blob_ids(registry, descriptors) -> dict:
    """{digest: Blob id}, creating the blobs we had not seen."""
    sizes = {d.digest: d.size for d in descriptors}
    for chunk in chunks(sizes):
        Blob.objects.bulk_create([Blob(registry=registry, digest=d, size=sizes[d]) for d in chunk],
                                 ignore_conflicts=True)
    ids = {}
    for chunk in chunks(sizes):
        ids.update(Blob.objects.filter(registry=registry, digest__in=chunk)
                   .values_list("digest", "id"))
    return ids


def store_fetched(repo: Repository, fetched: dict, configs: dict, missing=()) -> dict:
    """Create or complete manifest rows from fetched content, and mark the ``missing`` digests
    (the registry answered 404) that we hold as placeholders. Returns {digest: id} for them.
    Call it through ``writing``."""
    now = timezone.now()
    existing = {}
    for chunk in chunks(fetched):
        existing.update({m.digest: m for m in Manifest.objects.filter(repository=repo,
                                                                       digest__in=chunk)})
    rows, links, children = [], {}, {}
    descriptors = []
    for digest, item in fetched.items():
        row = existing.get(digest) or Manifest(repository=repo, digest=digest)
        manifest = item.manifest
        if manifest is None and row.fetched and not row.error:
            continue  # read before, and not again this time: it stays as it was read
        row.pk = None  # upserted on (repository, digest) below
        row.last_seen = now
        if item.media_type:
            row.media_type = clean(item.media_type, 120)
        if manifest is None:
            row.error = clean(item.error or "the manifest could not be read", MAX_ERROR)
            # Manifests are immutable: a parse error is final; a failed fetch is tried again.
            # A Docker schema1 manifest holds no layer sizes: it stays unread (its blobs are
            # not known, and a plan says so), and the next sync tries it again.
            row.fetched = bool(item.media_type) and item.media_type not in SCHEMA1_TYPES
            if row.media_type in INDEX_TYPES:
                row.kind = Kind.INDEX
            rows.append(row)
            continue
        row.media_type = clean(manifest.media_type, 120)
        row.fetched, row.error, row.read_version = True, "", READ_VERSION
        row.kind, row.manifest_size = manifest.kind, manifest.size
        _classify(row, manifest)
        if manifest.kind == Kind.IMAGE:
            config = configs.get(manifest.config.digest) or ImageConfig()
            row.config_digest = manifest.config.digest
            # An artifact runs nowhere (BuildKit's attestations say unknown/unknown).
            row.platform = "" if row.artifact else (
                config.platform or manifest.platform or row.platform)
            row.created = config.created
            distinct = {d.digest: d.size for d in manifest.stored_blobs}
            row.size = sum(distinct.values())
            row.foreign_size = min(sum(d.size for d in manifest.blobs if d.foreign),
                                   MAX_BLOB_SIZE * MAX_ENTRIES)
            descriptors.extend(manifest.stored_blobs)
            links[digest] = list(distinct)
        else:
            children[digest] = manifest
        rows.append(row)

    # One upsert for new and known rows alike: a notification may insert the same manifest
    # between our read and this write. Push times are not written here (see below).
    fields = ["media_type", "kind", "platform", "size", "manifest_size", "config_digest",
              "created", "last_seen", "fetched", "error", "read_version", "foreign_size",
              *CLASSIFIED]
    Manifest.objects.bulk_create(rows, batch_size=CHUNK, update_conflicts=True,
                                 unique_fields=["repository", "digest"], update_fields=fields)
    ids = {}
    for chunk in chunks(fetched):
        ids.update(Manifest.objects.filter(repository=repo, digest__in=chunk)
                   .values_list("digest", "id"))
    # Where no push event told us when, "last pushed" falls back to the image's created time.
    for chunk in chunks(ids.values()):
        Manifest.objects.filter(id__in=chunk, last_pushed__isnull=True, created__isnull=False) \
            .update(last_pushed=F("created"), last_pushed_source=PushSource.IMAGE_CREATED)

    # A row read before by an earlier way of reading (read_version) may link layers that are
    # not stored: its links are written again.
    reread = [ids[d] for d, row in existing.items() if row.fetched and d in links]
    for chunk in chunks(reread):
        ManifestBlob.objects.filter(manifest_id__in=chunk).delete()
    blob_map = blob_ids(repo.registry, descriptors)
    ManifestBlob.objects.bulk_create(
        [ManifestBlob(manifest_id=ids[m], blob_id=blob_map[b]) for m, bs in links.items()
         for b in bs], batch_size=CHUNK, ignore_conflicts=True)

    # Children: make placeholder rows for any we could not fetch, then link them. A child the
    # registry answered 404 for says so; the others are read by the next fetch or sync.
    missing = set(missing)
    child_digests = {c.digest for index in children.values() for c in index.children} - set(ids)
    if child_digests:
        Manifest.objects.bulk_create([Manifest(repository=repo, digest=d,
                                               error=MISSING if d in missing else "")
                                      for d in child_digests], ignore_conflicts=True)
        for chunk in chunks(child_digests):
            ids.update(Manifest.objects.filter(repository=repo, digest__in=chunk)
                       .values_list("digest", "id"))
    IndexChild.objects.bulk_create(
        [IndexChild(index_id=ids[i], child_id=ids[c.digest], platform=c.platform)
         for i, index in children.items() for c in index.children], batch_size=CHUNK,
        ignore_conflicts=True)
    # BuildKit marks its attestation manifests on the index's entry, not in the manifest:
    # believed for an entry not read yet (its read undoes it if it is an image) or one whose
    # own content is an artifact, never for an image (see _classify).
    for index in children.values():
        for child, subject in artifacts.buildx_attestations(index).items():
            marked = Manifest.objects.filter(id=ids[child]).filter(
                Q(fetched=False) | ~Q(artifact=""))
            marked.update(artifact=ArtifactKind.ATTESTATION, tool=artifacts.BUILDX)
            marked.filter(subject="").update(subject=subject)
    gone = [d for d in missing if d not in fetched]
    for chunk in chunks(gone):
        # Only placeholders not marked yet change (a sync that finds the same one missing
        # again changes nothing, and open tables do not reload).
        placeholders = Manifest.objects.filter(repository=repo, digest__in=chunk,
                                               fetched=False).exclude(error=MISSING)
        ids.update(placeholders.values_list("digest", "id"))
        placeholders.update(error=MISSING)
    return ids


# The columns _classify writes.
CLASSIFIED = ("artifact", "artifact_type", "tool", "subject", "predicates")


def _classify(row: Manifest, manifest):
    """What the manifest says it is (hubmgr.registry.artifacts), on its row. A subject
    learned elsewhere (a tag, an index entry) stays only on an artifact by its own content:
    anyone who can push can tag or annotate someone else's image, and must not make it
    belong to (and be deleted with) something else by that. A manifest's own subject field
    is its pusher's word about that manifest alone."""
    found = artifacts.classify(manifest)
    own = found.kind not in (Kind.IMAGE, Kind.INDEX)
    row.artifact = found.kind if own else ""
    row.artifact_type = clean(found.media_type, 255) if own else ""
    row.tool = found.tool or (row.tool if own else "")
    row.subject = found.subject or (row.subject if own else "")
    row.predicates = clean(" ".join(found.predicates), 500)


def update_rows(columns, values):
    """UPDATE manifests by id, one prepared statement for many rows. Django's bulk_update
    builds a CASE expression per row and was most of a sync's time."""
    if not values:
        return
    table = Manifest._meta.db_table
    fields = [Manifest._meta.get_field(c) for c in columns]
    sets = ", ".join(f"{connection.ops.quote_name(f.column)} = %s" for f in fields)
    prepared = [tuple(f.get_db_prep_save(v, connection) for f, v in zip(fields, row[:-1]))
                + (row[-1],) for row in values]
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {connection.ops.quote_name(table)} SET {sets} WHERE id = %s",
                           prepared)


def set_tags(repo: Repository, mapping: dict, at=None):
    """Point each tag in ``mapping`` ({tag: manifest id}) at its manifest, as the registry
    set it at ``at`` ({tag: time}; now when not given)."""
    now = timezone.now()
    at = at or {}
    Tag.objects.bulk_create([Tag(repository=repo, name=t, manifest_id=m, event_at=at.get(t, now))
                             for t, m in mapping.items()], batch_size=CHUNK,
                            update_conflicts=True, unique_fields=["repository", "name"],
                            update_fields=["manifest", "updated_at", "event_at"])


def refresh(repo: Repository, manifest_ids=None, prior=None, size_delta=0):
    """Recompute the denormalised columns, for the given manifests or the whole repository.
    For given manifests the counts move by what those rows count for now against before:
    ``prior`` holds what rows added, removed or re-kinded in the same transaction counted for
    before it (None: nothing), and ``size_delta`` the bytes of blobs that came or went. The
    whole repository is counted again (``refresh_counts``, the reconciler)."""
    with transaction.atomic():
        scope = Manifest.objects.filter(repository=repo)
        if manifest_ids is not None:
            manifest_ids = _neighbours(repo, set(manifest_ids))
            scope = scope.filter(id__in=manifest_ids)
            prior = prior or {}
            before = {**_flags(Manifest.objects.filter(repository=repo), ids=manifest_ids),
                      **prior}
        names = _refresh_tags(repo, scope, manifest_ids)
        attached = _refresh_subjects(repo, scope, names)
        scope.filter(is_tagged=True).update(is_top_level=True)
        scope.filter(is_tagged=False).update(
            is_top_level=~Exists(IndexChild.objects.filter(child_id=OuterRef("pk"))))
        scope.exclude(subject="").update(is_orphan=True)
        for chunk in chunks(attached):
            Manifest.objects.filter(id__in=chunk).update(is_top_level=False, is_orphan=False)
        _refresh_indexes(scope.filter(kind=Kind.INDEX))
        if manifest_ids is None:
            refresh_counts(repo)
            return
        after = _flags(Manifest.objects.filter(repository=repo), ids=manifest_ids | set(prior))
        delta = [0, 0, 0, 0]
        for pk in set(before) | set(after):
            for n, (was, now) in enumerate(zip(before.get(pk) or (0, 0, 0, 0),
                                               after.get(pk) or (0, 0, 0, 0))):
                delta[n] += int(now) - int(was)
        add_counts(repo, *delta, size_delta)


def _neighbours(repo, ids: set) -> set:
    """The changed rows and the rows their change reaches: the indexes above them (at any
    depth: a nested index's size and platforms are those of everything below), their
    children, and what is attached to them (it is listed under them, or orphaned)."""
    above, frontier = set(ids), set(ids)
    for _ in range(MAX_DEPTH):
        frontier = set(IndexChild.objects.filter(child_id__in=frontier)
                       .values_list("index_id", flat=True)) - above
        if not frontier:
            break
        above |= frontier
    ids = above | set(IndexChild.objects.filter(index_id__in=ids)
                      .values_list("child_id", flat=True))
    for chunk in chunks(ids):
        digests = Manifest.objects.filter(id__in=chunk).values("digest")
        ids |= set(Manifest.objects.filter(repository=repo, subject__in=digests)
                   .exclude(subject="").values_list("id", flat=True))
    return ids


def add_counts(repo: Repository, items=0, tagged=0, indexes=0, orphans=0, size=0):
    """Move the repository's counts by these amounts (never below zero)."""
    if not (items or tagged or indexes or orphans or size):
        return
    changes = {name: Greatest(F(name) + value, 0) for name, value in (
        ("item_count", items), ("tagged_count", tagged), ("index_count", indexes),
        ("orphan_count", orphans), ("total_size", size)) if value}
    Repository.objects.filter(pk=repo.pk).update(**changes)
    repo.refresh_from_db(fields=list(changes))


def _refresh_tags(repo, scope, manifest_ids) -> dict:
    """tags_text and is_tagged; returns {manifest id: its tag names}."""
    names = defaultdict(list)
    tags = Tag.objects.filter(repository=repo)
    if manifest_ids is not None:
        tags = tags.filter(manifest_id__in=manifest_ids)
    for manifest_id, name in tags.values_list("manifest_id", "name"):
        names[manifest_id].append(name)
    changed = []
    for row in scope.only("id", "tags_text", "is_tagged"):
        text = " ".join(sorted(names.get(row.id, ())))
        if text != row.tags_text or row.is_tagged != bool(text):
            row.tags_text, row.is_tagged = text, bool(text)
            changed.append(row)
    update_rows(["tags_text", "is_tagged"], [(r.tags_text, r.is_tagged, r.id) for r in changed])
    return names


def _refresh_subjects(repo, scope, names) -> set:
    """Learn the subjects that tags name (cosign's ``sha256-<hex>.sig``, the referrers
    fallback ``sha256-<hex>``) and the referrers lists no tag names any more; returns the ids
    of the rows in ``scope`` attached to a subject that is in the repository."""
    named = {pk: tags for pk, tags in names.items() if any(
        artifacts.cosign_tag(t) or artifacts.fallback_tag(t) for t in tags)}
    # Images first (cosign's tags), then indexes (a list's entries must be known first).
    for kind in (Kind.IMAGE, Kind.INDEX):
        for chunk in chunks(named):
            for row in Manifest.objects.filter(id__in=chunk, subject="", kind=kind).only(
                    "id", "kind", "artifact", "tool", "subject", "referrers_list"):
                _learn_from_tags(row, named[row.id])
    _learn_lists(scope.filter(kind=Kind.INDEX, subject="", artifact=""))
    rows = list(scope.exclude(subject="").values_list("id", "digest", "subject"))
    chain = _subjects_above(repo, {subject for _, _, subject in rows})
    return {pk for pk, digest, subject in rows if _anchored(digest, subject, chain)}


def _learn_from_tags(row, tags):
    """A subject a tag names, believed only where the manifest agrees: cosign's tag on an
    artifact by its own content (a signature, attestation or SBOM), the referrers fallback
    tag on an index whose entries are all referrers of that subject (or not read yet)."""
    for tag in tags:
        cosign, listed = artifacts.cosign_tag(tag), artifacts.fallback_tag(tag)
        if cosign and row.kind == Kind.IMAGE and row.artifact:
            row.subject, row.tool = cosign[0], row.tool or artifacts.COSIGN
        elif (listed and row.kind == Kind.INDEX and not row.artifact
              and _lists_referrers_of(row, listed)):
            row.subject, row.referrers_list = listed, True
        else:
            continue
        row.save(update_fields=["subject", "tool", "artifact", "referrers_list"])
        return


def _lists_referrers_of(index, subject) -> bool:
    entries = IndexChild.objects.filter(index=index)
    return entries.exists() and not entries.filter(child__fetched=True).exclude(
        child__subject=subject).exists()


def _learn_lists(indexes):
    """An index whose entries all belong to one subject is a referrers list of it: the
    earlier versions of a fallback list, left untagged each time a referrer was added."""
    subjects = defaultdict(set)
    for chunk in chunks(indexes.values_list("id", flat=True)):
        for index_id, subject in IndexChild.objects.filter(index_id__in=chunk).values_list(
                "index_id", "child__subject"):
            subjects[index_id].add(subject)
    lists = defaultdict(list)
    for index_id, found in subjects.items():
        if len(found) == 1 and "" not in found:
            lists[found.pop()].append(index_id)
    for subject, ids in lists.items():
        Manifest.objects.filter(id__in=ids).update(subject=subject, referrers_list=True)


def _subjects_above(repo, digests) -> dict:
    """{digest: its subject ("" for none)} of the repository's rows on the chains above
    ``digests``, up to MAX_DEPTH steps; a digest the repository does not hold (or holds as a
    placeholder the registry answered 404 for) is left out."""
    found, frontier = {}, set(digests)
    for _ in range(MAX_DEPTH):
        for chunk in chunks(frontier):
            found.update(Manifest.objects.filter(repository=repo, digest__in=chunk)
                         .exclude(error=MISSING).values_list("digest", "subject"))
        frontier = {s for s in found.values() if s and s not in found}
        if not frontier:
            break
    return found


def _anchored(digest, subject, chain) -> bool:
    """Whether a row is listed under its subject: the subject is in the repository, and the
    chain above it ends within MAX_DEPTH steps without coming back (a cosign tag can name any
    digest, its own too)."""
    if subject not in chain:
        return False
    seen = {digest}
    for _ in range(MAX_DEPTH):
        if subject in seen:
            return False
        seen.add(subject)
        subject = chain.get(subject, "")
        if not subject:
            return True
    return False


def _refresh_indexes(indexes):
    """An index's size is the distinct blobs of every image below it, at any depth; its
    platforms are theirs (artifacts have none); its created time their latest."""
    index_rows = list(indexes.only("id", "size", "platform", "created", "last_pushed",
                                   "last_pushed_source"))
    if not index_rows:
        return
    kids = defaultdict(list)
    frontier = {r.id for r in index_rows}
    for _ in range(MAX_DEPTH):
        nested = set()
        for chunk in chunks(frontier):
            for link in IndexChild.objects.filter(index_id__in=chunk).select_related(
                    "child").only("index_id", "platform", "child__id", "child__kind",
                                  "child__platform", "child__created", "child__artifact",
                                  "child__referrers_list").order_by("id"):
                kids[link.index_id].append(link)
                if link.child.kind == Kind.INDEX:
                    nested.add(link.child_id)
        frontier = nested - set(kids)
        if not frontier:
            break
    below = {row.id: _below(row.id, kids) for row in index_rows}
    images = {link.child_id for links in below.values() for link in links}
    blobs = defaultdict(set)
    for chunk in chunks(images):
        for manifest_id, blob_id in ManifestBlob.objects.filter(manifest_id__in=chunk) \
                .values_list("manifest_id", "blob_id"):
            blobs[manifest_id].add(blob_id)
    all_blobs = set().union(*blobs.values()) if blobs else set()
    sizes = {}
    for chunk in chunks(all_blobs):
        sizes.update(Blob.objects.filter(id__in=chunk).values_list("id", "size"))
    for row in index_rows:
        links = below[row.id]
        distinct = set().union(*(blobs[link.child_id] for link in links)) if links else set()
        row.size = sum(sizes[b] for b in distinct)
        platforms = []
        for link in links:
            plat = link.platform or link.child.platform
            if plat and not link.child.artifact and plat != "unknown/unknown" \
                    and plat not in platforms:
                platforms.append(plat)
        row.platform = clean(", ".join(platforms), 500)
        created = [link.child.created for link in links if link.child.created]
        row.created = max(created) if created else None
        if row.created and row.last_pushed_source not in SEEN_PUSH:
            row.last_pushed, row.last_pushed_source = row.created, PushSource.IMAGE_CREATED
    update_rows(["size", "platform", "created", "last_pushed", "last_pushed_source"],
                [(r.size, r.platform, r.created, r.last_pushed, r.last_pushed_source, r.id)
                 for r in index_rows])


def _below(index_id, kids) -> list:
    """The links to every image below an index, through nested indexes (each index once, at
    most MAX_DEPTH deep), in the order the indexes list them."""
    out, seen = [], {index_id}

    def walk(pk, depth):
        for link in kids.get(pk, ()):
            if link.child.kind != Kind.INDEX:
                out.append(link)
            elif depth < MAX_DEPTH and link.child_id not in seen:
                seen.add(link.child_id)
                walk(link.child_id, depth + 1)
    walk(index_id, 1)
    return out


def refresh_counts(repo: Repository):
    """Item counts (for the table's pager and the repositories page) and stored size
    (distinct blobs)."""
    counts = dict.fromkeys(("item_count", "tagged_count", "index_count", "orphan_count"), 0)
    for tagged, kind, orphan, count in Manifest.objects.top_level().filter(repository=repo) \
            .values_list("is_tagged", "kind", "is_orphan").annotate(n=Count("id")).order_by():
        counts["item_count"] += count
        counts["tagged_count"] += count if tagged else 0
        counts["index_count"] += count if kind == Kind.INDEX else 0
        counts["orphan_count"] += count if orphan else 0
    blob_ids_in_repo = ManifestBlob.objects.filter(manifest__repository=repo).values("blob_id")
    counts["total_size"] = Blob.objects.filter(id__in=blob_ids_in_repo).aggregate(
        total=Sum("size"))["total"] or 0
    for name, value in counts.items():
        setattr(repo, name, value)
    latest = Manifest.objects.filter(repository=repo).aggregate(
        pulled=Max("last_pulled"),
        pushed=Max("last_pushed", filter=seen_push_q()))
    # Only counts that were off are written, and only then do open tables reload.
    Repository.objects.filter(pk=repo.pk).exclude(**counts).update(
        **counts, version=F("version") + 1)
    note_activity(repo, pushed=latest["pushed"], pulled=latest["pulled"])


def note_activity(repo: Repository, pushed=None, pulled=None):
    """Move the repository's last push and pull forward (never back) to these times."""
    for field, when in (("last_pushed", pushed), ("last_pulled", pulled)):
        if when is not None:
            Repository.objects.filter(pk=repo.pk).filter(
                Q(**{f"{field}__isnull": True}) | Q(**{f"{field}__lt": when})
            ).update(**{field: when})


def remove_manifests(repo: Repository, ids):
    """Forget manifests the registry says are gone. Returns the ids of indexes, children and
    attached artifacts that were linked to them, whose denormalised columns need a
    refresh."""
    ids = list(ids)
    touched = set(IndexChild.objects.filter(child_id__in=ids).values_list("index_id", flat=True))
    touched |= set(IndexChild.objects.filter(index_id__in=ids).values_list("child_id", flat=True))
    for chunk in chunks(ids):  # what was attached to them is orphaned now
        digests = Manifest.objects.filter(id__in=chunk).values("digest")
        touched |= set(Manifest.objects.filter(repository=repo, subject__in=digests)
                       .exclude(subject="").values_list("id", flat=True))
    for chunk in chunks(ids):
        Manifest.objects.filter(repository=repo, id__in=chunk).delete()
    return touched - set(ids)


def forget_repositories(repos) -> list:
    """Remove repositories, and all hubmgr knows of them, from the inventory (not from the
    registry). Returns their names."""
    removed = []
    for repo in repos:
        with transaction.atomic():
            repo.delete()
            snapshots.note_change(repo.registry_id)
        removed.append(repo.name)
    return removed
