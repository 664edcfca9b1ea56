"""Which registry hubmgr manages, and a client for it."""

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from hubmgr.registry.client import RegistryClient
from hubmgr.registry.errors import RegistryError

from .models import Registry

DEFAULT_NAME = "default"


def default_registry() -> Registry:
    """The registry from HUBMGR_REGISTRY_URL, created on first use and kept in step with it."""
    url = settings.REGISTRY_URL
    registry, created = Registry.objects.get_or_create(name=DEFAULT_NAME, defaults={"url": url})
    if not created and url and registry.url != url:
        registry.url = url
        registry.save(update_fields=["url"])
    return registry


def client_for(registry: Registry, pool_size=None) -> RegistryClient:
    if not registry.url:
        raise RegistryError("No registry is configured. Set HUBMGR_REGISTRY_URL to its address, "
                            "for example http://127.0.0.1:5000.")
    pool = pool_size or max(settings.SYNC_CONCURRENCY, 4)
    return RegistryClient(registry.url, settings.REGISTRY_USERNAME, settings.REGISTRY_PASSWORD,
                          timeout=(3.05, settings.REGISTRY_TIMEOUT), pool_size=pool)


def record_health(registry: Registry, error: str = ""):
    Registry.objects.filter(pk=registry.pk).update(last_error=error,
                                                   last_checked_at=timezone.now())
    registry.last_error = error


def check_health(registry: Registry, max_age_seconds=30) -> str:
    """The registry's last known error ('' when healthy), pinging it when none is cached.
    Pages call this, so the ping has a short timeout and its answer is shared for a while, in
    the cache rather than the database: a page never writes, so a busy SQLite writer cannot
    fail it. With no registry configured there is nothing to ping (pages say so on their own)."""
    if not registry.url:
        return ""
    key = f"hubmgr:registry-health:{registry.pk}:{registry.url}"
    try:
        error = cache.get(key)
    except Exception:  # noqa: BLE001 - a shared cache (Redis) that is down or hung: ping,
        return _ping(registry)  # and do not wait for it a second time to store the answer
    if error is None:
        error = _ping(registry)
        try:
            cache.set(key, error, max_age_seconds)
        except Exception:  # noqa: BLE001
            pass
    return error


def _ping(registry: Registry) -> str:
    client = client_for(registry, pool_size=1)
    client.timeout = (1.5, 3)
    try:
        client.ping()
        return ""
    except RegistryError as exc:
        return str(exc)
    finally:
        client.close()
