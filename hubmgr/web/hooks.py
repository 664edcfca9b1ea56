"""POST /hooks/registry: the registry's notifications.

The registry sends one event per request and waits for the answer before the next one, so
this view only authenticates, checks that the body is an envelope, stores it in one INSERT
and wakes the worker that applies it (hubmgr.inventory.pulls.envelopes). Its answer is
{"queued": <events>}; what became of each event is logged by the worker and kept in
ProcessedEvent.
"""

import hmac
import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from hubmgr.inventory import tasks
from hubmgr.inventory.pulls import envelopes
from hubmgr.inventory.pulls.notifications import BadEnvelope, load_envelope

log = logging.getLogger("hubmgr.hooks")
PATH = "/hooks/registry"


def _authorized(request) -> bool:
    expected = settings.WEBHOOK_TOKEN
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and \
        hmac.compare_digest(token.strip().encode(), expected.encode())


@csrf_exempt
@require_POST
def registry_hook(request):
    if not _authorized(request):
        log.warning("webhook refused addr=%s reason=token", request.META.get("REMOTE_ADDR"))
        message = ("missing or wrong bearer token" if settings.WEBHOOK_TOKEN else
                   "HUBMGR_WEBHOOK_TOKEN is not set on the hubmgr server")
        return JsonResponse({"error": message}, status=401)
    try:
        body = request.body
        events = load_envelope(body)
    except RequestDataTooBig:
        log.warning("webhook rejected reason=body too large")
        return JsonResponse({"error": "the notification body is larger than hubmgr accepts "
                                      "(lower the endpoint's threshold)"}, status=413)
    except BadEnvelope as exc:
        log.warning("webhook rejected reason=%s", exc)
        return JsonResponse({"error": f"malformed notification: {exc}"}, status=400)
    if events:
        envelopes.enqueue(body, len(events))
        tasks.wake()
    # 2xx for every envelope: events that cannot be applied are recorded by the worker, and a
    # retry would not fix them.
    return JsonResponse({"queued": len(events)})


class HookShortcut:
    """First in MIDDLEWARE: the webhook skips the rest of the stack (sessions, auth, CSRF,
    CSP, htmx, axes, static files). It is bearer-token authenticated, never uses a session
    or cookie and answers only JSON; the host is still checked against ALLOWED_HOSTS."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info != PATH:
            return self.get_response(request)
        request.get_host()  # DisallowedHost becomes a 400, as for any other path
        return registry_hook(request)
