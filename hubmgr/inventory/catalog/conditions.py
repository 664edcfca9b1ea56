"""Conditions on manifests that several readers test, each written once with its forms side by
side: on a loaded row (Python), as a filter or expression for the ORM, and as SQL over a
manifest table's alias (the set-wise policy engine writes its statements by hand). A test holds
the forms equal on the same rows.

- **Seen push**: a push hubmgr saw, by a push event or in an access log. An image's build time
  (its config's ``created``) is never taken for a push: an image built a year ago may have
  been pushed yesterday.
- **Age from**: when an item is known to have been there: its seen push, else when hubmgr
  first saw it.
"""

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
