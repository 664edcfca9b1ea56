"""Registry notifications: parse an envelope, then apply its events in one transaction.

Push events give "last pushed", pull events "last pulled", delete events remove what is gone.
Events are deduplicated by id: the registry retries deliveries and may send one twice.

The registry retries a delivery that does not get a 2xx for ever, holding back every later
event behind it. So once an envelope is authenticated and is a JSON object with an "events"
list, each event is checked on its own: one that is malformed, or that cannot be applied, is
recorded (ProcessedEvent.error, logged with its id) and skipped, and the others are applied.
"""

import hashlib
import json
import logging
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from hubmgr.registry import names
from hubmgr.registry.client import USER_AGENT
from hubmgr.registry.manifests import INDEX_TYPES, IMAGE_TYPES, parse_time, plausible

from .models import Kind, Manifest, ProcessedEvent, PushSource, Repository
from .store import note_activity, writing

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

    def as_json(self):
        return {"accepted": self.applied, "duplicates": self.duplicates,
                "rejected": self.rejected}


def parse_envelope(body: bytes) -> list[Event]:
    """The envelope's events, each checked and bounded; BadEnvelope when the body is not an
    object with an "events" list."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadEnvelope(f"body is not JSON: {names.clean(exc, 200)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise BadEnvelope('body must be an object with an "events" list')
    if len(data["events"]) > MAX_EVENTS:
        raise BadEnvelope(f"at most {MAX_EVENTS} events per delivery")
    return [parse_event(n, raw) for n, raw in enumerate(data["events"])]


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
    return media_type in INDEX_TYPES + IMAGE_TYPES


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
        return _apply(registry, events)
    except Exception:  # noqa: BLE001 - isolate the poison event below
        log.exception("notification batch failed events=%d; applying them one by one",
                      len(events))
    outcome = Outcome()
    for event in events:
        try:
            one = _apply(registry, [event])
        except Exception as exc:  # noqa: BLE001
            _reject(event, f"could not be applied: {type(exc).__name__}: {exc}", outcome)
            continue
        outcome.applied += one.applied
        outcome.duplicates += one.duplicates
        outcome.rejected += one.rejected
        for repo_id, digests in one.to_fetch.items():
            outcome.to_fetch[repo_id] |= digests
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
    outcome.rejected += 1
    log.warning("notification rejected event=%s action=%s repository=%s error=%s",
                event.id or "-", event.action or "-", event.repository or "-", error)


def _apply(registry, events) -> Outcome:
    outcome = Outcome()
    repos = {}  # name -> (Repository, Batch)
    with transaction.atomic(), ExitStack() as stack:
        for event in events:
            if event.error:
                _reject(event, event.error, outcome)
                continue
            try:
                with transaction.atomic():
                    ProcessedEvent.objects.create(event_id=event.id, action=event.action,
                                                  repository=event.repository)
            except IntegrityError:
                outcome.duplicates += 1
                continue  # delivered before
            outcome.applied += 1
            if event.action == "mount" or (event.action == "push"
                                            and not _is_manifest(event.media_type)):
                continue  # blob traffic
            if event.action == "pull" and not counts_as_pull(event):
                continue
            if event.repository not in repos:
                repo = _repository(registry, event)
                if repo is None:
                    continue
                repos[event.repository] = (repo, stack.enter_context(writing(repo)))
            repo, batch = repos[event.repository]
            handler = {"push": _push, "pull": _pull, "delete": _delete}[event.action]
            handler(repo, event, batch, outcome.to_fetch[repo.pk])
    outcome.to_fetch = {k: v for k, v in outcome.to_fetch.items() if v}
    return outcome


def _repository(registry, event):
    if event.action == "delete":
        return Repository.objects.filter(registry=registry, name=event.repository).first()
    return Repository.objects.get_or_create(registry=registry, name=event.repository)[0]


def _manifest(repo, event):
    manifest, created = Manifest.objects.get_or_create(
        repository=repo, digest=event.digest,
        defaults={"media_type": event.media_type,
                  "kind": Kind.INDEX if event.media_type in INDEX_TYPES else Kind.IMAGE})
    return manifest


def _push(repo, event, batch, to_fetch):
    manifest = _manifest(repo, event)
    if manifest.last_pushed is None or manifest.last_pushed_source != PushSource.PUSH_EVENT \
            or event.timestamp > manifest.last_pushed:
        manifest.last_pushed, manifest.last_pushed_source = event.timestamp, PushSource.PUSH_EVENT
        manifest.save(update_fields=["last_pushed", "last_pushed_source"])
    note_activity(repo, pushed=event.timestamp)
    batch.touch([manifest.pk])
    if event.tag:
        batch.set_tags({event.tag: manifest.pk})
    if not manifest.fetched:
        to_fetch.add(manifest.digest)


def _pull(repo, event, batch, to_fetch):
    manifest = _manifest(repo, event)
    Manifest.objects.filter(pk=manifest.pk).filter(
        Q(last_pulled__isnull=True) | Q(last_pulled__lt=event.timestamp)
    ).update(last_pulled=event.timestamp)
    note_activity(repo, pulled=event.timestamp)
    if not manifest.fetched:
        to_fetch.add(manifest.digest)
        batch.touch([manifest.pk])


def _delete(repo, event, batch, to_fetch):
    if event.digest:
        batch.forget(Manifest.objects.filter(repository=repo, digest=event.digest)
                     .values_list("id", flat=True))
        to_fetch.discard(event.digest)
    else:
        batch.drop_tags([event.tag])
