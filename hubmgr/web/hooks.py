"""POST /hooks/registry: the registry's notifications."""

import hmac
import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from hubmgr.inventory import tasks
from hubmgr.inventory.notifications import BadEnvelope, apply_events, parse_envelope
from hubmgr.inventory.registries import default_registry

log = logging.getLogger("hubmgr.hooks")


def _authorized(request) -> bool:
    expected = settings.WEBHOOK_TOKEN
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and \
        hmac.compare_digest(token.strip().encode(), expected.encode())


def _queue_fetch(repo_id, digests):
    try:
        tasks.fetch.delay(repo_id, digests)
    except Exception as exc:  # noqa: BLE001 - any broker failure
        # The events are applied; the manifests stay marked unread and the next sync reads them.
        log.warning("fetch not queued repository_id=%s digests=%d error=%s", repo_id,
                    len(digests), exc)


@csrf_exempt
@require_POST
def registry_hook(request):
    if not _authorized(request):
        log.warning("webhook refused addr=%s reason=token", request.META.get("REMOTE_ADDR"))
        message = ("missing or wrong bearer token" if settings.WEBHOOK_TOKEN else
                   "HUBMGR_WEBHOOK_TOKEN is not set on the hubmgr server")
        return JsonResponse({"error": message}, status=401)
    try:
        events = parse_envelope(request.body)
    except RequestDataTooBig:
        log.warning("webhook rejected reason=body too large")
        return JsonResponse({"error": "the notification body is larger than hubmgr accepts "
                                      "(lower the endpoint's threshold)"}, status=413)
    except BadEnvelope as exc:
        log.warning("webhook rejected reason=%s", exc)
        return JsonResponse({"error": f"malformed notification: {exc}"}, status=400)
    outcome = apply_events(default_registry(), events)
    for repo_id, digests in outcome.to_fetch.items():
        transaction.on_commit(lambda r=repo_id, d=sorted(digests): _queue_fetch(r, d))
    log.info("webhook events=%d applied=%d duplicates=%d rejected=%d fetch=%d", len(events),
             outcome.applied, outcome.duplicates, outcome.rejected,
             sum(len(d) for d in outcome.to_fetch.values()))
    # 2xx even when events were rejected: they are recorded, and a retry would not fix them.
    return JsonResponse(outcome.as_json())
