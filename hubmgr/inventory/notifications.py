"""Registry notifications: validate an envelope whole, then apply its events in one transaction.

Push events give "last pushed", pull events "last pulled", delete events remove what is gone.
Events are deduplicated by id: the registry retries deliveries and may send one twice.
"""

import json
import logging
from collections import defaultdict
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from hubmgr.registry.client import USER_AGENT
from hubmgr.registry.manifests import INDEX_TYPES, IMAGE_TYPES, parse_time

from .models import Manifest, ProcessedEvent, Repository, Tag
from .store import refresh, remove_manifests

log = logging.getLogger("hubmgr.notifications")
MEDIA_TYPES = ("application/vnd.docker.distribution.events.v1+json",
               "application/vnd.docker.distribution.events.v2+json", "application/json")
ACTIONS = ("push", "pull", "mount", "delete")
OUR_AGENT = USER_AGENT.split(" ", 1)[0].split("/", 1)[0] + "/"


class BadEnvelope(ValueError):
    """The body is not a notification envelope we can apply; nothing was written."""


@dataclass
class Event:
    id: str
    action: str
    timestamp: object
    repository: str
    digest: str
    tag: str
    media_type: str
    method: str
    useragent: str


def parse_envelope(body: bytes) -> list[Event]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadEnvelope(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise BadEnvelope('body must be an object with an "events" list')
    events = []
    for n, raw in enumerate(data["events"]):
        where = f"event {n}"
        if not isinstance(raw, dict):
            raise BadEnvelope(f"{where} is not an object")
        event_id, action = raw.get("id"), raw.get("action")
        if not isinstance(event_id, str) or not event_id:
            raise BadEnvelope(f"{where} has no id")
        if action not in ACTIONS:
            raise BadEnvelope(f"{where} ({event_id}) has unknown action {action!r}")
        timestamp = parse_time(raw["timestamp"]) if isinstance(raw.get("timestamp"), str) else None
        if timestamp is None:
            raise BadEnvelope(f"{where} ({event_id}) has no valid timestamp")
        target = raw.get("target")
        if not isinstance(target, dict) or not isinstance(target.get("repository"), str) \
                or not target["repository"]:
            raise BadEnvelope(f"{where} ({event_id}) has no target repository")
        digest, tag = target.get("digest") or "", target.get("tag") or ""
        if not isinstance(digest, str) or not isinstance(tag, str):
            raise BadEnvelope(f"{where} ({event_id}) has a malformed digest or tag")
        if digest and not digest.startswith("sha256:"):
            raise BadEnvelope(f"{where} ({event_id}) has an unsupported digest {digest[:80]!r}")
        if action in ("push", "pull") and not digest:
            raise BadEnvelope(f"{where} ({event_id}) is a {action} without a digest")
        if action == "delete" and not (digest or tag):
            raise BadEnvelope(f"{where} ({event_id}) deletes neither a digest nor a tag")
        request = raw.get("request") if isinstance(raw.get("request"), dict) else {}
        events.append(Event(event_id, action, timestamp, target["repository"], digest, tag,
                            str(target.get("mediaType") or ""), str(request.get("method") or ""),
                            str(request.get("useragent") or "")))
    return events


def _is_manifest(media_type):
    return media_type in INDEX_TYPES + IMAGE_TYPES


def counts_as_pull(event: Event) -> bool:
    if event.useragent.startswith(OUR_AGENT):
        return False  # our own crawler must never reset "last pulled"
    if event.method.upper() == "HEAD":
        return settings.COUNT_HEAD_PULLS
    return True


def apply_events(registry, events) -> dict:
    """Apply events once each. Returns {repository id: {digests to fetch}}."""
    to_fetch = defaultdict(set)
    touched = defaultdict(set)
    dirty = set()  # repositories whose rows changed
    repos = {}
    with transaction.atomic():
        for event in events:
            try:
                with transaction.atomic():
                    ProcessedEvent.objects.create(event_id=event.id)
            except IntegrityError:
                continue  # delivered before
            if event.action == "mount" or (event.action == "push"
                                            and not _is_manifest(event.media_type)):
                continue  # blob traffic
            if event.action == "pull" and not counts_as_pull(event):
                continue
            repo = repos.get(event.repository)
            if repo is None:
                if event.action == "delete":
                    repo = Repository.objects.filter(registry=registry,
                                                     name=event.repository).first()
                    if repo is None:
                        continue
                else:
                    repo, _ = Repository.objects.get_or_create(registry=registry,
                                                               name=event.repository)
                repos[event.repository] = repo
            handler = {"push": _push, "pull": _pull, "delete": _delete}[event.action]
            if handler(repo, event, touched[repo.pk], to_fetch[repo.pk]):
                dirty.add(repo.pk)
        for repo in repos.values():
            if repo.pk in dirty:
                refresh(repo, touched[repo.pk])
    return {k: v for k, v in to_fetch.items() if v}


def _manifest(repo, event):
    manifest, created = Manifest.objects.get_or_create(
        repository=repo, digest=event.digest,
        defaults={"media_type": event.media_type,
                  "kind": Manifest.INDEX if event.media_type in INDEX_TYPES else Manifest.IMAGE})
    return manifest


def _push(repo, event, touched, to_fetch):
    manifest = _manifest(repo, event)
    if manifest.last_pushed is None or manifest.last_pushed_source != Manifest.PUSH_EVENT \
            or event.timestamp > manifest.last_pushed:
        manifest.last_pushed, manifest.last_pushed_source = event.timestamp, Manifest.PUSH_EVENT
        manifest.save(update_fields=["last_pushed", "last_pushed_source"])
    touched.add(manifest.pk)
    if event.tag:
        old = Tag.objects.filter(repository=repo, name=event.tag).values_list("manifest_id",
                                                                             flat=True).first()
        if old:
            touched.add(old)
        Tag.objects.update_or_create(repository=repo, name=event.tag,
                                     defaults={"manifest": manifest})
    if not manifest.fetched:
        to_fetch.add(manifest.digest)
    return True


def _pull(repo, event, touched, to_fetch):
    manifest = _manifest(repo, event)
    Manifest.objects.filter(pk=manifest.pk).filter(
        Q(last_pulled__isnull=True) | Q(last_pulled__lt=event.timestamp)
    ).update(last_pulled=event.timestamp)
    if not manifest.fetched:
        to_fetch.add(manifest.digest)
        touched.add(manifest.pk)
        return True
    return False


def _delete(repo, event, touched, to_fetch):
    if event.digest:
        ids = list(Manifest.objects.filter(repository=repo, digest=event.digest)
                   .values_list("id", flat=True))
        touched |= remove_manifests(repo, ids)
        touched -= set(ids)
        to_fetch.discard(event.digest)
        return bool(ids)
    else:
        old = Tag.objects.filter(repository=repo, name=event.tag).values_list("manifest_id",
                                                                             flat=True).first()
        if old:
            Tag.objects.filter(repository=repo, name=event.tag).delete()
            touched.add(old)
        return bool(old)
