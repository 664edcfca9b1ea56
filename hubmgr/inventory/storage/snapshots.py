"""Storage figures of a registry and of each of its repositories, kept one row a day
(StorageSnapshot) for the overview and its charts.

At a million manifests the registry's distinct blobs cannot be summed within a page's time, so
they are computed here, in the background (Celery beat, when the inventory changed: see
below), after a sync of the whole catalog, and by ``manage.py snapshot``. A day's row holds
that day's last computation; earlier days stay as they were.

What the figures mean:
- **bytes**: distinct blobs (configs and layers) that some manifest references. The
  registry's figure counts a layer shared by two repositories once; a repository's figure
  counts its own distinct blobs (its Size).
- **untagged**: top-level items without a tag; their bytes are the blobs that only untagged
  items use: no tagged item references them, nor an index with a tag that lists the image.
- **stale**: top-level items Stale on evidence (``Coverage.stale_q``, the table's Stale
  filter); their bytes are the blobs that only stale items use (an image counts as in use
  when itself or an index listing it is not stale). Empty (None) while the observation window
  is too short to say.
So untagged and stale bytes are what removing all of those items would give back, at most
(the registry frees it when its garbage collector runs).

When they are computed: the inventory's writers mark the registry changed (``note_change``,
once per transaction, after it commits: one UPDATE of the registry's row), and Celery beat asks
every minute whether the figures are due (``refresh``): when the inventory changed since the
latest computation started, or today has no row yet (Stale moves with time alone, so the
figures are counted at least daily), and at most once per HUBMGR_SNAPSHOT_INTERVAL_MINUTES.
A stream of pushes therefore costs one computation per interval, and a registry nobody
changes one a day. Pull times are not a change here: they move no item, tag or byte; a pull
that revives a Stale item shows in the figures at their next computation.

Retention: the registry's rows are kept for ever (one a day); repositories' rows for
HUBMGR_SNAPSHOT_RETENTION_DAYS (365 by default; 0 keeps them), pruned with the rest hourly.
"""

import logging
from dataclasses import dataclass, fields
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Count, F, IntegerField, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Now
from django.utils import timezone

from ..catalog.batches import delete_in_batches
from ..models import IndexChild, Manifest, ManifestBlob, Registry, Repository, StorageSnapshot
from ..pulls.coverage import Coverage

log = logging.getLogger("hubmgr.snapshots")


@dataclass
class Figures:
    bytes: int = 0
    items: int = 0
    untagged_bytes: int = 0
    untagged_items: int = 0
    stale_bytes: int | None = 0
    stale_items: int | None = 0

    def add_bytes(self, total, untagged, stale):
        self.bytes, self.untagged_bytes = int(total or 0), int(untagged or 0)
        self.stale_bytes = int(stale or 0) if self.stale_bytes is not None else None


def _owners(registry, coverage):
    """The SQL of (blob, repository, size, tagged, fresh) rows: each blob link of a manifest,
    and again for each index that lists the manifest, with whether that manifest (index) has
    a tag and whether it is not stale. A blob is untagged (stale) when none of its rows is
    tagged (fresh)."""

    def flags(prefix):
        tagged = Case(When(Q(**{f"{prefix}is_tagged": True}), then=Value(1)), default=Value(0),
                      output_field=IntegerField())
        fresh = (Case(When(coverage.stale_q(prefix), then=Value(0)), default=Value(1),
                      output_field=IntegerField())
                 if coverage.decides_stale else Value(1, output_field=IntegerField()))
        return {"t": tagged, "f": fresh}

    direct = ManifestBlob.objects.filter(manifest__repository__registry=registry).order_by() \
        .annotate(b=F("blob_id"), r=F("manifest__repository_id"), s=F("blob__size"),
                  **flags("manifest__")).values_list("b", "r", "s", "t", "f")
    via_index = IndexChild.objects.filter(index__repository__registry=registry).order_by() \
        .annotate(b=F("child__blob_links__blob_id"), r=F("index__repository_id"),
                  s=F("child__blob_links__blob__size"), **flags("index__")) \
        .values_list("b", "r", "s", "t", "f")
    parts = [qs.query.get_compiler(connection=connection).as_sql() for qs in (direct, via_index)]
    return (f"{parts[0][0]} UNION ALL {parts[1][0]}", (*parts[0][1], *parts[1][1]))


def _blob_sums(registry, coverage):
    """(registry's (bytes, untagged, stale), {repository id: (bytes, untagged, stale)}), in one
    statement: the links are joined and grouped by (repository, blob) once; the registry's
    sums group that again by blob."""
    owners, params = _owners(registry, coverage)
    sums = ("COALESCE(SUM(s), 0), COALESCE(SUM(CASE WHEN t = 0 THEN s ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN f = 0 THEN s ELSE 0 END), 0)")
    sql = (f"WITH rb AS (SELECT r, b, MAX(s) AS s, MAX(t) AS t, MAX(f) AS f FROM ({owners}) u "
           f"WHERE b IS NOT NULL GROUP BY r, b) "
           f"SELECT NULL, {sums} FROM (SELECT b, MAX(s) AS s, MAX(t) AS t, MAX(f) AS f "
           f"FROM rb GROUP BY b) x "
           f"UNION ALL SELECT r, {sums} FROM rb GROUP BY r")
    total, repos = (0, 0, 0), {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for row in cursor.fetchall():
            if row[0] is None:
                total = row[1:]
            else:
                repos[row[0]] = row[1:]
    return total, repos


def compute(registry: Registry, now=None):
    """(the registry's Figures, {repository id: Figures}) as the inventory stands now."""
    coverage = Coverage.of(registry, now)
    decided = coverage.decides_stale
    repos = {pk: Figures(stale_bytes=0 if decided else None, stale_items=0 if decided else None)
             for pk in Repository.objects.filter(registry=registry).values_list("pk", flat=True)}
    stale = {"stale": Count("id", filter=coverage.stale_q())} if decided else {}
    counts = Manifest.objects.top_level().filter(repository__registry=registry) \
        .values("repository_id").order_by().annotate(
            n=Count("id"), untagged=Count("id", filter=Q(is_tagged=False)), **stale)
    for row in counts:
        figures = repos.get(row["repository_id"])
        if figures is None:  # a repository created since the list was read
            continue
        figures.items, figures.untagged_items = row["n"], row["untagged"]
        if decided:
            figures.stale_items = row["stale"]
    total, per_repo = _blob_sums(registry, coverage)
    whole = Figures(stale_bytes=0 if decided else None, stale_items=0 if decided else None)
    whole.add_bytes(*total)
    for pk, sums in per_repo.items():
        if pk in repos:
            repos[pk].add_bytes(*sums)
    for figures in repos.values():
        whole.items += figures.items
        whole.untagged_items += figures.untagged_items
        if decided:
            whole.stale_items += figures.stale_items
    return whole, repos


@dataclass(frozen=True)
class _Mark:
    """The after-commit write of note_change; equal marks of one transaction are one."""
    registry_id: int

    def __call__(self):
        Registry.objects.filter(pk=self.registry_id).update(inventory_changed_at=Now())


def note_change(registry_id):
    """The inventory of this registry changed in the current transaction (store.writing
    calls this): once it commits, the registry is marked changed, so the overview says its
    figures are out of date and the next periodic check computes them. One UPDATE per
    transaction however many writes it made, after the commit (holding no lock of the
    transaction's: writers of different repositories never wait on the registry's row), on
    the database's clock (a mark later than a computation's start means that computation may
    not have seen the change)."""
    mark = _Mark(registry_id)
    if not any(func == mark for _, func, _ in connection.run_on_commit):
        transaction.on_commit(mark, robust=True)  # a failed mark must not fail the writer


def changed_since(registry: Registry) -> bool:
    """Whether the inventory changed after the latest computation of the figures started
    (True when there is a change and no computation yet). A change in the same instant counts
    (SQLite's clock has milliseconds): at worst the figures are computed once more."""
    changed, started = registry.inventory_changed_at, registry.snapshot_started_at
    return changed is not None and (started is None or changed >= started)


def due(registry: Registry, now=None) -> bool:
    """Whether the periodic check computes the figures (the interval apart): no row today
    (or none at all), or the inventory changed since the latest computation started."""
    now = now or timezone.now()
    newest = latest(registry)
    return newest is None or newest.date < now.date() or changed_since(registry)


def refresh(registry: Registry, now=None) -> StorageSnapshot | None:
    """The periodic check: compute the figures when they are due and the latest computation
    started at least HUBMGR_SNAPSHOT_INTERVAL_MINUTES ago. Returns the registry's new row, or
    None when nothing was computed."""
    if not due(registry, now):
        return None
    interval = timedelta(minutes=settings.SNAPSHOT_INTERVAL_MINUTES)
    # The claim: one conditional update, so two checks (a slow computation and the next tick,
    # two workers) never compute at once, and computations start an interval apart at least.
    claimed = Registry.objects.filter(pk=registry.pk).filter(
        Q(snapshot_started_at__isnull=True) | Q(snapshot_started_at__lte=Now() - interval)
    ).update(snapshot_started_at=Now())
    if not claimed:
        return None
    return _take(registry, now)


def take(registry: Registry, now=None) -> StorageSnapshot:
    """Compute the figures now, whatever the interval (``manage.py snapshot``, ``manage.py
    sync``), and store them as today's (UTC) rows, replacing today's earlier ones. Returns the
    registry's row."""
    Registry.objects.filter(pk=registry.pk).update(snapshot_started_at=Now())
    return _take(registry, now)


def _take(registry, now):
    try:
        return _compute_and_store(registry, now)
    except Exception:
        # Not computed after all: the figures stay due, for the next check an interval on.
        try:
            _Mark(registry.pk)()
        except Exception:  # noqa: BLE001 - the database refused; the first error says why
            log.exception("snapshot registry=%s not marked due again", registry.pk)
        raise


def _compute_and_store(registry, now):
    now = now or timezone.now()
    whole, repos = compute(registry, now)
    day = now.date()
    names = [f.name for f in fields(Figures)]
    rows = [StorageSnapshot(registry=registry, repository_id=pk, date=day, computed_at=now,
                            **{n: getattr(figures, n) for n in names})
            for pk, figures in repos.items()]
    with transaction.atomic():
        # One writer per registry at a time (the row lock), so two runs never both insert.
        list(Registry.objects.select_for_update().filter(pk=registry.pk).values_list("pk"))
        StorageSnapshot.objects.filter(registry=registry, date=day).delete()
        # A repository forgotten since the figures were read has no row to point to.
        alive = set(Repository.objects.filter(registry=registry).values_list("pk", flat=True))
        StorageSnapshot.objects.bulk_create([r for r in rows if r.repository_id in alive],
                                            batch_size=2000)
        # The repositories page sorts by Stale from a column of its own (indexed), read
        # from these rows in one statement.
        Repository.objects.filter(registry=registry).update(stale_count=Subquery(
            StorageSnapshot.objects.filter(repository=OuterRef("pk"), date=day)
            .values("stale_items")[:1]))
        snapshot = StorageSnapshot.objects.create(
            registry=registry, date=day, computed_at=now, **{n: getattr(whole, n) for n in names})
    log.info("snapshot registry=%s repositories=%d bytes=%d items=%d", registry.name,
             len(rows), whole.bytes, whole.items)
    return snapshot


def latest(registry: Registry) -> StorageSnapshot | None:
    return StorageSnapshot.objects.filter(registry=registry, repository=None) \
        .order_by("-date").first()


def history(registry: Registry, repository=None, days=90, today=None) -> list:
    """The rows of the last ``days`` days (today included), oldest first."""
    today = today or timezone.now().date()
    rows = StorageSnapshot.objects.filter(date__gt=today - timedelta(days=days))
    rows = rows.filter(repository=repository) if repository is not None else \
        rows.filter(registry=registry, repository=None)
    return list(rows.order_by("date"))


def for_repositories(registry: Registry, repository_ids, day=None) -> dict:
    """{repository id: its row of ``day`` (by default the registry's latest snapshot day)}, in
    one query."""
    if not repository_ids:
        return {}
    if day is None:
        day = Subquery(StorageSnapshot.objects.filter(registry=registry, repository=None)
                       .order_by("-date").values("date")[:1])
    return {s.repository_id: s for s in StorageSnapshot.objects.filter(
        repository_id__in=list(repository_ids), date=day)}


def prune(days=None) -> int:
    """Delete repositories' rows older than ``days`` (HUBMGR_SNAPSHOT_RETENTION_DAYS; 0 keeps
    them). The registry's rows (one a day) stay."""
    days = settings.SNAPSHOT_RETENTION_DAYS if days is None else days
    if not days:
        return 0
    cutoff = timezone.now().date() - timedelta(days=days)
    return delete_in_batches(StorageSnapshot.objects.filter(repository__isnull=False,
                                                            date__lt=cutoff))
