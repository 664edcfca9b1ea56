"""The Image Management table's queries: search, filter, sort and page, in a fixed number of
SQL statements whatever the page or the repository size.

Paging. "Next" and "Previous" carry a keyset cursor (``after=`` / ``before=``): the sort value
and id of the last (first) row shown, so any page reached by them costs what page 1 costs.
``page=N`` alone still jumps to page N with OFFSET; on PostgreSQL the skipped rows are read from
the sort index only (an index-only scan), not from the table. With a cursor, ``page`` only
labels the page ("Page N of M").

Counts. Without a search the counters kept on the repository are exact and free. A search
counts at most COUNT_CAP matches; above that the count is a lower bound (``count_exact`` is
False, and the pager says "more than 1,000 items").
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import DateTimeField, F, Lookup, Q
from django.db.models.expressions import RawSQL

from hubmgr.registry.artifacts import MAX_DEPTH
from hubmgr.registry.names import clean

from ..models import ORPHANED, IndexChild, Kind, Manifest, Tag
from ..pulls import coverage
from ..pulls.coverage import Coverage
from .store import chunks

FILTERS = {
    "tagged": Q(is_tagged=True),
    "untagged": Q(is_tagged=False),
    Kind.INDEX: Q(kind=Kind.INDEX),
    Kind.IMAGE: Q(kind=Kind.IMAGE),
    # Artifacts at the top level (charts, orphans, ...) and orphans: a few rows each, found
    # through their own partial indexes (m_top_artifact, m_orphan), then sorted.
    "artifact": ~Q(artifact=""),
    ORPHANED: Q(is_orphan=True),
    "stale": None,  # depends on the registry's observation window: coverage.Coverage.stale_q
}
SORTS = ("size", "-size", "last_pushed", "-last_pushed", "last_pulled", "-last_pulled")
DEFAULT_SORT = "-last_pushed"
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
MAX_SEARCH = 200
# Text that can be the start of a digest; anything else cannot match one.
DIGEST_PREFIX = re.compile(r"sha256:[0-9a-f]*")
# A search counts at most this many matches; past it the count says "more than". Counting a
# term too short for the trigram index (two characters) reads about COUNT_CAP / (share of
# items matching) rows, so the cap stays small.
COUNT_CAP = 1_000
# A cursor: the sort value (an integer: bytes, or microseconds since 1970 UTC; "null" for no
# value) and the row id, e.g. "1764331200123456_4242" or "null_17".
CURSOR = re.compile(r"(-?\d{1,20}|null)_(\d{1,19})")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BadParameter(ValueError):
    """A query parameter the API refuses (the pages fall back to the default instead)."""


@dataclass
class TableState:
    search: str = ""
    filter: str = ""
    sort: str = DEFAULT_SORT
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE
    after: str = ""
    before: str = ""

    @classmethod
    def from_params(cls, params, max_page_size=PAGE_SIZES[-1], strict=False):
        """The one place that reads the table's query string, for the page, the htmx partial,
        the API and a posted "all matching" selection. Text loses control characters and is
        bounded; numbers are bounded; an unknown filter or sort falls back to the default, or
        raises BadParameter when ``strict``."""
        search = clean(params.get("search") or params.get("q") or "").strip()
        state = cls(search=search[:MAX_SEARCH])
        state.filter = _choice(params, "filter", FILTERS, "", strict)
        state.sort = _choice(params, "sort", SORTS, DEFAULT_SORT, strict)
        state.page = positive_int(params.get("page"), 1)
        state.page_size = min(positive_int(params.get("page_size"), DEFAULT_PAGE_SIZE),
                              max_page_size)
        for key in ("after", "before"):
            value = params.get(key) or ""
            if CURSOR.fullmatch(value):
                setattr(state, key, value)
            elif value and strict:
                raise BadParameter(f"{key} must be a cursor from a next or previous link")
        if state.after:
            state.before = ""
        return state

    @property
    def cursor(self):
        return self.after or self.before

    def params(self) -> dict:
        """The search and filter as GET parameters (what the pager's forms keep)."""
        return {key: getattr(self, key) for key in ("search", "filter") if getattr(self, key)}


def _choice(params, key, allowed, default, strict):
    value = params.get(key) or ""
    if value in allowed:
        return value
    if value and strict:
        raise BadParameter(f"{key} must be one of {', '.join(allowed)}")
    return default


def positive_int(value, default, limit=10**9):
    try:
        number = int(value)  # more than 4,300 digits is a ValueError too
    except (TypeError, ValueError):
        return default
    return min(number, limit) if number > 0 else default


def digest_range(term):
    """The [low, high) range of digests starting with ``term`` ("sha256:" optional), or None
    when no digest can start with it."""
    low = term.lower()
    low = low if low.startswith("sha256:") else "sha256:" + low
    if not DIGEST_PREFIX.fullmatch(low):
        return None
    return low, low[:-1] + chr(ord(low[-1]) + 1)  # the last character is ':' or hex


class ILike(Lookup):
    """``column ILIKE pattern``: what PostgreSQL's trigram index serves (Django's icontains
    compares UPPER(column), which it does not)."""

    lookup_name = "ilike"

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs} ILIKE {rhs}", [*lhs_params, *rhs_params]


def tag_match(repo, term):
    """Some tag of the row contains ``term``, ignoring case (``repo`` None: in any
    repository)."""
    if connection.vendor == "postgresql":
        # tags_text, through its trigram index. Tag names hold no whitespace, so a term
        # without any cannot match across the space-separated names.
        if any(c.isspace() for c in term):
            return Q(pk__in=[])
        return Q(ILike(F("tags_text"), f"%{connection.ops.prep_for_like_query(term)}%"))
    # SQLite has no substring index: scanning the narrow tag table beats scanning manifests.
    tags = Tag.objects.filter(name__icontains=term)
    if repo is not None:
        tags = tags.filter(repository=repo)
    return Q(id__in=tags.values("manifest_id"))


def items(repo, state: TableState):
    """Top-level items of a repository (indexes and images not only reachable as a child),
    searched, filtered and in the table's order."""
    qs = Manifest.objects.top_level().filter(repository=repo)
    if state.filter == "stale":
        qs = qs.filter(Coverage.of(repo.registry).stale_q())
    elif state.filter:
        qs = qs.filter(FILTERS[state.filter])
    if state.search:
        # A tag containing the text, or a digest starting with it (a range of the
        # (repository, digest) index).
        match = tag_match(repo, state.search)
        prefix = digest_range(state.search)
        if prefix:
            match |= Q(digest__gte=prefix[0], digest__lt=prefix[1])
        qs = qs.filter(match)
    return qs.order_by(*order(state.sort))


def order(sort):
    """ORDER BY for a sort: descending puts NULL last, ascending first; the id breaks ties.
    Each is one direction of a SortIndex."""
    field = sort.lstrip("-")
    descending = sort.startswith("-")
    if connection.vendor == "sqlite":
        # SQLite already sorts NULL first ascending and last descending; spelling it out
        # would stop it from reading the order straight off the index.
        return [f"-{field}", "-id"] if descending else [field, "id"]
    if descending:
        return [F(field).desc(nulls_last=True), F("id").desc()]
    return [F(field).asc(nulls_first=True), F("id").asc()]


def reverse(sort):
    return sort[1:] if sort.startswith("-") else f"-{sort}"


@dataclass
class Page:
    rows: list
    count: int
    number: int
    pages: int
    state: TableState
    count_exact: bool = True
    has_previous: bool = False
    has_next: bool = False

    @property
    def first_index(self):
        return (self.number - 1) * self.state.page_size + 1 if self.rows else 0

    @property
    def last_index(self):
        return self.first_index + len(self.rows) - 1 if self.rows else 0

    @property
    def next_cursor(self):
        return cursor_of(self.rows[-1], self.state.sort) if self.has_next else ""

    @property
    def previous_cursor(self):
        """Empty when the previous page is page 1, which is linked without a cursor (or when
        a cursor found no rows, e.g. after a deletion: then the link jumps by page number)."""
        if not self.has_previous or self.number <= 2 or not self.rows:
            return ""
        return cursor_of(self.rows[0], self.state.sort)


def page(repo, state: TableState) -> Page:
    """One page of the table in two queries at most (a search's matching ids, the rows),
    whatever the page number, cursor or repository size."""
    qs = items(repo, state)
    if state.search or not repo.counts_filter(state.filter):
        # The ids of up to COUNT_CAP + 1 matches, in whatever order the database finds them
        # fastest (trigram and digest indexes, or a scan that stops early for a broad term).
        ids = list(qs.order_by().values_list("id", flat=True)[:COUNT_CAP + 1])
        count, exact = min(len(ids), COUNT_CAP), len(ids) <= COUNT_CAP
        if exact:
            # All the matches are known: sort those few rows, rather than walk a sort index
            # hoping to meet them (the planner cannot know that, say, a digest prefix's
            # matches were all pushed in the same month).
            qs = Manifest.objects.filter(id__in=ids).order_by(*order(state.sort))
    else:
        # The counters kept on the repository are exact and cost no query.
        count, exact = repo.count_for(state.filter), True
    result = paged(qs, state, count, exact)
    coverage.mark(result.rows, Coverage.of(repo.registry))
    return result


def paged(qs, state: TableState, count, exact) -> Page:
    """The page of ``qs`` (in the table's order) that ``state`` asks for, by its cursor or its
    number, ``count`` items matching in all (a lower bound unless ``exact``): one query.
    The registry-wide table (``wide.page``) pages with it too."""
    size = state.page_size
    pages = max(1, -(-count // size))
    if state.cursor:
        # The page number only labels a cursor's page; a page after a cursor is not page 1,
        # and a page before one is page 1 when nothing precedes it.
        rows = _keyset(qs, state, size + 1)
        if state.before:
            more = len(rows) > size
            result = Page(rows[-size:], count, state.page if more else 1, pages, state, exact,
                          more, True)
        else:
            result = Page(rows[:size], count, max(2, state.page), pages, state, exact, True,
                          len(rows) > size)
        result.pages = max(pages, result.number)
    else:
        number = min(state.page, pages) if exact else state.page
        rows = _offset(qs, (number - 1) * size, size + 1)
        result = Page(rows[:size], count, number, pages, state, exact, number > 1,
                      len(rows) > size)
    if not exact:
        # A bound the true number of pages is known to exceed ("Page 2 of more than 20").
        result.pages = max(count // size, result.number - 1 + result.has_next)
    return result


def _offset(qs, start, limit):
    if start and connection.vendor == "postgresql":
        # The skipped rows come from the sort index alone (an index-only scan of ids); only
        # the page's rows are read from the table.
        ids = qs.values("id")[start:start + limit]
        qs = Manifest.objects.filter(id__in=ids).order_by(*qs.query.order_by)
        return list(qs.only(*ROW_FIELDS))
    return list(qs.only(*ROW_FIELDS)[start:start + limit])


def cursor_of(row, sort):
    value = getattr(row, sort.lstrip("-"))
    if value is None:
        return f"null_{row.id}"
    if isinstance(value, datetime):
        value = (value - EPOCH) // timedelta(microseconds=1)
    return f"{value}_{row.id}"


def _cursor_value(cursor, field):
    raw, pk = CURSOR.fullmatch(cursor).groups()
    if raw == "null":
        return None, int(pk)
    value = int(raw)
    if isinstance(Manifest._meta.get_field(field), DateTimeField):
        try:
            return EPOCH + timedelta(microseconds=value), int(pk)
        except OverflowError:
            return (datetime.max if value > 0 else datetime.min).replace(tzinfo=UTC), int(pk)
    return value, int(pk)


def _after(field, descending, value, pk):
    """The rows after (value, pk) in the table's order, as up to three conditions that each
    select one range of a SortIndex: the rest of the rows equal to ``value``, the rows beyond
    it, and the NULL rows (which no comparison matches, so they are a range of their own).
    One OR of them would be a filter over the whole index instead."""
    nullable = Manifest._meta.get_field(field).null
    null, not_null = Q(**{f"{field}__isnull": True}), Q(**{f"{field}__isnull": False})
    if descending:  # (value DESC NULLS LAST, id DESC)
        if value is None:
            return [null & Q(id__lt=pk)]
        ranges = [Q(**{field: value}, id__lt=pk), Q(**{f"{field}__lt": value})]
        return ranges + [null] if nullable else ranges
    if value is None:  # (value ASC NULLS FIRST, id ASC)
        return [null & Q(id__gt=pk), not_null]
    return [Q(**{field: value}, id__gt=pk), Q(**{f"{field}__gt": value})]


def _keyset(qs, state, limit):
    """Up to ``limit`` rows after (or before) the cursor, in the table's order: one statement
    whose subqueries each read at most ``limit`` ids from one index range."""
    sort = reverse(state.sort) if state.before else state.sort
    field = sort.lstrip("-")
    value, pk = _cursor_value(state.cursor, field)
    parts, params = [], []
    for n, condition in enumerate(_after(field, sort.startswith("-"), value, pk)):
        ids = qs.filter(condition).order_by(*order(sort)).values("id")[:limit]
        sql, sql_params = ids.query.sql_with_params()
        parts.append(f"SELECT * FROM ({sql}) AS k{n}")
        params.extend(sql_params)
    rows = list(Manifest.objects.filter(id__in=RawSQL(" UNION ALL ".join(parts), params))
                .order_by(*order(sort)).only(*ROW_FIELDS)[:limit])
    return rows[::-1] if state.before else rows


ROW_FIELDS = ("id", "repository", "digest", "media_type", "kind", "platform", "size",
              "last_pushed", "last_pushed_source", "last_pulled", "first_seen", "tags_text",
              "is_tagged", "error", "fetched", "created", "artifact", "artifact_type", "tool",
              "subject", "referrers_list", "predicates", "is_orphan", "foreign_size")


def children(repo, index: Manifest) -> list:
    """An index's child manifests, in the index's order, each with its platform."""
    return children_of_many(repo.registry, [index]).get(index.id, [])


# The rows an expanded item lists below it at most (and at most MAX_DEPTH levels).
MAX_BELOW = 500


def attachments(repo, rows) -> dict:
    """{row id: the artifacts attached to it} for rows of ``repo`` (or of any repositories,
    ``repo`` None; orphans are attached to nothing), in one query per 500 rows. Not marked
    for Stale (coverage.mark): the callers that show them do it, once for all their rows."""
    by_key = {(row.repository_id, row.digest): row.id for row in rows}
    out = {row.id: [] for row in rows}
    # ``repo`` None: rows of several repositories (the registry-wide table).
    where = Q(repository=repo) if repo is not None else Q(
        repository_id__in={row.repository_id for row in rows})
    for digests in chunks(dict.fromkeys(digest for _, digest in by_key)):
        # The exclude is the m_subject index's condition: SQLite uses a partial index only
        # when the query states it (without it, this read every manifest of the repository).
        for found in Manifest.objects.filter(where, subject__in=digests,
                                             is_orphan=False).exclude(subject="") \
                .only(*ROW_FIELDS).order_by("id"):
            row_id = by_key.get((found.repository_id, found.subject))
            if row_id is not None:
                out[row_id].append(found)
    return out


def artifacts_of(repo, rows) -> dict:
    """{row id: the artifacts that go with it}: those attached to it and, for an index, the
    artifacts it lists itself (BuildKit's attestation manifests). Two queries per 500 rows;
    what the table's marks (signed, has SBOM) are made of."""
    out = attachments(repo, rows)
    for indexes in chunks(row.id for row in rows if row.is_index):
        for link in IndexChild.objects.filter(index_id__in=indexes) \
                .exclude(child__artifact="").select_related("child").only(
                "index_id", *(f"child__{f}" for f in ROW_FIELDS)).order_by("id"):
            out[link.index_id].append(link.child)
    return out


def below(repo, item: Manifest) -> list:
    """What an expanded item lists below it, in tree order, each row with its ``depth`` (1
    for the item's own children and attachments): an index's children, every level of a
    nested index, and the artifacts attached to any of them (an index entry attached to
    another entry is shown under that one). Each manifest once, at most
    MAX_BELOW rows and MAX_DEPTH levels: a hostile index or referrer chain costs only this."""
    tree, seen, level = {}, {item.id}, [item]
    for depth in range(1, MAX_DEPTH + 1):
        kids = children_of_many(repo.registry, [r for r in level if r.is_index])
        attached = attachments(repo, level)
        next_level = []
        for parent in level:
            tree[parent.id] = []
            listed = kids.get(parent.id, [])
            # BuildKit lists an image's attestation in the index too: shown under the image.
            siblings = {row.digest for row in listed}
            listed = [row for row in listed if row.subject not in siblings]
            for row in listed + attached.get(parent.id, []):
                if row.id not in seen and len(seen) <= MAX_BELOW:
                    seen.add(row.id)
                    row.depth = depth
                    tree[parent.id].append(row)
            next_level += tree[parent.id]
        level = next_level
        if not level:
            break
    rows = tree_order(tree, item)
    coverage.mark(rows, Coverage.of(repo.registry))
    return rows


def tree_order(tree, item) -> list:
    """The rows under ``item`` in ``tree`` ({id: [rows below it]}), depth first."""
    out, stack = [], list(reversed(tree.get(item.id, [])))
    while stack:
        row = stack.pop()
        out.append(row)
        stack.extend(reversed(tree.get(row.id, [])))
    return out


def children_of_many(registry, indexes) -> dict:
    """{index id: [child manifests]} of indexes of ``registry`` (of any of its repositories),
    in one query."""
    out = {i.id: [] for i in indexes}
    if not out:
        return out
    links = IndexChild.objects.filter(index_id__in=list(out)).select_related("child") \
        .order_by("id")
    for link in links:
        child = link.child
        if not child.artifact:  # (BuildKit lists its attestations as unknown/unknown)
            child.platform = link.platform or child.platform
        out[link.index_id].append(child)
    coverage.mark([c for kids in out.values() for c in kids], Coverage.of(registry))
    return out
