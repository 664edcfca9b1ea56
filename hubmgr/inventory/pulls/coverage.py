"""Pull coverage: what hubmgr has seen of a registry's pulls, and so what it may say about them.

A registry keeps no pull or push times; hubmgr learns them from notifications (and from access
logs imported with ``import_pulls``). ``Registry.pulls_observed_since`` is where that
observation window begins: every pull and push since then has been seen. Before it, hubmgr
knows nothing, and says so rather than guess:

- **Stale** (``True``): no pull and no seen push within the last ``HUBMGR_STALE_DAYS``, and the
  window reaches back past that whole period, so a pull in it would have been seen.
- **Active** (``False``): pulled, or seen pushed, within the period.
- **Unknown** (``None``): neither; the window is too short (or there is none) to tell.

A build time (an image config's ``created``) is never taken for a push: an image built a year
ago may have been pushed yesterday.

"Never pulled" is said only where the window covers the item's whole life: it was seen pushed
inside the window and first appeared to hubmgr inside it. Elsewhere the page says "Not since
<window start>".

The window moves back only as far as the evidence goes (``first_known``); an operator may set
it outright (``set_window``), which is logged as an audit line.
"""

import getpass
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Min, Q
from django.utils import timezone

from ..catalog.conditions import quiet_since, quiet_since_q, seen_push
from ..models import Manifest, PushSource, Registry

log = logging.getLogger("hubmgr.inventory")


@dataclass(frozen=True)
class Coverage:
    since: datetime | None  # start of the observation window; None: nothing observed yet
    cutoff: datetime  # activity before this is older than HUBMGR_STALE_DAYS

    @classmethod
    def of(cls, registry, now=None):
        now = now or timezone.now()
        return cls(registry.pulls_observed_since, now - timedelta(days=settings.STALE_DAYS))

    @property
    def decides_stale(self) -> bool:
        """The window reaches back past the whole stale period."""
        return self.since is not None and self.since <= self.cutoff

    def stale(self, row) -> bool | None:
        if not quiet_since(row, self.cutoff):
            return False
        return True if self.decides_stale else None

    def never_pulled(self, row) -> bool:
        """No pull of this row can have been missed: it was pushed inside the window and
        appeared to hubmgr inside it. (Only meaningful when ``row.last_pulled`` is None.)"""
        pushed = seen_push(row)
        return (self.since is not None and pushed is not None and pushed >= self.since
                and row.first_seen is not None and row.first_seen >= self.since)

    def stale_q(self, prefix="") -> Q:
        """The rows ``stale`` calls True, as a filter; ``prefix`` (e.g. "manifest__") applies
        it to a related manifest."""
        if not self.decides_stale:
            return Q(**{f"{prefix}pk__in": []})
        return quiet_since_q(self.cutoff, prefix)


def mark(rows, coverage: Coverage):
    """Set ``stale`` (True, False or None) and ``never_pulled`` on each row."""
    for row in rows:
        row.stale = coverage.stale(row)
        row.never_pulled = row.last_pulled is None and coverage.never_pulled(row)
    return rows


def first_known(registry) -> datetime | None:
    """The earliest time hubmgr itself knows this registry existed, or None (it knows no
    manifest of it): the earlier of the first ``Manifest.first_seen`` (hubmgr's own clock,
    when a sync or a notification first showed it the manifest) and the first ``last_pushed``
    that came from a push event (the registry's notification, sent as the push happened).

    The observation window never moves back past this by inference (``import_pulls
    --complete``): before it, nothing shows the registry was even there, so a log claiming to
    cover that time is no evidence about the items hubmgr knows. Pushes read from access logs
    (source ``access_log``) are not counted: the logs are what is being judged, and an earlier
    import of a log with a wrong clock would otherwise vouch for the next one. A build time
    (``created``) is not a push either."""
    found = Manifest.objects.filter(repository__registry=registry).aggregate(
        seen=Min("first_seen"),
        pushed=Min("last_pushed", filter=Q(last_pushed_source=PushSource.PUSH_EVENT)))
    times = [t for t in found.values() if t is not None]
    return min(times) if times else None


def move_back(registry, when) -> bool:
    """The window starts at ``when`` if that is earlier than its start (or it has none).
    A conditional update, so a notification that opens the window meanwhile is not undone."""
    moved = Registry.objects.filter(pk=registry.pk).filter(
        Q(pulls_observed_since__isnull=True) | Q(pulls_observed_since__gt=when)
    ).update(pulls_observed_since=when) == 1
    if moved:
        log.info("pull window moved back registry=%s to=%s", registry.name, when.isoformat())
    return moved


def operator() -> str:
    """Who runs this process, for the audit line (the sudo caller where there is one)."""
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def set_window(registry, when, how) -> datetime | None:
    """Set the window's start to ``when`` outright, back or forward (an operator's decision:
    ``import_pulls --since`` or ``--reset-window``), and record it: a warning line on the
    "hubmgr.inventory" logger names the registry, both times, the operator and ``how``. Answers
    the start it replaced. Refuses a time in the future (ValueError)."""
    if when > timezone.now():
        raise ValueError(f"{when.isoformat()} is in the future")
    before = Registry.objects.filter(pk=registry.pk).values_list(
        "pulls_observed_since", flat=True).first()
    Registry.objects.filter(pk=registry.pk).update(pulls_observed_since=when)
    registry.pulls_observed_since = when
    log.warning("pull window reset registry=%s from=%s to=%s by=%s via=%s", registry.name,
                before.isoformat() if before else None, when.isoformat(), operator(), how)
    return before
