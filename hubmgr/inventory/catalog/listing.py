"""The repositories page's queries: search by name, sort, and page, in a fixed number of SQL
statements whatever the number of repositories. Counts and sizes are the columns kept on each
repository, so nothing here aggregates manifests."""

from dataclasses import dataclass

from django.db.models import F

from hubmgr.registry.names import clean

from ..models import Repository
from .queries import BadParameter, positive_int

# Query value -> model field or expression; "-" in front sorts descending. Each has an index
# of (registry, it, name) on Repository; untagged is the expression repo_untagged indexes.
SORT_FIELDS = {"name": "name", "size": "total_size", "items": "item_count",
               "untagged": F("item_count") - F("tagged_count"), "stale": "stale_count",
               "last_pushed": "last_pushed", "last_pulled": "last_pulled"}
# Empty for some repositories (never pushed, never pulled, not in the storage figures yet):
# those sort as the least, last when descending and first when ascending.
NULLABLE = {"stale", "last_pushed", "last_pulled"}
SORTS = tuple(s for f in SORT_FIELDS for s in (f, f"-{f}"))
DEFAULT_SORT = "name"
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
MAX_SEARCH = 255


@dataclass
class ListState:
    search: str = ""
    sort: str = DEFAULT_SORT
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE

    @classmethod
    def from_params(cls, params, max_page_size=PAGE_SIZES[-1], strict=False):
        """Read the query string (the page and the API share it). With ``strict``, an
        unknown sort raises BadParameter instead of falling back to the default."""
        state = cls(search=clean(params.get("search") or params.get("q") or "").strip()
                    [:MAX_SEARCH])
        sort = params.get("sort") or DEFAULT_SORT
        if sort not in SORTS:
            if strict:
                raise BadParameter(f"sort must be one of {', '.join(SORTS)}")
            sort = DEFAULT_SORT
        state.sort = sort
        state.page = positive_int(params.get("page"), 1)
        state.page_size = min(positive_int(params.get("page_size"), DEFAULT_PAGE_SIZE),
                              max_page_size)
        return state


@dataclass
class RepoPage:
    rows: list
    count: int
    number: int
    pages: int
    state: ListState

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


def repositories(registry, state: ListState):
    qs = Repository.objects.filter(registry=registry)
    if state.search:
        qs = qs.filter(name__icontains=state.search)
    key = state.sort.lstrip("-")
    field = SORT_FIELDS[key]
    column = F(field) if isinstance(field, str) else field
    descending = state.sort.startswith("-")
    if key == "name":
        return qs.order_by(column.desc() if descending else column.asc())
    if key not in NULLABLE:  # never NULL: the plain order reads straight off an index
        return qs.order_by(*((column.desc(), F("name").desc()) if descending
                             else (column.asc(), F("name").asc())))
    if descending:
        return qs.order_by(column.desc(nulls_last=True), F("name").desc())
    return qs.order_by(column.asc(nulls_first=True), F("name").asc())


def page(registry, state: ListState) -> RepoPage:
    """One page of repositories: a COUNT and a SELECT (an exact count is cheap at tens of
    thousands of rows)."""
    qs = repositories(registry, state)
    count = qs.count()
    pages = max(1, -(-count // state.page_size))
    number = min(state.page, pages)
    start = (number - 1) * state.page_size
    rows = list(qs[start:start + state.page_size])
    return RepoPage(rows, count, number, pages, state)
