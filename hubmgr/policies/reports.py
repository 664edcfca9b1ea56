"""A policy run's report as plain data, declared once: what ``runs`` and ``setwise`` build,
what the API, the pages, the ``cleanup`` command and ``runs.confirm_brake`` read; and the
bounded form that the API and the pages show."""

import heapq
from typing import NotRequired, TypedDict

from hubmgr.deletion.planner import ATTACHED, CHILD, SELECTED
from hubmgr.deletion.shapes import KeptItem, PlanItem
from hubmgr.units import counted, natural_key, tag_order

# A report as shown lists at most this many items of each kind per repository, and this many
# repositories; counts and bytes stay exact, and "items_truncated" says when a list is cut.
MAX_LISTED_ITEMS = 100
MAX_LISTED_REPOSITORIES = 200
LISTS = ("going", "protected", "kept", "unread")
# The counts of what goes, by the planner's reason: see RepositoryReport.
GOING_BY_REASON = {SELECTED: "going_items", CHILD: "going_children", ATTACHED: "going_attached"}
# Why an item no rule selected goes (a going item's "reason"), in words: the pages and the
# cleanup command say these.
CASCADED = {CHILD: "an unreferenced child of an index that goes",
            ATTACHED: "attached to an item that goes"}
# A listed item whose report says no reason (recorded before reasons were).
NO_REASON = "no reason recorded"
# A list is shown in at most this many groups of one reason (``grouped``).
MAX_LISTED_GROUPS = 50


class GoingItem(PlanItem):
    rule: str | None  # the remove rule that selected it; None for an index's child


class ProtectedItem(TypedDict):
    digest: str
    tags: list[str]
    rule: str  # the remove rule that would have selected it
    keep: list[str]  # the keep rules that protect it


class KeptEntry(KeptItem):
    tags: NotRequired[list[str]]


class RepositoryReport(TypedDict):
    repository: str
    items: int  # its top-level items
    selected: int  # of them, selected by a remove rule (going or kept by the planner)
    going: list[GoingItem]
    protected: list[ProtectedItem]
    kept: list[KeptEntry]
    reclaim_bytes: int
    unread: list[str]
    brake: str | None  # why the brake stopped it, or None
    going_count: int  # every manifest that goes: going_items + going_children + going_attached
    # What going_count counts, apart: the top-level items a remove rule selected, the child
    # images (and indexes) that go with an index, and the artifacts that go with what they
    # are attached to (deletion.planner's reasons).
    going_items: int
    going_children: int
    going_attached: int
    protected_count: int
    kept_count: int
    unread_count: int
    job: NotRequired[int | None]  # the deletion job it became (a run in delete mode)
    brake_confirmed_by: NotRequired[str | None]


class Totals(TypedDict):
    repositories: int  # covered
    planned: int  # with something selected or protected
    going: int  # every manifest that goes (outside braked repositories), and apart:
    going_items: int  # the top-level items selected
    going_children: int  # the children that go with an index
    going_attached: int  # what goes with what it is attached to
    protected: int
    kept: int
    reclaim_bytes: int
    braked: int
    braked_going: int
    braked_going_items: int
    braked_reclaim_bytes: int


class Report(TypedDict):
    policy: str
    mode: str
    at: str
    rules: dict
    note: str
    repositories: list[RepositoryReport]
    totals: Totals
    items_truncated: NotRequired[bool]  # (in the bounded form)
    repositories_truncated: NotRequired[bool]


def count_going(going) -> dict:
    """``GOING_BY_REASON``'s counts of the going items ``going`` (an item of no known reason
    counts as an item)."""
    counts = dict.fromkeys(GOING_BY_REASON.values(), 0)
    for item in going:
        counts[GOING_BY_REASON.get(item.get("reason"), "going_items")] += 1
    return counts


def going_text(counts, of=None, clause=False) -> str:
    """What goes, top-level items and what goes with them apart ("1 of 3 items, with its 2
    child images": units.counted), from a repository's entry or the totals (of a report
    through ``counted_apart``); ``of`` the items there are. With ``clause``, it ends in a
    comma when it names what goes with the items, so that a sentence can go on."""
    text = counted(counts["going_items"], counts["going_children"], counts["going_attached"],
                   of=of)
    extra = counts["going_children"] or counts["going_attached"]
    return f"{text}," if clause and extra else text


def braked_counts(report: Report) -> dict:
    """What the brake held back, counted apart as ``going_text`` reads it (the totals count
    only the items; the children and attached artifacts are the braked entries' own)."""
    braked = [e for e in report.get("repositories") or [] if e.get("brake")]
    return {"going_items": report["totals"]["braked_going_items"],
            "going_children": sum(e["going_children"] for e in braked),
            "going_attached": sum(e["going_attached"] for e in braked)}


def counted_apart(report: Report) -> Report:
    """The report with what goes counted apart (``going_items``, ``going_children``,
    ``going_attached``, per repository and in the totals, and ``braked_going_items``) even
    when it was recorded before these counts were: they are counted from each going item's
    reason (a recorded report lists every item); should a list be cut short, what it leaves
    out counts as items. A report that has them is returned as it is."""
    entries = report.get("repositories") or []
    if all("going_items" in entry for entry in entries) and (
            "going_items" in (report.get("totals") or {"going_items": 0})):
        return report
    entries = [dict(entry) for entry in entries]
    for entry in entries:
        if "going_items" in entry:
            continue
        going = entry.get("going") or []
        counts = count_going(going)
        counts["going_items"] += max(entry.get("going_count", len(going)) - len(going), 0)
        entry.update(counts)
    report = {**report, "repositories": entries}
    if (totals := report.get("totals")) and "going_items" not in totals:
        report["totals"] = {
            **totals,
            **{key: sum(e[key] for e in entries if not e.get("brake"))
               for key in GOING_BY_REASON.values()},
            "braked_going_items": sum(e["going_items"] for e in entries if e.get("brake"))}
    return report


def bounded(report: Report) -> Report:
    """The report with each repository's lists cut to MAX_LISTED_ITEMS and the repositories to
    MAX_LISTED_REPOSITORIES; "<list>_count" and the totals stay exact (and what goes is
    counted apart, ``counted_apart``, in a report recorded before it was)."""
    report = counted_apart(report)
    if not report.get("repositories"):
        return {**report, "items_truncated": False, "repositories_truncated": False}
    cut = False
    listed = []
    for entry in report["repositories"][:MAX_LISTED_REPOSITORIES]:
        entry = dict(entry)
        for key in LISTS:
            values = entry.get(key) or []
            count = entry.setdefault(f"{key}_count", len(values))  # (reports before counts)
            if len(values) > MAX_LISTED_ITEMS:
                entry[key] = values = values[:MAX_LISTED_ITEMS]
            cut = cut or count > len(values)
        listed.append(entry)
    return {**report, "repositories": listed, "items_truncated": cut,
            "repositories_truncated": len(report["repositories"]) > len(listed)}


def grouped(items, reason_of, order=(), total=None) -> dict:
    """One list of a repository's report (its going, protected or kept items) as a page
    shows it: grouped by reason, each reason said once with its count, the items of a group
    in tag order (``units.tag_order``: build-9 before build-10, untagged ones by digest; each
    item's tags in that order too). ``reason_of`` gives an item's reason in words; groups
    whose reason is in ``order`` come first, in its order, the rest by their words. At most
    MAX_LISTED_ITEMS items are listed, shared out between the groups so that each lists
    some, and at most MAX_LISTED_GROUPS groups; "more" counts what a group leaves out.
    ``total``: how many items the list had before the engine cut it (a dry run lists the
    first few); then the counts are of the listed items only ("partial"), and "unlisted"
    counts the rest.

    {"groups": [{"reason", "count", "items", "more"}], "partial", "unlisted",
     "more_groups", "more_groups_items"}"""
    by_reason = {}
    for item in items:
        by_reason.setdefault(reason_of(item), []).append(item)
    rank = {reason: n for n, reason in enumerate(order)}
    reasons = sorted(by_reason, key=lambda r: (rank.get(r, len(rank)), natural_key(r)))
    shown, hidden = reasons[:MAX_LISTED_GROUPS], reasons[MAX_LISTED_GROUPS:]
    shares = _shares([len(by_reason[r]) for r in shown], MAX_LISTED_ITEMS)
    groups = []
    for reason, share in zip(shown, shares):
        members = by_reason[reason]
        listed = heapq.nsmallest(share, members, key=tag_order)
        groups.append({"reason": reason, "count": len(members), "more": len(members) - share,
                       "items": [{**item, "tags": sorted(item.get("tags") or [],
                                                         key=natural_key)}
                                 for item in listed]})
    total = len(items) if total is None else max(total, len(items))
    return {"groups": groups, "partial": total > len(items), "unlisted": total - len(items),
            "more_groups": len(hidden),
            "more_groups_items": sum(len(by_reason[r]) for r in hidden)}


def _shares(counts, budget) -> list:
    """``budget`` shared out between groups of ``counts`` items: evenly, a group that needs
    less than its share giving the rest to the others; every group gets one while the budget
    lasts."""
    shares = [0] * len(counts)
    waiting = [n for n, count in enumerate(counts) if count]
    while budget > 0 and waiting:
        each = max(budget // len(waiting), 1)
        for n in list(waiting):
            add = min(each, counts[n] - shares[n], budget)
            shares[n] += add
            budget -= add
            if shares[n] == counts[n]:
                waiting.remove(n)
            if budget == 0:
                break
    return shares


def grouped_lists(entry: RepositoryReport, rules: dict) -> dict:
    """A repository's going, protected and kept lists, each ``grouped`` by its reason: what
    goes by the remove rule that selected it (or why it goes with another, ``CASCADED``), in
    the rules' order; what is protected by its keep rules; what the planner keeps by the
    planner's reason. ``rules``: the report's rule descriptions."""
    remove, keep = rules.get("remove", {}), rules.get("keep", {})

    def going_reason(item):
        return remove.get(item.get("rule")) or CASCADED.get(item.get("reason")) or NO_REASON

    def keep_reason(item):
        return "; ".join(keep.get(k, k) for k in item.get("keep") or []) or NO_REASON

    lists = {key: entry.get(key) or [] for key in ("going", "protected", "kept")}
    return {
        "going_groups": grouped(lists["going"], going_reason,
                                order=[*remove.values(), *CASCADED.values()],
                                total=entry.get("going_count")),
        "protected_groups": grouped(lists["protected"], keep_reason, order=keep.values(),
                                    total=entry.get("protected_count")),
        "kept_groups": grouped(lists["kept"], lambda item: item.get("reason") or NO_REASON,
                               total=entry.get("kept_count")),
    }
