"""The notification queue: the webhook stores each envelope as it came, in one INSERT, and a
worker applies the queued envelopes in arrival order, many per transaction.

The registry waits for each delivery's answer before it sends the next event, and retries a
failed one for ever; so the webhook does as little as it can (authenticate, check the JSON's
shape, store), and the work that grows with the inventory happens here, in batches.

Appliers take turns: each batch claims the oldest pending envelopes under a lock (a
transaction-scoped advisory lock on PostgreSQL; SQLite lets one writer in at a time anyway),
so events reach the inventory in arrival order and two workers never apply the same envelope.
An envelope is deleted in the transaction that applied it: it is applied once, or not at all
and still queued. One that cannot be applied even on its own keeps its error and leaves the
queue; the events inside it that were recorded keep theirs in ProcessedEvent.
"""

import logging
import threading
import time
from contextlib import nullcontext
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone

from hubmgr import celery_app

from ..models import QueuedEnvelope, Registry
from .notifications import Outcome, apply_events, parse_envelope

log = logging.getLogger("hubmgr.notifications")
LOCK_KEY = 0x6875626D  # "hubm": the pg_advisory lock appliers take turns on
BACKLOG_WARNING_SECONDS = 60
WINDOW_LOOKBACK = timedelta(days=1)
_sqlite_writer = threading.Lock()
FETCH_TASK = "hubmgr.inventory.tasks.fetch"  # (tasks.fetch: reads manifests a push named)


def enqueue(body: bytes, events: int):
    """Store an envelope for the worker: one INSERT, written without the ORM's per-save work
    (this runs for every event a registry sends)."""
    table = connection.ops.quote_name(QueuedEnvelope._meta.db_table)
    received = QueuedEnvelope._meta.get_field("received_at").get_db_prep_save(
        timezone.now(), connection)
    # SQLite lets one writer in at a time and makes the others poll with growing sleeps; the
    # threads of one web process queue here instead, in turn.
    with _sqlite_writer if connection.vendor == "sqlite" else nullcontext():
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} (received_at, body, events, error) "
                           "VALUES (%s, %s, %s, '')", [received, body, events])


def apply_batch(registry, limit=None) -> tuple[int, Outcome]:
    """Apply the oldest pending envelopes (at most ``limit``) in one transaction. Returns how
    many envelopes were taken (0: the queue is empty) and what became of their events."""
    limit = limit or settings.NOTIFY_BATCH
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
        claimed = list(QueuedEnvelope.objects.select_for_update(skip_locked=True)
                       .filter(error="").order_by("id").values_list("id", "body")[:limit])
        if not claimed:
            return 0, Outcome()
        if registry.notified_since is None:
            _open_window(registry, *claimed[0])
        try:
            with transaction.atomic():
                outcome = _apply(registry, claimed)
        except Exception:  # noqa: BLE001 - each envelope alone, below
            log.exception("notification envelopes failed envelopes=%d; one by one",
                          len(claimed))
            outcome = Outcome()
            for envelope in claimed:
                _apply_alone(registry, envelope, outcome)
        QueuedEnvelope.objects.filter(id__in=[pk for pk, _ in claimed], error="").delete()
        for repo_id, digests in outcome.to_fetch.items():
            transaction.on_commit(lambda r=repo_id, d=sorted(digests): _queue_fetch(r, d))
    log.info("notifications applied envelopes=%d applied=%d duplicates=%d rejected=%d "
             "fetch=%d", len(claimed), outcome.applied, outcome.duplicates, outcome.rejected,
             sum(len(d) for d in outcome.to_fetch.values()))
    return len(claimed), outcome


def _apply(registry, claimed) -> Outcome:
    events = []
    for _, body in claimed:
        events.extend(parse_envelope(bytes(body)))
    return apply_events(registry, events)


def _apply_alone(registry, envelope, outcome):
    pk = envelope[0]
    try:
        with transaction.atomic():
            one = _apply(registry, [envelope])
    except Exception as exc:  # noqa: BLE001 - kept with its reason, out of the queue's way
        log.exception("notification envelope failed id=%s", pk)
        QueuedEnvelope.objects.filter(pk=pk).update(
            error=f"could not be applied: {type(exc).__name__}: {exc}"[:2000])
        return
    outcome.add(one)


def _queue_fetch(repo_id, digests):
    try:  # by name: the task module builds on this one
        celery_app.send_task(FETCH_TASK, (repo_id, digests))
    except Exception as exc:  # noqa: BLE001 - any broker failure
        # The events are applied; the manifests stay marked unread and the next sync reads them.
        log.warning("fetch not queued repository_id=%s digests=%d error=%s", repo_id,
                    len(digests), exc)


def _open_window(registry, envelope_id, body):
    """The first notification from a registry: from its first event on, hubmgr sees every
    pull and push (hubmgr.inventory.pulls.coverage). The registry may have held its first events a
    while (retrying while hubmgr was unreachable), but a clock is trusted no further back than
    a day before arrival. An earlier window start (imported access logs) stays."""
    received = QueuedEnvelope.objects.filter(pk=envelope_id).values_list(
        "received_at", flat=True).first() or timezone.now()
    try:
        times = [e.timestamp for e in parse_envelope(body) if e.timestamp]
    except Exception:  # noqa: BLE001 - the envelope's own errors are recorded when applied
        times = []
    start = max(min([received, *times]), received - WINDOW_LOOKBACK)
    mine = Registry.objects.filter(pk=registry.pk)
    mine.filter(notified_since__isnull=True).update(notified_since=start)
    mine.filter(pulls_observed_since__isnull=True).update(pulls_observed_since=start)
    registry.refresh_from_db(fields=["notified_since", "pulls_observed_since"])
    log.info("notifications first received registry=%s since=%s", registry.pk,
             registry.notified_since.isoformat())


def drain(registry, seconds=None, limit=None, linger=0.0) -> tuple[bool, Outcome]:
    """Apply batches until the queue is empty (True) or ``seconds`` have passed (False).
    With ``linger``, the queue must be found empty twice, that long apart: envelopes stored
    by a web process that skipped its wake-up call (tasks.wake) are still applied."""
    deadline = None if seconds is None else time.monotonic() + seconds
    total = Outcome()
    empty = False
    while True:
        taken, outcome = apply_batch(registry, limit)
        total.add(outcome)
        if not taken:
            if empty or not linger:
                return True, total
            time.sleep(linger)
        empty = not taken
        if deadline is not None and time.monotonic() > deadline:
            return False, total


def backlog() -> dict:
    """The queue's depth: envelopes (and events) waiting, the oldest one's age in seconds,
    and envelopes kept because they could not be applied."""
    figures = QueuedEnvelope.objects.aggregate(
        pending=Count("id", filter=Q(error="")), failed=Count("id", filter=~Q(error="")),
        oldest=Min("received_at", filter=Q(error="")))
    oldest = figures.pop("oldest")
    figures["oldest_seconds"] = round((timezone.now() - oldest).total_seconds(), 1) \
        if oldest else 0
    return figures


def report_backlog() -> dict:
    """Log the queue's depth (beat's sweep calls this every few seconds): a warning when its
    oldest envelope has waited a minute, once, then again every BACKLOG_REWARN_SECONDS while
    the backlog lasts, not at every sweep. Envelopes that failed stay until someone looks;
    they are counted on /healthz and listed in the admin, not logged each time."""
    figures = backlog()
    if figures["oldest_seconds"] > BACKLOG_WARNING_SECONDS:
        if _first_warning():
            log.warning("notification queue backlog pending=%d oldest_seconds=%.0f failed=%d "
                        "(is a worker running?)", figures["pending"],
                        figures["oldest_seconds"], figures["failed"])
    elif figures["pending"]:
        log.info("notification queue pending=%d oldest_seconds=%.1f failed=%d",
                 figures["pending"], figures["oldest_seconds"], figures["failed"])
    return figures


BACKLOG_REWARN_SECONDS = 600
BACKLOG_WARNED_KEY = "hubmgr:notification-backlog-warned"


def _first_warning() -> bool:
    """True when no process has warned of the backlog in the last BACKLOG_REWARN_SECONDS (the
    cache every process shares under HUBMGR_REDIS_URL). Without a cache: True."""
    from django.core.cache import cache

    try:
        return cache.add(BACKLOG_WARNED_KEY, 1, BACKLOG_REWARN_SECONDS)
    except Exception:  # noqa: BLE001 - a cache that is down: warn rather than stay silent
        return True
