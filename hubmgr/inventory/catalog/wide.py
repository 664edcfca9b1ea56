"""The registry-wide table (/images): every top-level item of every repository, with filters
that combine (kind, tagged, Stale, platform, pushed and pulled before or after a date) on top
of the repository table's search, sort and paging, which it reuses (``queries``: the state,
the order, keyset and offset paging, the page).

Speed. Each sort has a registry-wide index (migration 0017, ``models.WideSortIndex``) that,
on PostgreSQL, includes every column a filter reads, so that a filtered page walks one index;
the platform filter has a trigram index there too. Counts: without a search or a filter the
repositories' counters are summed; otherwise the ids of up to ``queries.COUNT_CAP`` + 1
matches are read (and sorted, when that is all of them), and past that the count is a lower
bound ("more than 1,000 items"; "Select all matching" then selects them all, up to the web
layer's MAX_SELECTION, when the preview asks for them).
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from django.db.models import Q, Sum

from hubmgr.registry.names import clean

from ..models import Kind, Manifest, Registry, Repository
from ..pulls import coverage
from ..pulls.coverage import Coverage
from . import conditions, queries

KINDS = {Kind.INDEX.value: Q(kind=Kind.INDEX),
         Kind.IMAGE.value: Q(kind=Kind.IMAGE) & Q(artifact=""), "artifact": ~Q(artifact="")}
TAGGED = {"tagged": Q(is_tagged=True), "untagged": Q(is_tagged=False)}
STATUSES = ("stale", "active", "unknown")
DATES = ("pushed_after", "pushed_before", "pulled_after", "pulled_before")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
PLATFORM = re.compile(r"[a-z0-9][a-z0-9._/-]{0,99}")
# The GET parameters of the filters, in the order the toolbar shows them.
PARAMS = ("kind", "tagged", "status", "platform", *DATES)


@dataclass
class WideState(queries.TableState):
    kind: str = ""
    tagged: str = ""
    status: str = ""
    platform: str = ""
    pushed_after: date | None = None
    pushed_before: date | None = None
    pulled_after: date | None = None
    pulled_before: date | None = None
    # What was refused, in words, for the page to say (with ``strict`` it raises instead).
    problems: list = field(default_factory=list)

    @classmethod
    def from_params(cls, params, max_page_size=queries.PAGE_SIZES[-1], strict=False):
        """The repository table's state (queries.TableState.from_params) and the filters. A
        bad value raises queries.BadParameter when ``strict`` (the API); otherwise it is left
        out and said in ``problems`` (the page)."""
        base = queries.TableState.from_params(params, max_page_size, strict)
        state = cls(**vars(base))

        def refuse(message):
            if strict:
                raise queries.BadParameter(message)
            state.problems.append(message)

        for key, allowed in (("kind", KINDS), ("tagged", TAGGED), ("status", STATUSES)):
            value = params.get(key) or ""
            if value in allowed:
                setattr(state, key, value)
            elif value:
                refuse(f"{key} must be one of {', '.join(allowed)}; "
                       f"“{clean(value)[:40]}” is not one")
        platform = clean(params.get("platform") or "").strip().lower()
        if PLATFORM.fullmatch(platform):
            state.platform = platform
        elif platform:
            refuse(f"platform must look like linux/amd64 (letters, digits, . _ / -, at most "
                   f"100); “{platform[:40]}” does not")
        for key in DATES:
            value = (params.get(key) or "").strip()
            if not value:
                continue
            try:
                if not DATE.fullmatch(value):
                    raise ValueError(value)
                setattr(state, key, date.fromisoformat(value))
            except ValueError:
                refuse(f"{key.replace('_', ' ')} must be a date as YYYY-MM-DD; "
                       f"“{clean(value)[:40]}” is not one")
        return state

    @property
    def filtered(self) -> bool:
        return bool(self.filter or self.kind or self.tagged or self.status or self.platform
                    or any(getattr(self, key) for key in DATES))

    def params(self) -> dict:
        """The filters as GET parameters (what "Select all matching" posts back)."""
        out = {key: getattr(self, key) for key in PARAMS if getattr(self, key)}
        out.update({key: out[key].isoformat() for key in DATES if key in out})
        if self.search:
            out["search"] = self.search
        if self.filter:
            out["filter"] = self.filter
        return out


def _midnight(day) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def platform_q(platform) -> Q:
    """An image of this platform, or an index listing it (an index's platform column lists its
    children's, joined by ", ": catalog/store.py)."""
    return (Q(platform=platform) | Q(platform__startswith=f"{platform}, ")
            | Q(platform__endswith=f", {platform}") | Q(platform__contains=f", {platform}, "))


def status_q(state, cover: Coverage) -> Q:
    """Stale, Active or Unknown as the repository table marks them (coverage.Coverage.stale):
    never pulled is Stale or Unknown, as quiet as it can be."""
    quiet = conditions.quiet_since_q(cover.cutoff)
    if state.status == "active":
        return ~quiet
    if state.status == "stale":
        return quiet if cover.decides_stale else Q(pk__in=[])
    return Q(pk__in=[]) if cover.decides_stale else quiet


def items(registry, state: WideState):
    """Top-level items of every repository of ``registry``, searched, filtered, in order."""
    qs = Manifest.objects.top_level()
    if Registry.objects.count() > 1:  # (one registry: every row is its own, no join)
        qs = qs.filter(repository_id__in=Repository.objects.filter(registry=registry)
                       .values("id"))
    cover = Coverage.of(registry)
    if state.filter == "stale":
        qs = qs.filter(cover.stale_q())
    elif state.filter:
        qs = qs.filter(queries.FILTERS[state.filter])
    if state.kind:
        qs = qs.filter(KINDS[state.kind])
    if state.tagged:
        qs = qs.filter(TAGGED[state.tagged])
    if state.status:
        qs = qs.filter(status_q(state, cover))
    if state.platform:
        qs = qs.filter(platform_q(state.platform))
    if state.pushed_after:
        qs = qs.filter(conditions.seen_push_q(), last_pushed__gte=_midnight(state.pushed_after))
    if state.pushed_before:
        qs = qs.filter(conditions.pushed_before_q(_midnight(state.pushed_before)))
    if state.pulled_after:
        qs = qs.filter(conditions.pulled_since_q(_midnight(state.pulled_after)))
    if state.pulled_before:
        qs = qs.filter(last_pulled__lt=_midnight(state.pulled_before))
    if state.search:
        match = queries.tag_match(None, state.search)
        prefix = queries.digest_range(state.search)
        if prefix:
            match |= Q(digest__gte=prefix[0], digest__lt=prefix[1])
        qs = qs.filter(match)
    return qs.order_by(*queries.order(state.sort))


def count(registry) -> int:
    """How many items the registry holds: its repositories' counters, summed."""
    return Repository.objects.filter(registry=registry).aggregate(
        n=Sum("item_count"))["n"] or 0


def first_ids(registry, state: WideState, qs, limit) -> list:
    """The ids of up to ``limit`` items of ``qs``, in whatever order the database finds them
    fastest. Stale's "not pulled since the cutoff" (never pulled, or pulled before it) is two
    ranges of the pulled index (m_wide_pulled) that an OR hides from both databases' planners:
    it read every top-level row when few matched (72 ms at a million rows and none Stale on
    PostgreSQL, 76 ms at 100,000 on SQLite; 34 and 24 ms as two ranges); read one range after
    the other instead."""
    qs = qs.order_by()
    if "stale" not in (state.status, state.filter):
        return list(qs.values_list("id", flat=True)[:limit])
    ids = []
    for part in (Q(last_pulled__isnull=True), Q(last_pulled__lt=Coverage.of(registry).cutoff)):
        ids += qs.filter(part).values_list("id", flat=True)[:limit - len(ids)]
        if len(ids) >= limit:
            break
    return ids


def page(registry, state: WideState) -> queries.Page:
    """One page, in three queries at most (the first matches' ids or the counters, the rows,
    the repositories' names), each row with ``repository_name``. A search or filter counts
    at most queries.COUNT_CAP matches, as a repository's search does (past it the pager says
    "more than"): an exact count of a filter that matches a few of a million items reads the
    whole index."""
    qs = items(registry, state)
    if state.search or state.filtered:
        ids = first_ids(registry, state, qs, queries.COUNT_CAP + 1)
        total, exact = min(len(ids), queries.COUNT_CAP), len(ids) <= queries.COUNT_CAP
        if exact:
            qs = Manifest.objects.filter(id__in=ids).order_by(*queries.order(state.sort))
    else:
        total, exact = count(registry), True
    result = queries.paged(qs, state, total, exact)
    names = dict(Repository.objects.filter(id__in={r.repository_id for r in result.rows})
                 .values_list("id", "name"))
    for row in result.rows:
        row.repository_name = names.get(row.repository_id, "")
    coverage.mark(result.rows, Coverage.of(registry))
    return result


def selection(registry, state: WideState, limit) -> list[tuple[str, str]]:
    """(repository name, digest) of every matching item, at most ``limit`` + 1 of them (so
    that a caller can tell "too many"), for "Select all N matching"."""
    qs = items(registry, state).order_by("repository_id", "id")
    found = list(qs.values_list("repository__name", "digest")[:limit + 1])
    return found
