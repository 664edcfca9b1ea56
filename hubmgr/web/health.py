"""GET /healthz: 200 only when the database, the broker and the registry all answer. It also
reports the notification queue (envelopes waiting, the oldest one's age, envelopes kept as
failed) and whether the registry has sent any notification, neither of which changes the
status: a backlog is a worker to look at, not a web server to restart."""

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from hubmgr import celery_app
from hubmgr.inventory.pulls import envelopes
from hubmgr.inventory.registries import client_for, default_registry
from hubmgr.registry.errors import RegistryError


def _database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker():
    # One attempt: a hung Redis costs a connect and a PING, HUBMGR_REDIS_TIMEOUT each at most.
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=0, timeout=settings.REDIS_TIMEOUT)


def _registry():
    client = client_for(default_registry(), pool_size=1)
    client.timeout = (2, 3)
    try:
        client.ping()
    finally:
        client.close()


@require_GET
def healthz(request):
    checks = {}
    for name, check in (("database", _database), ("broker", _broker), ("registry", _registry)):
        try:
            check()
            checks[name] = "ok"
        except RegistryError as exc:
            checks[name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - a health check reports any failure
            checks[name] = f"{type(exc).__name__}: {exc}"
    healthy = all(v == "ok" for v in checks.values())
    extra = {}
    if checks["database"] == "ok":
        extra["notification_queue"] = envelopes.backlog()
        # A warning, not a failure: without notifications hubmgr knows no pull or push times.
        since = default_registry().notified_since
        extra["notifications"] = f"received since {since.isoformat()}" if since else \
            "none received"
    return JsonResponse({"status": "ok" if healthy else "failing", **checks, **extra},
                        status=200 if healthy else 503)
