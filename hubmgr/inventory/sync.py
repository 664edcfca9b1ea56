"""Crawl a registry into the inventory and reconcile what disappeared.

A manifest leaves the inventory only when the registry answers 404 to a HEAD by its digest:
untagged images learned from push events stay listed. A tag whose lookup failed keeps the
digest it had. A repository write is one transaction, so a sync never leaves half a state.
"""

import logging
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.utils import timezone

from hubmgr.registry import names
from hubmgr.registry.errors import RegistryError
from hubmgr.registry.manifests import ImageConfig

from .crawl import Crawler
from .models import IndexChild, Kind, Manifest, Repository, SyncRun, Tag
from .registries import record_health
from .store import writing

log = logging.getLogger("hubmgr.sync")
MAX_PROBLEMS = 1000


def sync_registry(registry, client, repository=None, concurrency=None, progress=None) -> SyncRun:
    """Sync every repository in the catalog, or only ``repository``.

    Raises RegistryError when the registry cannot be listed at all (down, credentials refused);
    problems with single repositories, tags or manifests are recorded on the returned SyncRun,
    and the sync goes on. The run is always closed, with its error when it stopped early.
    """
    run = SyncRun.objects.create(registry=registry)
    try:
        _sync(run, registry, client, repository, concurrency or settings.SYNC_CONCURRENCY,
              progress)
    except BaseException as exc:
        run.error = names.clean(exc, 2000) or type(exc).__name__
        if not isinstance(exc, RegistryError):
            log.exception("sync run=%s stopped", run.pk)
        raise
    finally:
        run.finished_at = timezone.now()
        run.save()
    registry.last_synced_at = run.finished_at
    registry.save(update_fields=["last_synced_at"])
    log.info("sync run=%s repositories=%d tags=%d fetched=%d removed=%d problems=%d",
             run.pk, run.repositories, run.tags, run.manifests_fetched, run.removed,
             len(run.problems))
    return run


def _sync(run, registry, client, repository, concurrency, progress):
    # Configs are immutable: what earlier syncs read from them is not fetched again.
    config_cache = {
        c: ImageConfig(platform, created) for c, platform, created in
        Manifest.objects.filter(repository__registry=registry, fetched=True, kind=Kind.IMAGE)
        .exclude(config_digest="").values_list("config_digest", "platform", "created")}
    crawler = Crawler(client, concurrency, config_cache,
                      on_tag=(lambda: progress.update(1)) if progress is not None else None)
    try:
        try:
            listed = [repository] if repository else list(client.catalog())
        except RegistryError as exc:
            record_health(registry, str(exc))
            log.warning("sync run=%s failed: %s", run.pk, exc)
            raise
        record_health(registry, "")
        # Repositories we know that left the catalog are reconciled too, so they empty out.
        listed = _valid_names(run, listed)
        known = set(Repository.objects.filter(registry=registry).values_list("name", flat=True))
        wanted = listed + _valid_names(run, sorted(known - set(listed)))
        tag_lists = _tag_lists(run, crawler, wanted)
        if progress is not None:
            progress.reset(total=sum(len(t) for t in tag_lists.values()))
        # While one repository's results are written, the next one is already being read.
        with ThreadPoolExecutor(1, thread_name_prefix="crawl-ahead") as ahead:
            previous = None
            for name, tags in tag_lists.items():
                plan = _plan(registry, name, tags)
                plan["future"] = ahead.submit(crawler.crawl, name, plan["tags"], plan["known"],
                                              plan["unread"])
                if previous:
                    _finish_safely(crawler, previous, run)
                previous = plan
            if previous:
                _finish_safely(crawler, previous, run)
        if not repository:
            _forget_empty_repositories(registry, set(listed))
    finally:
        crawler.close()
    run.repositories = len(tag_lists)


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


def _tag_lists(run, crawler, repositories) -> dict:
    """{repository: [valid tags]}. A repository whose tags cannot be listed is left as it is
    this time, with the problem recorded; tags outside the grammar are skipped likewise."""
    futures = {name: crawler.pool.submit(crawler.client.tags, name) for name in repositories}
    out = {}
    for name, future in futures.items():
        try:
            tags = future.result()
        except RegistryError as exc:
            _problem(run, name, f"could not list its tags: {exc}")
            continue
        out[name] = [t for t in tags if names.valid_tag(t)]
        for bad in [t for t in tags if not names.valid_tag(t)][:20]:
            _problem(run, f"{name}:{names.shown(bad)}", "not a valid tag: skipped")
    if futures and not out:
        # Every listing failed: the registry itself, not one repository, is the problem.
        first = next(iter(futures.values())).exception()
        if isinstance(first, RegistryError) and first.transient:
            raise first
    return out


def _finish_safely(crawler, plan, run):
    """Write one repository; a failure costs only that repository, with the reason listed."""
    try:
        _finish(crawler, plan, run)
    except Exception as exc:  # noqa: BLE001 - one poison repository never stops the sync
        log.exception("sync run=%s repository=%s not written", run.pk, plan["repo"].name)
        _problem(run, plan["repo"].name, f"could not be written: {type(exc).__name__}: {exc}")


def _plan(registry, name, tags):
    """What the inventory already knows of a repository, read before crawling it."""
    repo, _ = Repository.objects.get_or_create(registry=registry, name=name)
    had = dict(Tag.objects.filter(repository=repo).values_list("name", "manifest__digest"))
    known = set(Manifest.objects.filter(repository=repo, fetched=True)
                .values_list("digest", flat=True))
    unread = list(Manifest.objects.filter(repository=repo, fetched=False)
                  .values_list("digest", flat=True))
    return {"repo": repo, "had": had, "listed": tags, "known": known, "unread": unread,
            "tags": {t: had.get(t) for t in tags}}


def _finish(crawler, plan, run):
    """Reconcile and write one crawled repository, in one transaction."""
    repo, had, tags = plan["repo"], plan["had"], plan["listed"]
    result = plan["future"].result()

    # Manifests in the inventory that no tag or index reached this time: ask the registry.
    reached = set(result.tag_digests.values()) | set(result.fetched)
    for index_digest, child_digest in IndexChild.objects.filter(index__repository=repo) \
            .values_list("index__digest", "child__digest"):
        if index_digest in reached:
            reached.add(child_digest)
    all_ids = dict(Manifest.objects.filter(repository=repo).values_list("digest", "id"))
    unseen = {d: i for d, i in all_ids.items() if d not in reached}
    answers = crawler.exists(repo.name, unseen) if unseen else {}
    gone = [unseen[d] for d, present in answers.items() if present is False]
    for digest, present in answers.items():
        if isinstance(present, str):
            result.problems.append({"reference": f"{repo.name}@{digest}", "error": present})

    with writing(repo, whole=True) as batch:
        ids = batch.store_fetched(result.fetched, result.configs, result.missing) \
            if result.fetched or result.missing else {}
        ids = {**all_ids, **ids}
        batch.set_tags({t: ids[d] for t, d in result.tag_digests.items() if d in ids})
        # Tags the registry no longer lists, or that answered 404, go; failed lookups stay.
        batch.drop_tags((set(had) - set(tags)) | result.tags_gone)
        batch.forget(gone)
        seen_ids = [ids[d] for d in reached if d in ids]
        for start in range(0, len(seen_ids), 500):
            Manifest.objects.filter(id__in=seen_ids[start:start + 500]).update(
                last_seen=timezone.now())
        Repository.objects.filter(pk=repo.pk).update(last_synced_at=timezone.now())

    run.tags += len(tags)
    run.manifests_fetched += len(result.fetched)
    run.removed += len(gone)
    for problem in result.problems:
        _problem(run, problem["reference"], problem["error"])
    return result


def _forget_empty_repositories(registry, listed):
    """A repository that left the catalog and holds nothing we know of is gone."""
    for repo in Repository.objects.filter(registry=registry).exclude(name__in=listed):
        if not repo.manifests.exists():
            repo.delete()
