"""Settings, all from HUBMGR_* environment variables with working laptop defaults."""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from hubmgr import datadir

BASE_DIR = datadir.BASE_DIR


def env_str(name, default=""):
    return os.environ.get(name, default)


def env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def env_int(name, default):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


def env_float(name, default):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None


def env_secret(name, default=""):
    """NAME, or the contents of the file named by NAME_FILE (for Docker secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


def env_list(name, default):
    value = os.environ.get(name)
    return [v.strip() for v in value.split(",") if v.strip()] if value else default


DATA_DIR = datadir.path()
DEBUG = env_bool("HUBMGR_DEBUG", False)
# A laptop default: a random key kept in the data folder (made by datadir.prepare, from the
# entry points), never in the repository.
SECRET_KEY = env_secret("HUBMGR_SECRET_KEY") or datadir.secret_key(DATA_DIR)
ALLOWED_HOSTS = env_list("HUBMGR_ALLOWED_HOSTS", ["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env_list("HUBMGR_CSRF_TRUSTED_ORIGINS", [])
# TLS, for a deployment behind a proxy that terminates it (.env.example sets all of these).
# The defaults suit `make run`: plain http on 127.0.0.1.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("HUBMGR_SECURE_COOKIES", False)
SECURE_SSL_REDIRECT = env_bool("HUBMGR_SSL_REDIRECT", False)
# Inside the compose stack the healthcheck and the registry's notifications use plain http.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^hooks/registry$"]
SECURE_HSTS_SECONDS = env_int("HUBMGR_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HUBMGR_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("HUBMGR_HSTS_PRELOAD", False)
if env_bool("HUBMGR_SECURE_PROXY_SSL_HEADER", False):
    # Only behind a proxy that sets X-Forwarded-Proto itself, dropping the client's.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# A deletion of 50,000 digests (the most one request may name) is about 4 MB, as the API's
# JSON or as the web form's fields; bodies beyond twice that are refused.
DATA_UPLOAD_MAX_MEMORY_SIZE = 8 * 2**20
DATA_UPLOAD_MAX_NUMBER_FIELDS = 51_000
# ... and refused unread (hubmgr.web.limits.BodyLimit, first in MIDDLEWARE) when the
# Content-Length says so, or when there is none (chunked bodies: 411). The registry's
# notifications are bounded by the same limit.
REQUEST_BODY_LIMIT = DATA_UPLOAD_MAX_MEMORY_SIZE
# No page or API takes a file: a multipart body's file parts are refused (400) rather than
# spooled to a temporary file, so FILE_UPLOAD_MAX_MEMORY_SIZE and FILE_UPLOAD_TEMP_DIR never
# come into play.
FILE_UPLOAD_HANDLERS = ["hubmgr.web.limits.RefuseFiles"]

# The registry hubmgr manages (the data model allows several; the environment configures one).
REGISTRY_URL = env_str("HUBMGR_REGISTRY_URL")
REGISTRY_USERNAME = env_str("HUBMGR_REGISTRY_USERNAME")
REGISTRY_PASSWORD = env_secret("HUBMGR_REGISTRY_PASSWORD")
# The registry's name as `docker pull` spells it (host or host:port), for the copied pull
# commands, when people reach it by another name than hubmgr does (e.g. registry:5000 inside
# a compose network). Empty: the host and port of HUBMGR_REGISTRY_URL.
REGISTRY_PUBLIC_HOST = env_str("HUBMGR_REGISTRY_PUBLIC_HOST").strip().strip("/")
WEBHOOK_TOKEN = env_secret("HUBMGR_WEBHOOK_TOKEN")
STALE_DAYS = env_int("HUBMGR_STALE_DAYS", 183)
COUNT_HEAD_PULLS = env_bool("HUBMGR_COUNT_HEAD_PULLS", False)
SYNC_CONCURRENCY = env_int("HUBMGR_SYNC_CONCURRENCY", 8)
SYNC_INTERVAL_MINUTES = env_int("HUBMGR_SYNC_INTERVAL_MINUTES", 60)
REGISTRY_TIMEOUT = env_int("HUBMGR_REGISTRY_TIMEOUT", 30)
DELETE_CONCURRENCY = env_int("HUBMGR_DELETE_CONCURRENCY", 8)
DELETE_DEADLINE_HOURS = env_int("HUBMGR_DELETE_DEADLINE_HOURS", 24)
DELETE_RETRY_BASE_SECONDS = env_float("HUBMGR_DELETE_RETRY_BASE_SECONDS", 2.0)
DELETE_RETRY_MAX_SECONDS = env_float("HUBMGR_DELETE_RETRY_MAX_SECONDS", 600.0)
# How long a preview can be confirmed ("Delete forever") after it was shown.
DELETE_PREVIEW_MINUTES = env_int("HUBMGR_DELETE_PREVIEW_MINUTES", 60)
# Right before DELETEs, a tag resolved by the registry longer ago than this is resolved again.
DELETE_RECHECK_SECONDS = env_float("HUBMGR_DELETE_RECHECK_SECONDS", 10.0)
# An item a worker claims is leased for this long; a live worker renews the lease every
# quarter of it, so only a dead (or stalled) worker's items expire and are retried.
DELETE_CLAIM_SECONDS = env_float("HUBMGR_DELETE_CLAIM_SECONDS", 20.0)
# How often Celery beat runs the deletion sweep (releases expired claims, wakes lost jobs).
# A killed worker's job resumes within CLAIM + CLAIM / 4 + SWEEP seconds (40 s by default).
DELETE_SWEEP_SECONDS = env_float("HUBMGR_DELETE_SWEEP_SECONDS", 15.0)
# Notifications are queued by the webhook and applied by a worker, up to this many envelopes
# (a registry sends one event per envelope) per transaction; beat's sweep applies what a lost
# wake-up left queued, and logs the queue's depth, this often.
NOTIFY_BATCH = env_int("HUBMGR_NOTIFY_BATCH", 500)
NOTIFY_SWEEP_SECONDS = env_float("HUBMGR_NOTIFY_SWEEP_SECONDS", 5.0)
# Retention, pruned hourly: notification event ids (kept only to drop redeliveries), sync runs
# (the newest per registry always stays), finished deletion jobs (the audit record; 0 = keep).
EVENT_RETENTION_DAYS = env_int("HUBMGR_EVENT_RETENTION_DAYS", 7)
SYNC_RUN_RETENTION_DAYS = env_int("HUBMGR_SYNC_RUN_RETENTION_DAYS", 90)
DELETION_JOB_RETENTION_DAYS = env_int("HUBMGR_DELETION_JOB_RETENTION_DAYS", 365)
# Storage figures for the overview (hubmgr.inventory.storage.snapshots): computed at most this
# often, when the inventory changed (and at least daily), the day's last computation kept as
# its row; beat asks whether they are due every SNAPSHOT_CHECK_SECONDS. Repositories' daily rows
# kept this long (0 = keep), the registry's for ever.
SNAPSHOT_INTERVAL_MINUTES = env_int("HUBMGR_SNAPSHOT_INTERVAL_MINUTES", 60)
SNAPSHOT_CHECK_SECONDS = min(60.0, max(SNAPSHOT_INTERVAL_MINUTES, 1) * 60.0)
SNAPSHOT_RETENTION_DAYS = env_int("HUBMGR_SNAPSHOT_RETENTION_DAYS", 365)
# How often Celery beat asks the registry whether its garbage collector has run since
# deletions finished (a few blob HEADs), to move their bytes from pending to reclaimed.
RECLAIM_CHECK_MINUTES = max(env_int("HUBMGR_RECLAIM_CHECK_MINUTES", 10), 1)
# Time limits of background work, in seconds. A policy run past its limit stops between
# repositories and is marked failed; a deletion task stops taking items after its batch time
# and queues its next wake-up; a repository's sync and every other task get Celery's soft
# limit (an exception in the task) and, TASK_GRACE_SECONDS later, its hard one (the worker's
# process is killed; what it held is released by the sweeps).
POLICY_RUN_SECONDS = env_int("HUBMGR_POLICY_RUN_SECONDS", 3600)
SYNC_REPOSITORY_SECONDS = env_int("HUBMGR_SYNC_REPOSITORY_SECONDS", 1800)
DELETE_BATCH_SECONDS = env_int("HUBMGR_DELETE_BATCH_SECONDS", 300)
TASK_SECONDS = env_int("HUBMGR_TASK_SECONDS", 600)
TASK_GRACE_SECONDS = 60

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "axes",
    "csp",
    "hubmgr.inventory",
    "hubmgr.deletion",
    "hubmgr.policies",
    "hubmgr.web",
]

MIDDLEWARE = [
    "hubmgr.web.limits.BodyLimit",  # before anything reads a body
    "hubmgr.web.hooks.HookShortcut",  # the registry's webhook skips the rest
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
]

# Content-Security-Policy: scripts and styles only from our own files, never inline (base.html
# turns off htmx's indicator style and its copying of style attributes for that).
CONTENT_SECURITY_POLICY = {"DIRECTIVES": {
    "default-src": [SELF],
    "script-src": [SELF],
    "style-src": [SELF],
    "object-src": [NONE],
    "base-uri": [SELF],
    "form-action": [SELF],
    "frame-ancestors": [NONE],
}}

ROOT_URLCONF = "hubmgr.urls"
WSGI_APPLICATION = "hubmgr.wsgi.application"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [BASE_DIR / "templates"],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]

DATABASES = {"default": dj_database_url.parse(
    env_str("HUBMGR_DATABASE_URL") or f"sqlite:///{DATA_DIR / 'hubmgr.sqlite3'}",
    # A connection the server dropped (a restart, a failover, pg_terminate_backend) is found
    # by a check at the start of the next request that uses it, and replaced: no 500s.
    conn_max_age=60, conn_health_checks=True)}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # WAL lets the web server read while a sync or a worker writes.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file, not memory, so test threads (live server, Celery worker) share one database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
elif DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # No JIT: hubmgr's queries are short, and a plan that looks costly (a probe per row of a
    # 10,000-id list) spent 100 ms compiling to save nothing.
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["options"] = f"{_options.get('options', '')} -c jit=off".strip()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Login throttling: after HUBMGR_LOGIN_FAILURE_LIMIT failures for one username from one client
# address, that username is refused from that address for HUBMGR_LOGIN_COOLOFF_MINUTES (counted
# again from each refused attempt); other people behind the same address (an office's NAT, the
# proxy) and the same username from elsewhere still log in. Guessing many usernames from one
# address is not limited by this (django-axes keeps one limit); that is the proxy's job, and
# the passwords' (AUTH_PASSWORD_VALIDATORS). The address is REMOTE_ADDR unless
# HUBMGR_CLIENT_IP_HEADER names the header a proxy in front sets (e.g. X-Forwarded-For);
# never trusted by default.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("HUBMGR_LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("HUBMGR_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]  # the pair, not either alone
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # keep only the failures, which expire with the cool-off
CLIENT_IP_HEADER = env_str("HUBMGR_CLIENT_IP_HEADER")
AXES_CLIENT_IP_CALLABLE = "hubmgr.web.logins.client_address"
AXES_LOCKOUT_CALLABLE = "hubmgr.web.logins.locked_out"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Only a deployment that runs collectstatic sets this; a laptop serves straight from static/.
STATIC_ROOT = env_str("HUBMGR_STATIC_ROOT") or None
WHITENOISE_USE_FINDERS = True

REDIS_URL = env_str("HUBMGR_REDIS_URL", "redis://127.0.0.1:6379/0")
# Every Redis client (the cache, Celery's broker connections, the notifications' wake-up flag)
# gives up after HUBMGR_REDIS_TIMEOUT seconds to connect or to answer, so a Redis that hangs
# (accepting connections, never answering) costs a page what a Redis that is down does.
REDIS_TIMEOUT = env_float("HUBMGR_REDIS_TIMEOUT", 2.0)
REDIS_CLIENT_OPTIONS = {"socket_connect_timeout": REDIS_TIMEOUT, "socket_timeout": REDIS_TIMEOUT}
# The cache holds what processes share for a while (the registry's health that pages show).
# With HUBMGR_REDIS_URL set (a team's stack), every web process and worker shares it in Redis;
# a laptop without it keeps it in each process's memory. Sessions and login throttling live in
# the database, so nothing a web process serves depends on its own disk.
if os.environ.get("HUBMGR_REDIS_URL"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": REDIS_URL, "KEY_PREFIX": "hubmgr-cache",
                          "OPTIONS": REDIS_CLIENT_OPTIONS}}
CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_TIMEOUT
CELERY_BROKER_TRANSPORT_OPTIONS = {**REDIS_CLIENT_OPTIONS, "retry_on_timeout": False}
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SOFT_TIME_LIMIT = TASK_SECONDS  # the default; the long tasks set their own
CELERY_TASK_TIME_LIMIT = TASK_SECONDS + TASK_GRACE_SECONDS
# Fail fast when the broker is down or hangs (one retry, on a fresh connection: a few
# REDIS_TIMEOUTs at most); the periodic reconcile picks up what was not queued.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5,
                                    "interval_max": 0.5}
CELERY_BEAT_SCHEDULE = {
    "reconcile": {
        "task": "hubmgr.inventory.tasks.reconcile",
        "schedule": SYNC_INTERVAL_MINUTES * 60.0,
    },
    "deletion-sweep": {
        "task": "hubmgr.deletion.tasks.sweep",
        "schedule": DELETE_SWEEP_SECONDS,
    },
    "notifications": {
        "task": "hubmgr.inventory.tasks.apply_notifications",
        "schedule": NOTIFY_SWEEP_SECONDS,
        "kwargs": {"sweep": True},
        "options": {"expires": NOTIFY_SWEEP_SECONDS},  # none pile up while workers are down
    },
    "storage-snapshot": {  # the overview's figures, when due (a day's last one is kept)
        "task": "hubmgr.inventory.tasks.snapshot",
        "schedule": SNAPSHOT_CHECK_SECONDS,
        "options": {"expires": SNAPSHOT_CHECK_SECONDS},
    },
    "prune-inventory": {
        "task": "hubmgr.inventory.tasks.prune",
        "schedule": 3600.0,
    },
    "prune-deletion-jobs": {
        "task": "hubmgr.deletion.tasks.prune",
        "schedule": 3600.0,
    },
    "reclaim-check": {
        "task": "hubmgr.deletion.tasks.check_reclaim",
        "schedule": RECLAIM_CHECK_MINUTES * 60.0,
        "options": {"expires": RECLAIM_CHECK_MINUTES * 60.0},
    },
    "cleanup-policies": {  # starts the policies that are due (their times are minutes)
        "task": "hubmgr.policies.tasks.run_due",
        "schedule": 60.0,
        "options": {"expires": 60},
    },
}

# HUBMGR_VERBOSE: the development server (`make run`) logs every request; without it, only
# its warnings and errors. hubmgr's own lines are printed once, by its own handler: they do
# not also reach a Celery worker's root handler.
VERBOSE = env_bool("HUBMGR_VERBOSE", False)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
                   "server": {"()": "django.utils.log.ServerFormatter",
                              "format": "[{server_time}] {message}", "style": "{"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "line"},
                 "server": {"class": "logging.StreamHandler", "formatter": "server"}},
    "loggers": {
        "hubmgr": {"handlers": ["console"], "level": env_str("HUBMGR_LOG_LEVEL", "INFO"),
                   "propagate": False},
        "django.server": {"handlers": ["server"], "level": "INFO" if VERBOSE else "WARNING",
                          "propagate": False},
    },
}
