"""Where each tag pointed, and when (TagHistory), so a pull by tag in an old access log line
can be resolved to the digest the tag named at that time.

Rows are points (tag, digest, since); ``until`` is the next point's ``since``, or the time a
tag delete event removed the tag. A late point (older than points already recorded) is
inserted at its own time: the interval it falls in is cut there, and its own interval ends at
the next recorded point. (A late push that falls before a recorded delete ends at the next
push, not at that delete: the delete closed the interval it was recorded against.)
"""

from bisect import bisect_right

from django.db import connection
from django.db.models import Q

from ..models import TagHistory

_TABLE = TagHistory._meta.db_table
# Cut every interval that a new point falls in (and give new points their end), for one tag:
# rows whose interval reaches past the earliest new point get the next point's time as
# their end, where that comes before the end they have.
_CUT_SQL = (
    "UPDATE {t} SET until = (SELECT MIN(h.since) FROM {t} h WHERE h.repository_id = "
    "{t}.repository_id AND h.tag = {t}.tag AND h.since > {t}.since) "
    "WHERE {t}.repository_id = %s AND {t}.tag = %s AND {t}.since <= %s "
    "AND ({t}.until IS NULL OR {t}.until > %s) AND EXISTS (SELECT 1 FROM {t} h WHERE "
    "h.repository_id = {t}.repository_id AND h.tag = {t}.tag AND h.since > {t}.since "
    "AND ({t}.until IS NULL OR h.since < {t}.until))")

_CUT_PG = (
    "UPDATE {t} SET until = (SELECT MIN(h.since) FROM {t} h WHERE h.repository_id = "
    "{t}.repository_id AND h.tag = {t}.tag AND h.since > {t}.since) "
    "FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) AS v(tag, high, low) "
    "WHERE {t}.repository_id = %s AND {t}.tag = v.tag AND {t}.since <= v.high "
    "AND ({t}.until IS NULL OR {t}.until > v.low) AND EXISTS (SELECT 1 FROM {t} h WHERE "
    "h.repository_id = {t}.repository_id AND h.tag = {t}.tag AND h.since > {t}.since "
    "AND ({t}.until IS NULL OR h.since < {t}.until))")


def record(repository_id, points, source):
    """Record pushes of tags: points [(tag, digest, time)]. Idempotent (a point already
    recorded at that time is kept): one insert and one update for the lot (on SQLite, one
    prepared update run per tag)."""
    if not points:
        return
    TagHistory.objects.bulk_create(
        [TagHistory(repository_id=repository_id, tag=tag, digest=digest, since=when,
                    source=source) for tag, digest, when in points],
        batch_size=500, ignore_conflicts=True)
    bounds = {}
    for tag, _, when in points:
        low, high = bounds.get(tag, (when, when))
        bounds[tag] = (min(low, when), max(high, when))
    table = connection.ops.quote_name(_TABLE)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # one statement: the tags as arrays
            tags = sorted(bounds)
            cursor.execute(_CUT_PG.format(t=table), [
                tags, [bounds[t][1] for t in tags], [bounds[t][0] for t in tags],
                repository_id])
            return
        field = TagHistory._meta.get_field("since")
        cursor.executemany(_CUT_SQL.format(t=table), [
            (repository_id, tag, field.get_db_prep_save(high, connection),
             field.get_db_prep_save(low, connection)) for tag, (low, high) in bounds.items()])


def close(repository_id, tag, when):
    """A tag delete at ``when``: the interval that covers that time ends there."""
    TagHistory.objects.filter(repository_id=repository_id, tag=tag, since__lt=when).filter(
        Q(until__isnull=True) | Q(until__gt=when)).update(until=when)


class Timeline:
    """The recorded history of some tags of one repository, to look times up in."""

    def __init__(self, repository_id, tags, between=None):
        """``between``: (first, last), to load only the intervals that reach into it."""
        self.points = {}
        tags = list(tags)
        rows = TagHistory.objects.filter(repository_id=repository_id)
        if between:
            rows = rows.filter(Q(until__isnull=True) | Q(until__gt=between[0]),
                               since__lte=between[1])
        for start in range(0, len(tags), 500):
            for tag, since, until, digest in rows.filter(tag__in=tags[start:start + 500]) \
                    .order_by("tag", "since").values_list("tag", "since", "until", "digest"):
                entry = self.points.setdefault(tag, ([], []))
                entry[0].append(since)
                entry[1].append((until, digest))

    def digest_at(self, tag, when):
        """The digest the tag named at ``when``, or None where the history does not say."""
        entry = self.points.get(tag)
        if entry is None:
            return None
        n = bisect_right(entry[0], when) - 1
        if n < 0:
            return None
        until, digest = entry[1][n]
        return digest if until is None or when < until else None

    def known_after(self, tag, when) -> bool:
        """Whether a push of the tag later than ``when`` is recorded."""
        entry = self.points.get(tag)
        return entry is not None and entry[0][-1] > when
