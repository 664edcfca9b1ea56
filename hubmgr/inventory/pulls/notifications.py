"""Registry notifications: parse an envelope, then apply events in bulk, in one transaction.

Push events give "last pushed", pull events "last pulled", delete events remove what is gone.
Events are deduplicated by id: the registry retries deliveries and may send one twice. The
webhook only queues envelopes (envelopes.py); a worker applies them here, many at a time.

Per manifest, times only move forward, and a tag only moves to a push later than the one
(or the sync) that last set it, so events delivered late or in another batch change nothing
they should not. Each event is checked on its own: one that is malformed, or that cannot be
applied, is recorded (ProcessedEvent.error, logged with its id) and skipped, and the others
are applied.
"""

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction

from hubmgr.registry import names
from hubmgr.registry.client import USER_AGENT
from hubmgr.registry.manifests import (
    INDEX_TYPES, IMAGE_TYPES, SCHEMA1_TYPES, parse_time, plausible)

from ..catalog.store import CHUNK, chunks, note_activity, writing
from ..models import Kind, Manifest, ProcessedEvent, PushSource, Repository, Tag, TagHistory
from . import taghistory

log = logging.getLogger("hubmgr.notifications")
MEDIA_TYPES = ("application/vnd.docker.distribution.events.v1+json",
               "application/vnd.docker.distribution.events.v2+json", "application/json")
ACTIONS = ("push", "pull", "mount", "delete")
OUR_AGENT = USER_AGENT.split(" ", 1)[0].split("/", 1)[0] + "/"
MAX_EVENTS = 10_000  # per envelope; the registry sends a few at a time
MAX_EVENT_ID = 100


class BadEnvelope(ValueError):
    """The body is not a notification envelope at all; nothing was written."""


@dataclass
class Event:
    id: str
    action: str = ""
    timestamp: object = None
    repository: str = ""
    digest: str = ""
    tag: str = ""
    media_type: str = ""
    method: str = ""
    useragent: str = ""
    error: str = ""  # why this event cannot be applied ("" when it can)


@dataclass
class Outcome:
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    to_fetch: dict = field(default_factory=lambda: defaultdict(set))  # repo id -> digests

    def add(self, other):
        """Count another outcome's events (and digests to fetch) into this one."""
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        for repo_id, digests in other.to_fetch.items():
            self.to_fetch[repo_id] |= digests

    def as_json(self):
        return {"accepted": self.applied, "duplicates": self.duplicates,
                "rejected": self.rejected}


def load_envelope(body: bytes) -> list:
    """The envelope's raw events; BadEnvelope when the body is not an object with an "events"
    list (of at most MAX_EVENTS). The webhook checks only this before queueing the body."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadEnvelope(f"body is not JSON: {names.clean(exc, 200)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise BadEnvelope('body must be an object with an "events" list')
    if len(data["events"]) > MAX_EVENTS:
        raise BadEnvelope(f"at most {MAX_EVENTS} events per delivery")
    return data["events"]


def parse_envelope(body: bytes) -> list[Event]:
    """The envelope's events, each checked and bounded."""
    return [parse_event(n, raw) for n, raw in enumerate(load_envelope(body))]


def _event_id(raw) -> str:
    """The id to deduplicate by; an over-long one is kept as its hash, so it still dedups."""
    value = raw.get("id") if isinstance(raw, dict) else None
    if not isinstance(value, str) or not value:
        return ""
    text = names.clean(value)
    if len(text) <= MAX_EVENT_ID and text == value:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


def parse_event(n, raw) -> Event:
    event = Event(_event_id(raw))
    if not isinstance(raw, dict):
        event.error = f"event {n} is not an object"
        return event
    target = raw.get("target") if isinstance(raw.get("target"), dict) else {}
    request = raw.get("request") if isinstance(raw.get("request"), dict) else {}
    action, repository = raw.get("action"), target.get("repository")
    digest, tag = target.get("digest") or "", target.get("tag") or ""
    event.action = action if action in ACTIONS else ""
    event.repository = repository if names.valid_name(repository) else ""
    event.media_type = names.clean(target.get("mediaType") or "", 120)
    event.method = names.clean(request.get("method") or "", 10)
    event.useragent = names.clean(request.get("useragent") or "", 300)
    event.timestamp = parse_time(raw.get("timestamp"))
    event.error = _event_error(event, raw, target, digest, tag)
    if not event.error:
        event.digest, event.tag = digest, tag
    return event


def _event_error(event, raw, target, digest, tag) -> str:
    """Why an event cannot be applied, or ""."""
    if not event.id:
        return "it has no id"
    if not event.action:
        return f"unknown action {names.shown(raw.get('action'))}"
    if not plausible(event.timestamp):
        return f"no valid timestamp ({names.shown(raw.get('timestamp'))})"
    if not event.repository:
        return f"no valid target repository ({names.shown(target.get('repository'))})"
    if digest and not names.valid_digest(digest):
        return f"not a valid digest: {names.shown(digest)}"
    if tag and not names.valid_tag(tag):
        return f"not a valid tag: {names.shown(tag)}"
    if event.action in ("push", "pull") and not digest:
        return f"a {event.action} without a digest"
    if event.action == "delete" and not (digest or tag):
        return "a delete of neither a digest nor a tag"
    return ""


def _is_manifest(media_type):
    return media_type in INDEX_TYPES + IMAGE_TYPES + SCHEMA1_TYPES


def counts_as_pull(event: Event) -> bool:
    if event.useragent.startswith(OUR_AGENT):
        return False  # our own crawler must never reset "last pulled"
    if event.method.upper() == "HEAD":
        return settings.COUNT_HEAD_PULLS
    return True


def apply_events(registry, events) -> Outcome:
    """Apply events once each, in one transaction. When that transaction fails as a whole
    (an event the checks let through and the database refused), each event is applied again
    on its own, so a poison event costs only itself."""
    try:
        with transaction.atomic():
            return _apply(registry, events)
    except Exception:  # noqa: BLE001 - isolate the poison event below
        log.exception("notification batch failed events=%d; applying them one by one",
                      len(events))
    outcome = Outcome()
    for event in events:
        try:
            with transaction.atomic():
                one = _apply(registry, [event])
        except Exception as exc:  # noqa: BLE001
            _reject(event, f"could not be applied: {type(exc).__name__}: {exc}", outcome)
            continue
        outcome.add(one)
    return outcome


def _reject(event, error, outcome):
    """Record an event that cannot be applied, so it is counted, shown and never retried. An
    id seen before (applied or rejected) is a redelivery: its record stays as it was."""
    if event.id:
        try:
            with transaction.atomic():
                _, created = ProcessedEvent.objects.get_or_create(
                    event_id=event.id, defaults={"action": event.action,
                                                 "repository": event.repository,
                                                 "error": names.clean(error, 2000)})
        except Exception:  # noqa: BLE001 - the log line below is the record then
            log.exception("notification rejection not recorded event=%s", event.id)
            created = True
        if not created:
            outcome.duplicates += 1
            return
    _log_rejected(event, error, outcome)


def _log_rejected(event, error, outcome):
    outcome.rejected += 1
    log.warning("notification rejected event=%s action=%s repository=%s error=%s",
                event.id or "-", event.action or "-", event.repository or "-", error)


def _apply(registry, events) -> Outcome:
    """Events in bulk: ids recorded in one statement, then each repository's events in
    timestamp order, pushes and pulls a few statements per run of them between deletes."""
    outcome = Outcome()
    fresh = _first_deliveries(events, outcome)
    work = defaultdict(list)
    for event in fresh:
        if event.action == "mount" or (event.action == "push"
                                        and not _is_manifest(event.media_type)):
            continue  # blob traffic
        if event.action == "pull" and not counts_as_pull(event):
            continue
        work[event.repository].append(event)
    repos = _repositories(registry, work)
    for repo in sorted(repos.values(), key=lambda r: r.pk):
        # Sorted by time (stable: arrival order breaks ties), so "last" means latest.
        todo = sorted(work[repo.name], key=lambda e: e.timestamp)
        with writing(repo) as batch:
            _apply_repository(repo, todo, batch, outcome.to_fetch[repo.pk])
    outcome.to_fetch = {k: v for k, v in outcome.to_fetch.items() if v}
    return outcome


def _first_deliveries(events, outcome) -> list[Event]:
    """Record the ids of events not seen before (with the reason for those that cannot be
    applied), and return the ones to apply. The first delivery of an id decides."""
    seen, first = set(), []
    for event in events:
        if not event.id:
            _log_rejected(event, event.error, outcome)
        elif event.id in seen:
            outcome.duplicates += 1
        else:
            seen.add(event.id)
            first.append(event)
    known = set()
    for start in range(0, len(first), CHUNK):
        known |= set(ProcessedEvent.objects.filter(
            event_id__in=[e.id for e in first[start:start + CHUNK]])
            .values_list("event_id", flat=True))
    new = [e for e in first if e.id not in known]
    outcome.duplicates += len(first) - len(new)
    ProcessedEvent.objects.bulk_create(
        [ProcessedEvent(event_id=e.id, action=e.action, repository=e.repository,
                        error=names.clean(e.error, 2000)) for e in new], batch_size=CHUNK)
    fresh = []
    for event in new:
        if event.error:
            _log_rejected(event, event.error, outcome)
        else:
            outcome.applied += 1
            fresh.append(event)
    return fresh


def _repositories(registry, work) -> dict:
    """{name: Repository} for the events' repositories; a push or pull creates its
    repository, a delete in one we do not know has nothing to remove."""
    repos = {r.name: r for r in Repository.objects.filter(registry=registry,
                                                          name__in=list(work))}
    missing = [name for name, events in work.items() if name not in repos
               and any(e.action != "delete" for e in events)]
    if missing:
        Repository.objects.bulk_create([Repository(registry=registry, name=name)
                                        for name in missing], ignore_conflicts=True)
        repos.update({r.name: r for r in Repository.objects.filter(registry=registry,
                                                                    name__in=missing)})
    for repo in repos.values():
        repo.registry = registry
    return repos


def _apply_repository(repo, events, batch, to_fetch):
    run = []
    for event in events:
        if event.action == "delete":
            _apply_run(repo, run, batch, to_fetch)
            run = []
            _delete(repo, event, batch, to_fetch)
        else:
            run.append(event)
    _apply_run(repo, run, batch, to_fetch)


def _apply_run(repo, events, batch, to_fetch):
    """Pushes and pulls (in time order, no delete between them): the latest time per
    manifest, moved forward only; each tag to its latest push, unless the tag was set later."""
    if not events:
        return
    rows = _manifests(repo, events, batch)
    pushed, pulled, tags, history = {}, {}, {}, []
    for event in events:
        manifest_id, fetched = rows[event.digest]
        times = pushed if event.action == "push" else pulled
        times[manifest_id] = max(times.get(manifest_id, event.timestamp), event.timestamp)
        if event.action == "push" and event.tag:
            tags[event.tag] = (manifest_id, event.timestamp)
            history.append((event.tag, event.digest, event.timestamp))
        if not fetched:
            to_fetch.add(event.digest)
    if move_times("last_pushed", pushed) + move_times("last_pulled", pulled):
        batch.times_moved = True  # the repository's version moves once, in store.writing
    note_activity(repo, pushed=max(pushed.values(), default=None),
                  pulled=max(pulled.values(), default=None))
    if tags:
        _move_tags(repo, tags, batch)
        # Every push of a tag, late ones included, at its own time (taghistory).
        taghistory.record(repo.pk, history, TagHistory.Source.PUSH_EVENT)


def _manifests(repo, events, batch) -> dict:
    """{digest: (id, fetched)}, making placeholder rows for digests we had not seen."""
    media = {}
    for event in events:
        if event.action == "push" or event.digest not in media:
            media[event.digest] = event.media_type
    rows = {}
    for chunk in chunks(list(media)):
        rows.update((d, (pk, f)) for d, pk, f in Manifest.objects.filter(
            repository=repo, digest__in=chunk).values_list("digest", "id", "fetched"))
    missing = [d for d in media if d not in rows]
    if missing:
        Manifest.objects.bulk_create(
            [Manifest(repository=repo, digest=d, media_type=media[d],
                      kind=Kind.INDEX if media[d] in INDEX_TYPES else Kind.IMAGE)
             for d in missing], batch_size=CHUNK, ignore_conflicts=True)
        new = {}
        for chunk in chunks(missing):
            new.update((d, (pk, f)) for d, pk, f in Manifest.objects.filter(
                repository=repo, digest__in=chunk).values_list("digest", "id", "fetched"))
        batch.added(pk for pk, _ in new.values())
        rows.update(new)
    return rows


MOVE_SQL = {
    "last_pushed": "UPDATE {table} SET last_pushed = %s, last_pushed_source = %s WHERE id = %s "
                   "AND (last_pushed IS NULL OR last_pushed_source <> %s OR last_pushed < %s)",
    "last_pulled": "UPDATE {table} SET last_pulled = %s WHERE id = %s "
                   "AND (last_pulled IS NULL OR last_pulled < %s)",
}


def move_times(column, times) -> int:
    """Move each manifest's time forward (never back) to {id: time}, one prepared statement
    for all of them. A push time from an image's created date always gives way. Returns how
    many rows moved."""
    if not times:
        return 0
    field = Manifest._meta.get_field(column)
    sql = MOVE_SQL[column].format(table=connection.ops.quote_name(Manifest._meta.db_table))
    rows = []
    for manifest_id, when in sorted(times.items()):
        when = field.get_db_prep_save(when, connection)
        if column == "last_pushed":
            rows.append((when, PushSource.PUSH_EVENT, manifest_id, PushSource.PUSH_EVENT, when))
        else:
            rows.append((when, manifest_id, when))
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
        # -1: the driver cannot tell; then count them all as moved.
        return cursor.rowcount if cursor.rowcount >= 0 else len(rows)


def _move_tags(repo, tags, batch):
    """Point tags at their latest pushes ({name: (manifest id, time)}). A tag the registry
    set later than a push (a late delivery) stays where it is."""
    current = {}
    for chunk in chunks(list(tags)):
        current.update((name, when) for name, when in Tag.objects.filter(
            repository=repo, name__in=chunk).values_list("name", "event_at"))
    mapping, at = {}, {}
    for name, (manifest_id, when) in tags.items():
        if name in current and current[name] is not None and when <= current[name]:
            continue
        mapping[name], at[name] = manifest_id, when
    batch.set_tags(mapping, at)


def _delete(repo, event, batch, to_fetch):
    if event.digest:
        batch.forget(Manifest.objects.filter(repository=repo, digest=event.digest)
                     .values_list("id", flat=True))
        to_fetch.discard(event.digest)
    else:
        batch.drop_tags([event.tag], set_before=event.timestamp)
        taghistory.close(repo.pk, event.tag, event.timestamp)
