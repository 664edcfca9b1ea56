"""The Image Management table's queries: search, filter, sort and page, in a fixed number of
SQL statements whatever the page or the repository size."""

import re
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import F, Q
from django.utils import timezone

from hubmgr.registry.names import clean

from .models import IndexChild, Kind, Manifest, Tag

FILTERS = {
    "tagged": Q(is_tagged=True),
    "untagged": Q(is_tagged=False),
    Kind.INDEX: Q(kind=Kind.INDEX),
    Kind.IMAGE: Q(kind=Kind.IMAGE),
}
SORTS = ("size", "-size", "last_pushed", "-last_pushed", "last_pulled", "-last_pulled")
DEFAULT_SORT = "-last_pushed"
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
MAX_SEARCH = 200
# Text that can be the start of a digest; anything else cannot match one.
DIGEST_PREFIX = re.compile(r"sha256:[0-9a-f]*")


class BadParameter(ValueError):
    """A query parameter the API refuses (the pages fall back to the default instead)."""


@dataclass
class TableState:
    search: str = ""
    filter: str = ""
    sort: str = DEFAULT_SORT
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE

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
        state.page = _positive(params.get("page"), 1)
        state.page_size = min(_positive(params.get("page_size"), DEFAULT_PAGE_SIZE),
                              max_page_size)
        return state


def _choice(params, key, allowed, default, strict):
    value = params.get(key) or ""
    if value in allowed:
        return value
    if value and strict:
        raise BadParameter(f"{key} must be one of {', '.join(allowed)}")
    return default


def _positive(value, default, limit=10**9):
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


def items(repo, state: TableState):
    """Top-level items of a repository (indexes and images not only reachable as a child)."""
    qs = Manifest.objects.filter(repository=repo, is_top_level=True)
    if state.filter:
        qs = qs.filter(FILTERS[state.filter])
    if state.search:
        # A tag containing the text, or a digest starting with it. Both sides can use an
        # index (the tag scan is narrow; the digest prefix is a range), so SQLite ORs two small
        # lookups instead of reading every row.
        term = state.search
        match = Q(id__in=Tag.objects.filter(repository=repo, name__icontains=term)
                  .values("manifest_id"))
        prefix = digest_range(term)
        if prefix:
            match |= Q(digest__gte=prefix[0], digest__lt=prefix[1])
        qs = qs.filter(match)
    field = state.sort.lstrip("-")
    descending = state.sort.startswith("-")
    if connection.vendor == "sqlite":
        # SQLite already sorts NULL first ascending and last descending; spelling it out
        # would stop it from reading the order straight off the index.
        order = [f"-{field}", "-id"] if descending else [field, "id"]
    elif descending:
        order = [F(field).desc(nulls_last=True), F("id").desc()]
    else:
        order = [F(field).asc(nulls_first=True), F("id").asc()]
    return qs.order_by(*order)


@dataclass
class Page:
    rows: list
    count: int
    number: int
    pages: int
    state: TableState

    @property
    def has_previous(self):
        return self.number > 1

    @property
    def has_next(self):
        return self.number < self.pages

    @property
    def first_index(self):
        return (self.number - 1) * self.state.page_size + 1 if self.count else 0

    @property
    def last_index(self):
        return min(self.number * self.state.page_size, self.count)


def page(repo, state: TableState) -> Page:
    qs = items(repo, state)
    # Without a search the counters kept on the repository are exact and cost no query.
    count = qs.count() if state.search else repo.count_for(state.filter)
    pages = max(1, -(-count // state.page_size))
    number = min(state.page, pages)
    start = (number - 1) * state.page_size
    rows = list(qs.only(*ROW_FIELDS)[start:start + state.page_size])
    mark_stale(rows)
    return Page(rows, count, number, pages, state)


ROW_FIELDS = ("id", "digest", "media_type", "kind", "platform", "size", "last_pushed",
              "last_pushed_source", "last_pulled", "first_seen", "tags_text", "is_tagged",
              "error", "fetched", "is_attestation", "created")


def children(index: Manifest) -> list:
    """An index's child manifests, in the index's order, each with its platform."""
    return children_of_many([index]).get(index.id, [])


def children_of_many(indexes) -> dict:
    """{index id: [child manifests]} in one query."""
    out = {i.id: [] for i in indexes}
    if not out:
        return out
    links = IndexChild.objects.filter(index_id__in=list(out)).select_related("child") \
        .order_by("id")
    for link in links:
        child = link.child
        child.platform = link.platform or child.platform
        out[link.index_id].append(child)
    mark_stale([c for kids in out.values() for c in kids])
    return out


def stale_cutoff():
    return timezone.now() - timedelta(days=settings.STALE_DAYS)


def mark_stale(rows):
    """Stale: not pulled for STALE_DAYS; a manifest never pulled counts from its push."""
    cutoff = stale_cutoff()
    for row in rows:
        reference = row.last_pulled or row.last_pushed or row.first_seen
        row.stale = reference is not None and reference < cutoff
