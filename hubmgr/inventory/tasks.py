"""Celery tasks: thin wrappers that load state again and call plain functions."""

import logging
import time

from celery import group, shared_task
from django.conf import settings
from django.core.cache import cache
from django.db.models import Q

from hubmgr import celery_app
from hubmgr.registry.errors import RegistryError, RegistryUnavailable

from .catalog.store import writing
from .models import Repository, SyncRun
from .pulls import envelopes
from .registries import client_for, default_registry
from .storage import retention, snapshots
from .sync import runs as sync
from .sync.crawl import Crawler

log = logging.getLogger("hubmgr.tasks")
# How long a registry's answer on the referrers API is remembered (an upgrade shows within it).
REFERRERS_API_TTL = 3600


def fetch_manifests(repository_id, digests):
    """Read manifests learned from notifications (and their children and configs)."""
    repo = Repository.objects.select_related("registry").filter(pk=repository_id).first()
    if repo is None:
        return 0
    wanted = set(repo.manifests.filter(digest__in=list(digests), fetched=False)
                 .values_list("digest", flat=True))
    if not wanted:
        return 0
    client = client_for(repo.registry)
    crawler = Crawler(client, concurrency=4)
    # Whether the registry has the referrers API, as an earlier task learned it: a registry
    # without it is not asked again by every task (the crawl asks once otherwise).
    api_key = f"referrers-api:{repo.registry_id}"
    crawler.referrers_api = cache.get(api_key)
    try:
        known = set(repo.manifests.filter(fetched=True).values_list("digest", flat=True))
        result = crawler.crawl(repo.name, {}, known, sorted(wanted))
    finally:
        crawler.close()
        client.close()
    if crawler.referrers_api is not None:
        cache.set(api_key, crawler.referrers_api, REFERRERS_API_TTL)
    with writing(repo) as batch:
        batch.store_fetched(result.fetched, result.configs, result.missing)
    for problem in result.problems:
        log.warning("fetch repository=%s reference=%s error=%s", repo.name,
                    problem["reference"], problem["error"])
    unread = [d for d, item in result.fetched.items() if item.error and not item.media_type]
    if unread:
        # Raising makes Celery try again later; what was read is already stored.
        raise RegistryUnavailable(f"{len(unread)} manifest(s) of {repo.name} could not be read "
                                  f"yet: {result.fetched[unread[0]].error}")
    return len(result.fetched)


@shared_task(name=envelopes.FETCH_TASK, autoretry_for=(RegistryError,),
             retry_backoff=True, retry_jitter=True, max_retries=8)
def fetch(repository_id, digests):
    return fetch_manifests(repository_id, digests)


class QueueUnavailable(Exception):
    """The task queue (Redis) did not take the work, so none of it was started: a sync run
    is closed with that error, a policy run is taken back."""


def fan_out(registry):
    """Read the catalog and queue one sync_repository task per repository, for any worker to
    take. Returns the run, or None while an earlier run is still going (one that made no
    progress for a long time is closed as abandoned first). Raises RegistryError when the
    catalog cannot be read (the run is closed with that error), QueueUnavailable when the
    broker is down."""
    sync.close_abandoned_runs(registry)
    if sync.open_runs(registry).exists():
        log.info("reconcile skipped registry=%s: a sync is still running", registry.url)
        return None
    return _open_and_queue(registry)


def running_sync(registry, repository=None):
    """The open run that covers this scope: the whole catalog's, or for ``repository`` also a
    run of that repository alone. A run that lists no repository yet is reading the catalog."""
    runs = sync.open_runs(registry).order_by("-pk")
    whole = runs.filter(Q(whole_catalog=True) | Q(repository_syncs__isnull=True)).first()
    if whole is not None or repository is None:
        return whole
    return runs.filter(whole_catalog=False, repository_syncs__name=repository).first()


def sync_now(registry, repository=None):
    """The pages' "Sync now": queue a run of the whole catalog, or of one ``repository``, unless
    one covering it is still going. Returns (run, started). Raises RegistryError and
    QueueUnavailable as fan_out does."""
    sync.close_abandoned_runs(registry)
    running = running_sync(registry, repository)
    if running is not None:
        return running, False
    return _open_and_queue(registry, repository), True


def _open_and_queue(registry, repository=None):
    client = client_for(registry)
    try:
        run = sync.open_run(registry, client, repository)
    finally:
        client.close()
    todo = list(run.repository_syncs.filter(finished_at__isnull=True)
                .values_list("name", flat=True))
    if todo:
        try:
            group(sync_repository.s(run.pk, name) for name in todo).apply_async()
        except Exception as exc:  # noqa: BLE001 - any broker failure
            # An open run with no tasks would hold back every sync until it is abandoned.
            sync.close_run(run.pk, error=f"not queued: the task queue did not answer ({exc})",
                           forget=False)
            log.warning("sync run=%s not queued (broker unavailable): %s", run.pk, exc)
            raise QueueUnavailable(str(exc)) from exc
    return run


@shared_task(name="hubmgr.inventory.tasks.reconcile")
def reconcile():
    registry = default_registry()
    try:
        run = fan_out(registry)
    except RegistryError as exc:
        log.warning("reconcile failed registry=%s error=%s", registry.url, exc)
        return None
    return run.pk if run else None


@shared_task(name="hubmgr.inventory.tasks.sync_repository", bind=True,
             soft_time_limit=settings.SYNC_REPOSITORY_SECONDS,
             time_limit=settings.SYNC_REPOSITORY_SECONDS + settings.TASK_GRACE_SECONDS)
def sync_repository(self, run_id, name):
    """One repository of a fanned-out sync run; the last one to finish closes the run."""
    run = SyncRun.objects.select_related("registry").filter(
        pk=run_id, finished_at__isnull=True).first()
    if run is None or not run.repository_syncs.filter(name=name, finished_at__isnull=True) \
            .exists():
        return None  # done already (a redelivery), or the run was closed as abandoned
    client = client_for(run.registry)
    try:
        sync.sync_repository(run, name, client, worker=self.request.hostname or "")
    finally:
        client.close()
    log.info("sync run=%s repository=%s worker=%s done", run_id, name, self.request.hostname)
    if SyncRun.objects.filter(pk=run_id, whole_catalog=True, error="",
                              finished_at__isnull=False).exists():
        # This task closed a sync of the whole catalog: the overview's figures follow it
        # when it changed them (the first sync, or within the interval: snapshots.refresh).
        try:
            snapshot.delay()
        except Exception as exc:  # noqa: BLE001 - any broker failure; beat computes them later
            log.warning("snapshot after sync run=%s not queued: %s", run_id, exc)
    return name


@shared_task(name="hubmgr.inventory.tasks.snapshot")
def snapshot():
    """The overview's storage figures, as of now (today's row replaced), when they are due:
    beat asks every minute, and they are computed at most once per interval
    (snapshots.refresh). Returns the new row's id, or None."""
    row = snapshots.refresh(default_registry())
    return row.pk if row else None


@shared_task(name="hubmgr.inventory.tasks.prune")
def prune():
    counts = retention.prune()
    log.info("pruned %s", " ".join(f"{k.replace(' ', '_')}={n}" for k, n in counts.items()))
    return counts


# ---- the notification queue --------------------------------------------------------------
WAKE_KEY = "hubmgr:notifications:wake"
WAKE_SECONDS = 10  # a lost wake-up blocks others no longer than this (beat sweeps meanwhile)
TASK_SECONDS = 30  # one task's share of a long backlog; it queues its successor
# Within this long of its last wake-up call, a web process skips the next: the task it found
# or queued then had not started, and it lingers for envelopes before it ends (envelopes.drain).
WAKE_QUIET_SECONDS = 0.1
_redis = {}
_broker_down_until = [0.0]
_woken = [-1e9]


def wake_flag():
    """The broker's Redis, where one flag stands for "an apply task is queued"."""
    import redis

    url = celery_app.conf.broker_url
    if url not in _redis:
        _redis[url] = redis.Redis.from_url(url, **settings.REDIS_CLIENT_OPTIONS)
    return _redis[url]


def forget_wake_state():
    """Forget what this process knows of earlier wake-ups: the broker's "an apply task is
    queued" flag, the pause after a broker outage and the time of its last wake-up call.
    For when the broker was purged (between tests, say): the task the flag stood for is gone,
    so the next wake() must queue a new one rather than trust the flag or stay quiet."""
    wake_flag().delete(WAKE_KEY)
    _broker_down_until[0] = 0.0
    _woken[0] = -1e9


def wake():
    """Queue one apply task for envelopes just stored, unless one is queued and has not
    started yet (it will see them): a thousand envelopes a second queue a few tasks, not a
    thousand. With the broker down the envelopes wait for beat's sweep, and the webhook stops
    trying for a few seconds so the registry is not kept waiting on broker timeouts."""
    now = time.monotonic()
    if now < _broker_down_until[0] or now - _woken[0] < WAKE_QUIET_SECONDS:
        return
    _woken[0] = now
    try:
        if wake_flag().set(WAKE_KEY, 1, nx=True, ex=WAKE_SECONDS):
            apply_notifications.delay()
    except Exception as exc:  # noqa: BLE001 - any broker failure; the envelopes are stored
        _broker_down_until[0] = time.monotonic() + WAKE_SECONDS / 2
        log.warning("notification apply not queued (the sweep will apply them): %s", exc)


@shared_task(name="hubmgr.inventory.tasks.apply_notifications")
def apply_notifications(sweep=False):
    """Apply queued notification envelopes until the queue is empty. Also beat's sweep (every
    HUBMGR_NOTIFY_SWEEP_SECONDS), for a lost wake-up or envelopes stored while the broker
    was down; the sweep also logs the queue's depth."""
    try:
        wake_flag().delete(WAKE_KEY)  # envelopes stored from now on queue a new task
    except Exception as exc:  # noqa: BLE001
        log.warning("notification wake flag not cleared: %s", exc)
    if sweep:
        envelopes.report_backlog()
    done, outcome = envelopes.drain(default_registry(), seconds=TASK_SECONDS,
                                    linger=2.5 * WAKE_QUIET_SECONDS)
    if not done:
        apply_notifications.delay()
    return outcome.applied
