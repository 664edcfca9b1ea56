"""Crawl a registry into the inventory and reconcile what disappeared.

A sync run reads the catalog once (``open_run``), which makes one RepositorySync row per
repository; then each repository is synced on its own (``sync_repository``), in this process
(``sync_registry``, the `sync` command) or as one Celery task per repository that any number
of workers share. Each repository records its figures on the run once, and the last one
closes it. Repositories missing from the catalog are forgotten only then, and only when the
catalog was read whole.

A manifest leaves the inventory only when the registry answers 404 to a HEAD by its digest:
untagged images learned from push events stay listed. A tag whose lookup failed keeps the
digest it had. A repository's tags are read in chunks of CHUNK_TAGS; each chunk is written in
one transaction, and what no chunk reached is reconciled once all were written. Memory is
bounded by the largest repository's tag and digest names (a few hundred bytes each), plus
three chunks of manifests in flight (one being written, the next two being read).
"""

import logging
from collections import deque
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max
from django.utils import timezone

from hubmgr.registry import names
from hubmgr.registry.errors import RegistryError
from hubmgr.registry.manifests import ImageConfig

from ..catalog.store import refresh_counts, writing
from ..models import (
    READ_VERSION, Blob, IndexChild, Kind, Manifest, Repository, RepositorySync, SyncRun, Tag)
from ..registries import record_health
from .crawl import Crawler

log = logging.getLogger("hubmgr.sync")
MAX_PROBLEMS = 1000
CHUNK_TAGS = 1000
QUERY_CHUNK = 500
# A run whose repositories made no progress for this long lost its tasks (a broker flushed,
# a worker killed without redelivery): the next reconcile closes it and starts afresh.
ABANDONED_AFTER = timedelta(hours=3)


def sync_registry(registry, client, repository=None, concurrency=None, progress=None) -> SyncRun:
    """Sync every repository in the catalog, or only ``repository``, in this process.

    Raises RegistryError when the registry cannot be listed at all (down, credentials refused);
    problems with single repositories, tags or manifests are recorded on the returned SyncRun,
    and the sync goes on. The run is always closed, with its error when it stopped early.
    """
    run = open_run(registry, client, repository)
    crawler = make_crawler(client, concurrency, progress)
    try:
        sync_repositories(run, list(run.repository_syncs.filter(finished_at__isnull=True)
                                    .order_by("name").values_list("name", flat=True)),
                          crawler, progress)
    except BaseException as exc:
        close_run(run.pk, error=names.clean(exc, 2000) or type(exc).__name__)
        log.exception("sync run=%s stopped", run.pk)
        raise
    finally:
        crawler.close()
    run.refresh_from_db()
    return run


def make_crawler(client, concurrency=None, progress=None):
    return Crawler(client, concurrency or settings.SYNC_CONCURRENCY,
                   on_tag=(lambda: progress.update(1)) if progress is not None else None,
                   lookup=_lookup)


def open_run(registry, client, repository=None) -> SyncRun:
    """Start a run: read the catalog (or take ``repository``) and list the repositories to
    sync, known ones that left the catalog included, so they empty out. A catalog that cannot
    be read closes the run with its error and raises RegistryError."""
    run = SyncRun.objects.create(registry=registry)
    try:
        listed = [repository] if repository else list(client.catalog())
    except RegistryError as exc:
        record_health(registry, str(exc))
        log.warning("sync run=%s failed: %s", run.pk, exc)
        close_run(run.pk, error=names.clean(exc, 2000))
        raise
    except BaseException as exc:
        close_run(run.pk, error=names.clean(exc, 2000) or type(exc).__name__)
        raise
    record_health(registry, "")
    listed = _valid_names(run, listed)
    wanted = {name: True for name in listed}
    if not repository:
        known = set(Repository.objects.filter(registry=registry).values_list("name", flat=True))
        wanted.update({n: False for n in _valid_names(run, sorted(known - set(listed)))})
    RepositorySync.objects.bulk_create(
        [RepositorySync(run=run, name=n, listed=is_listed) for n, is_listed in wanted.items()],
        batch_size=QUERY_CHUNK)
    run.whole_catalog = not repository
    run.remaining = len(wanted)
    run.save(update_fields=["whole_catalog", "remaining", "problems"])
    if not wanted:
        close_run(run.pk)
        run.refresh_from_db()
    return run


def open_runs(registry):
    """Runs of ``registry`` still going: their repositories are being synced (or queued)."""
    return SyncRun.objects.filter(registry=registry, finished_at__isnull=True)


def close_abandoned_runs(registry, now=None) -> int:
    """Close the open runs that made no progress for ABANDONED_AFTER (their tasks were lost)."""
    now = now or timezone.now()
    closed = 0
    for run in open_runs(registry).annotate(last=Max("repository_syncs__finished_at")):
        if max(run.started_at, run.last or run.started_at) < now - ABANDONED_AFTER:
            closed += close_run(run.pk, error=f"abandoned: {run.remaining} repositories were "
                                "never synced (their tasks were lost)", forget=False)
    return closed


def sync_repository(run, name, client, worker=""):
    """Sync one repository of ``run`` (what a worker's task does) and record it there."""
    crawler = make_crawler(client)
    try:
        sync_repositories(run, [name], crawler, worker=worker)
    finally:
        crawler.close()


class _Repository:
    """One repository being synced: what its chunks add up to."""

    def __init__(self, name):
        self.name = name
        self.repo = None
        self.listed = set()
        self.reached = set()
        self.chunks = 0  # not written yet
        self.failed = False
        self.outcome = {"tags": 0, "fetched": 0, "removed": 0, "problems": []}

    def fail(self, run, exc):
        """A failure costs only this repository: the rest of it is skipped, the reason listed."""
        log.exception("sync run=%s repository=%s not written", run.pk, self.name)
        if not self.failed:
            self.outcome["problems"].append({"reference": self.name, "error": "could not be "
                                             f"written: {type(exc).__name__}: {exc}"})
        self.failed = True


def sync_repositories(run, repositories, crawler, progress=None, worker=""):
    """Sync ``repositories`` of ``run`` one after the other, each recorded on the run once done
    (the last one closes it). The requests of the next two chunks, of this repository or the
    next, are queued while one is written: the registry is read while the database is
    written. Safe to run twice for a repository (a redelivered task): the writes are
    idempotent and its figures count once."""
    feed = _feed(run, repositories, crawler, progress, worker)
    flights = deque()

    def launch():
        item = next(feed, None)
        if item is None:
            return
        state, tags, digests = item
        try:
            flights.append((state, *_start_chunk(crawler, state.repo, tags, digests)))
        except Exception as exc:  # noqa: BLE001 - one poison repository never stops the sync
            state.fail(run, exc)
            flights.append((state, None, None))

    launch()
    launch()
    while flights:
        state, had, crawl = flights.popleft()
        try:
            result = crawler.finish(crawl) if crawl is not None else None
        except Exception as exc:  # noqa: BLE001
            state.fail(run, exc)
        launch()
        if crawl is not None and not state.failed:
            try:
                write_chunk(state.repo, had, result, state.outcome)
                state.reached |= set(result.tag_digests.values()) | set(result.fetched)
            except Exception as exc:  # noqa: BLE001
                state.fail(run, exc)
        state.chunks -= 1
        if state.chunks == 0:
            if not state.failed:
                try:
                    _reconcile(state.repo, state.listed, state.reached, crawler, state.outcome)
                except Exception as exc:  # noqa: BLE001
                    state.fail(run, exc)
            record_repository(run.pk, state.name, state.outcome, worker)


def _feed(run, repositories, crawler, progress, worker):
    """(repository state, tags, digests) for each chunk of each repository, in order. A
    repository whose tags cannot be listed is left as it is this time, with the problem
    recorded; tags outside the grammar are skipped likewise."""
    for name in repositories:
        state = _Repository(name)
        problems = state.outcome["problems"]
        try:
            tags = crawler.client.tags(name)
        except RegistryError as exc:
            problems.append({"reference": name, "error": f"could not list its tags: {exc}"})
            record_repository(run.pk, name, state.outcome, worker)
            continue
        listed = [t for t in tags if names.valid_tag(t)]
        for bad in [t for t in tags if not names.valid_tag(t)][:20]:
            problems.append({"reference": f"{name}:{names.shown(bad)}",
                             "error": "not a valid tag: skipped"})
        del tags
        state.listed, state.outcome["tags"] = set(listed), len(listed)
        if progress is not None:
            progress.total += len(listed)
            progress.refresh()
        try:
            state.repo, _ = Repository.objects.get_or_create(registry=run.registry, name=name)
            unread = list(Manifest.objects.filter(repository=state.repo).not_read()
                          .values_list("digest", flat=True))
        except Exception as exc:  # noqa: BLE001
            state.fail(run, exc)
            record_repository(run.pk, name, state.outcome, worker)
            continue
        chunks = [listed[i:i + CHUNK_TAGS] for i in range(0, len(listed), CHUNK_TAGS)] or [[]]
        state.chunks = len(chunks)
        for n, chunk in enumerate(chunks):
            yield state, chunk, unread if n == 0 else ()


def record_repository(run_id, name, outcome, worker=""):
    """Add one repository's figures to its run, once; the last one closes the run."""
    with transaction.atomic():
        run = SyncRun.objects.select_for_update().get(pk=run_id)
        # The run row is locked: a redelivered task for the same repository waits here, then
        # finds it finished and adds nothing.
        if not RepositorySync.objects.filter(run=run, name=name, finished_at__isnull=True) \
                .update(finished_at=timezone.now(), worker=worker[:200]):
            return
        run.repositories += 1
        run.tags += outcome["tags"]
        run.manifests_fetched += outcome["fetched"]
        run.removed += outcome["removed"]
        for problem in outcome["problems"]:
            _problem(run, problem["reference"], problem["error"])
        run.remaining -= 1
        run.save(update_fields=["repositories", "tags", "manifests_fetched", "removed",
                                "problems", "remaining"])
    if run.remaining <= 0:
        close_run(run_id)


def close_run(run_id, error="", forget=True) -> int:
    """Close a run (once: returns 0 when it was closed already). A run that read the whole
    catalog and ended without an error forgets the repositories that left the catalog and
    hold nothing."""
    now = timezone.now()
    with transaction.atomic():
        run = SyncRun.objects.select_for_update().filter(pk=run_id, finished_at__isnull=True) \
            .select_related("registry").first()
        if run is None:
            return 0
        run.finished_at, run.error = now, error
        run.save(update_fields=["finished_at", "error"])
        if error:
            return 1
        if forget and run.whole_catalog:
            _forget_empty_repositories(run)
        run.registry.last_synced_at = now
        run.registry.save(update_fields=["last_synced_at"])
    log.info("sync run=%s repositories=%d tags=%d fetched=%d removed=%d problems=%d",
             run.pk, run.repositories, run.tags, run.manifests_fetched, run.removed,
             len(run.problems))
    return 1


def _problem(run, reference, error):
    if len(run.problems) < MAX_PROBLEMS:
        run.problems.append({"reference": names.clean(reference, 400),
                             "error": names.clean(error, 2000)})


def _valid_names(run, candidates):
    """The repository names a sync may put in a URL; the others are listed as problems."""
    out = []
    for name in candidates:
        if names.valid_name(name):
            out.append(name)
        else:
            _problem(run, names.shown(name, 300), "not a valid repository name: hubmgr does "
                     "not read it (an administrator can remove it from hubmgr in the admin)")
    return out


def _start_chunk(crawler, repo, tags, digests=()):
    """Queue the requests for ``tags``: a HEAD for a tag whose manifest we read before, a GET
    for the others. Returns ({tag: digest it had}, the crawl in flight)."""
    had, known = {}, set()
    for start in range(0, len(tags), QUERY_CHUNK):
        for tag, digest, fetched, version in Tag.objects.filter(
                repository=repo, name__in=tags[start:start + QUERY_CHUNK]).values_list(
                "name", "manifest__digest", "manifest__fetched", "manifest__read_version"):
            had[tag] = digest
            if fetched and version >= READ_VERSION:
                known.add(digest)
    plan = {t: had.get(t) for t in tags}
    return had, crawler.start(repo.name, plan, known, digests, context=repo.pk)


def _lookup(repo_id, digests, config_digests):
    """What the inventory already read: which of ``digests`` of this repository are fetched,
    and what images of the registry (any repository) read from ``config_digests``. The crawler
    asks in batches instead of fetching again."""
    known, configs = set(), {}
    digests, config_digests = list(digests), list(config_digests)
    for start in range(0, len(digests), QUERY_CHUNK):
        known.update(Manifest.objects.filter(
            repository_id=repo_id, digest__in=digests[start:start + QUERY_CHUNK]).read()
            .values_list("digest", flat=True))
    # Through the registry's blob rows (indexed by digest) to an image that links its config.
    registry = Repository.objects.filter(pk=repo_id).values_list("registry_id", flat=True)
    for start in range(0, len(config_digests), QUERY_CHUNK):
        for digest, platform, created in Manifest.objects.filter(
                blob_links__blob__registry_id__in=registry,
                blob_links__blob__digest__in=config_digests[start:start + QUERY_CHUNK],
                config_digest=F("blob_links__blob__digest"), fetched=True,
                kind=Kind.IMAGE).values_list("config_digest", "platform", "created"):
            configs[digest] = ImageConfig(platform, created)
    return known, configs


def write_chunk(repo, had, result, outcome):
    """Write what one chunk's crawl read, in one transaction: new manifests, tags that moved,
    tags that are gone."""
    changed = {t: d for t, d in result.tag_digests.items() if had.get(t) != d}
    gone_tags = result.tags_gone & set(had)
    outcome["fetched"] += len(result.fetched)
    # A repository's problems are kept up to the run's limit: memory stays bounded too.
    outcome["problems"].extend(result.problems[:MAX_PROBLEMS - len(outcome["problems"])])
    if not (result.fetched or result.missing or changed or gone_tags):
        return
    _insert_blobs(repo.registry_id, [b for item in result.fetched.values() if item.manifest
                                     for b in item.manifest.stored_blobs])
    with writing(repo) as batch:  # writers of one repository take turns (store.writing)
        ids = batch.store_fetched(result.fetched, result.configs, result.missing) \
            if result.fetched or result.missing else {}
        wanted = [d for d in set(changed.values()) if d not in ids]
        for start in range(0, len(wanted), QUERY_CHUNK):
            ids.update(Manifest.objects.filter(
                repository=repo, digest__in=wanted[start:start + QUERY_CHUNK])
                .values_list("digest", "id"))
        batch.set_tags({t: ids[d] for t, d in changed.items() if d in ids})
        batch.drop_tags(gone_tags)


def _insert_blobs(registry_id, descriptors):
    """On PostgreSQL, where workers write repositories at the same time: insert the blobs a
    chunk links first, sorted and each committed at once. Blobs are shared between
    repositories, and two transactions inserting the same blobs in opposite orders would wait
    on each other (a deadlock); this way the transaction finds them all there. (SQLite has one
    writer at a time.)"""
    if connection.vendor != "postgresql" or not descriptors:
        return
    rows = sorted({d.digest: d.size for d in descriptors}.items())
    table = connection.ops.quote_name(Blob._meta.db_table)
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} (registry_id, digest, size) VALUES (%s, %s, %s) "
                           "ON CONFLICT (registry_id, digest) DO NOTHING",
                           [(registry_id, digest, size) for digest, size in rows])


def _reconcile(repo, listed, reached, crawler, outcome):
    """After every chunk: drop tags the registry no longer lists, and forget manifests that no
    tag or index reached and the registry answers 404 for."""
    dropped = [t for t in Tag.objects.filter(repository=repo).values_list("name", flat=True)
               .iterator(chunk_size=2000) if t not in listed]
    for index_digest, child_digest in IndexChild.objects.filter(index__repository=repo) \
            .values_list("index__digest", "child__digest").iterator(chunk_size=2000):
        if index_digest in reached:
            reached.add(child_digest)
    unseen = {d: i for d, i in Manifest.objects.filter(repository=repo)
              .values_list("digest", "id").iterator(chunk_size=2000) if d not in reached}
    answers, waiting = {}, list(unseen)
    for start in range(0, len(waiting), CHUNK_TAGS):  # a chunk of HEADs in flight at a time
        answers.update(crawler.exists(repo.name, waiting[start:start + CHUNK_TAGS]))
    gone = [unseen[d] for d, present in answers.items() if present is False]
    for digest, present in answers.items():
        if isinstance(present, str) and len(outcome["problems"]) < MAX_PROBLEMS:
            outcome["problems"].append({"reference": f"{repo.name}@{digest}", "error": present})
    with writing(repo) as batch:
        batch.drop_tags(dropped)
        batch.forget(gone)
    # Notifications and writes move the counts by differences; a sync counts them again
    # (its repository's row locked, so no writer moves them meanwhile).
    with transaction.atomic():
        Repository.objects.select_for_update().filter(pk=repo.pk).first()
        refresh_counts(repo)
    outcome["removed"] += len(gone)
    Repository.objects.filter(pk=repo.pk).update(last_synced_at=timezone.now())


def _forget_empty_repositories(run):
    """A repository that left the catalog and holds nothing we know of is gone."""
    listed = RepositorySync.objects.filter(run=run, listed=True).values("name")
    for repo in Repository.objects.filter(registry=run.registry).exclude(name__in=listed):
        if not repo.manifests.exists():
            repo.delete()
