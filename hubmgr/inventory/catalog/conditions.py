"""Conditions on manifests that several readers test, each written once with its forms side by
side: on a loaded row (Python), as a filter or expression for the ORM, and as SQL over a
manifest table's alias (the set-wise policy engine writes its statements by hand). A test holds
the forms equal on the same rows.

- **Seen push**: a push hubmgr saw, by a push event or in an access log. An image's build time
  (its config's ``created``) is never taken for a push: an image built a year ago may have
  been pushed yesterday.
- **Age from**: when an item is known to have been there: its seen push, else when hubmgr
  first saw it.
- **Pushed before** a time: a seen push, before it (no seen push: no evidence of age).
- **Older than** a time: its age from is before it.
- **Pulled since** a time: a pull at or after it.
- **Quiet since** a time: neither pulled nor seen pushed at or after it. Stale is this since
  the stale period's cutoff, where the pull window covers that period
  (``pulls.coverage.Coverage`` decides the window).
- **Orphaned**: an artifact whose subject the repository does not hold (or whose chain of
  subjects loops): ``Manifest.is_orphan``, which ``catalog/store.py`` sets. An orphan is a
  top-level item; an artifact whose subject is there is attached (listed under it), never.

The SQL forms of the last four take the SQL expressions of the row's values, so that a
statement can give them computed ones (an index's last pull is the latest of its own and its
children's) or columns of a derived table; each answers its SQL and its parameters.
"""

from django.db import connection
from django.db.models import Case, DateTimeField, F, Q, When
from django.db.models.functions import Coalesce

from ..models import SEEN_PUSH


def seen_push(row):
    """The row's last push time when that push was seen, else None."""
    return row.last_pushed if row.last_pushed_source in SEEN_PUSH else None


def seen_push_q(prefix="") -> Q:
    """The rows whose last push was seen; ``prefix`` (e.g. "manifest__") for a related one."""
    return Q(**{f"{prefix}last_pushed_source__in": SEEN_PUSH,
                f"{prefix}last_pushed__isnull": False})


def seen_push_sql(m="m") -> tuple[str, list]:
    """``seen_push_q`` as SQL over the manifest alias ``m``, with its parameters."""
    marks = ", ".join(["%s"] * len(SEEN_PUSH))
    return (f"({m}.last_pushed_source IN ({marks}) AND {m}.last_pushed IS NOT NULL)",
            [str(source) for source in SEEN_PUSH])


def age_from(row):
    """The seen push, else first seen (None when neither is known)."""
    return seen_push(row) or row.first_seen


def age_from_expression():
    """``age_from`` as an ORM expression."""
    return Coalesce(Case(When(seen_push_q(), then=F("last_pushed")),
                         output_field=DateTimeField()), F("first_seen"))


def age_from_sql(m="m") -> tuple[str, list]:
    """``age_from`` as SQL over the manifest alias ``m``, with its parameters."""
    seen, params = seen_push_sql(m)
    return f"CASE WHEN {seen} THEN {m}.last_pushed ELSE {m}.first_seen END", params


def _time(value):
    return connection.ops.adapt_datetimefield_value(value)


def pushed_before(row, cutoff) -> bool:
    """A push was seen, before ``cutoff``."""
    pushed = seen_push(row)
    return pushed is not None and pushed < cutoff


def pushed_before_q(cutoff) -> Q:
    return seen_push_q() & Q(last_pushed__lt=cutoff)


def pushed_before_sql(cutoff, seen, pushed) -> tuple[str, list]:
    """Over ``seen`` (``seen_push_sql``'s value) and ``pushed`` (the last push)."""
    return f"({seen} AND {pushed} < %s)", [_time(cutoff)]


def older_than(row, cutoff) -> bool:
    """Its age from is before ``cutoff`` (unknown: not older)."""
    since = age_from(row)
    return since is not None and since < cutoff


def older_than_q(cutoff) -> Q:
    seen = seen_push_q()
    return (seen & Q(last_pushed__lt=cutoff)) | (~seen & Q(first_seen__lt=cutoff))


def older_than_sql(cutoff, seen, pushed, first_seen) -> tuple[str, list]:
    return (f"(({seen} AND {pushed} < %s) OR (NOT {seen} AND {first_seen} < %s))",
            [_time(cutoff)] * 2)


def pulled_since(row, since) -> bool:
    return row.last_pulled is not None and row.last_pulled >= since


def pulled_since_q(since, prefix="") -> Q:
    return Q(**{f"{prefix}last_pulled__gte": since})


def pulled_since_sql(since, pulled) -> tuple[str, list]:
    return f"({pulled} >= %s)", [_time(since)]


def quiet_since(row, cutoff) -> bool:
    """Neither pulled nor seen pushed at or after ``cutoff``."""
    pushed = seen_push(row)
    return not pulled_since(row, cutoff) and not (pushed is not None and pushed >= cutoff)


def quiet_since_q(cutoff, prefix="") -> Q:
    """``prefix`` (e.g. "manifest__") applies it to a related manifest."""
    pulled, pushed = f"{prefix}last_pulled", f"{prefix}last_pushed"
    not_pulled = Q(**{f"{pulled}__isnull": True}) | Q(**{f"{pulled}__lt": cutoff})
    not_pushed = (Q(**{f"{pushed}__isnull": True}) | Q(**{f"{pushed}__lt": cutoff})
                  | ~Q(**{f"{prefix}last_pushed_source__in": SEEN_PUSH}))
    return not_pulled & not_pushed


def quiet_since_sql(cutoff, seen, pushed, pulled) -> tuple[str, list]:
    return (f"(({pulled} IS NULL OR {pulled} < %s) AND NOT ({seen} AND {pushed} >= %s))",
            [_time(cutoff)] * 2)


def orphaned(row) -> bool:
    """An artifact whose subject is not in its repository."""
    return bool(row.is_orphan)


def orphaned_q(prefix="") -> Q:
    return Q(**{f"{prefix}is_orphan": True})


def orphaned_sql(m="m") -> tuple[str, list]:
    """``orphaned_q`` as SQL over the manifest alias ``m`` (a boolean on both databases)."""
    return f"({m}.is_orphan = %s)", [True]
