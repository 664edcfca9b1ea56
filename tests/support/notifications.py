"""The registry's webhook as the tests drive it: events, envelopes posted to /hooks/registry,
and the queue applied as the worker would."""

import json

from hubmgr.inventory.pulls import envelopes
from hubmgr.inventory.registries import default_registry
from hubmgr.registry.manifests import OCI_MANIFEST

WEBHOOK_TOKEN = "test-webhook-token"
V1 = "application/vnd.docker.distribution.events.v1+json"
V2 = "application/vnd.docker.distribution.events.v2+json"
DIGEST = "sha256:" + "a" * 64


def event(action="push", id="e1", digest=DIGEST, tag="v1", repository="hook/app",
          media_type=OCI_MANIFEST, ts="2026-11-01T10:00:00.123456789Z", method="PUT",
          useragent="docker/27.0"):
    target = {"mediaType": media_type, "repository": repository}
    if digest:
        target["digest"] = digest
    if tag:
        target["tag"] = tag
    return {"id": id, "timestamp": ts, "action": action, "target": target,
            "request": {"id": "r1", "method": method, "useragent": useragent}}


def post(client, events, token=WEBHOOK_TOKEN, content_type=V1, raw=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    body = raw if raw is not None else json.dumps({"events": events})
    return client.post("/hooks/registry", body, content_type=content_type, **headers)


def drain(limit=None):
    """What the worker does: apply every queued envelope (in batches of ``limit``)."""
    return envelopes.drain(default_registry(), limit=limit)[1].as_json()


def deliver(client, events, content_type=V1, raw=None):
    """Post one envelope, as the registry does, and apply the queue: what became of it."""
    resp = post(client, events, content_type=content_type, raw=raw)
    assert resp.status_code == 200, resp.content
    assert resp.json() == {"queued": len(events if raw is None else json.loads(raw)["events"])}
    return drain()


def pull(id, ts, digest=DIGEST):
    return event(action="pull", id=id, ts=ts, digest=digest, tag="", method="GET")
