"""The rule engine: which top-level items of one repository a policy removes, and which its
keep rules protect. Plain functions over plain data, no I/O.

- Only top-level items are considered. An index child goes with its index, through the
  deletion planner's cascade, never on its own. (The caller gives an index the latest pull of
  it or its children as ``last_pulled``, and marks Stale from that.) So does an artifact
  attached to a subject in its repository (a signature, an attestation, an SBOM, a referrer):
  it is judged with its subject, never on its own, and goes when its subject goes. An
  orphaned artifact (its subject gone) is a top-level item like any other.
- A push time counts only where a push was seen (a push event or an access log): an image's
  build time says nothing about when it was pushed.
- Remove rules (the first that matches names the item's reason):
  ``orphaned``: an orphaned artifact older than D days (by the push seen, else first seen);
  ``tag``: tagged, every tag matches the expression, and a push seen more than D days ago
  (no push seen: not selected; there is no evidence of its age);
  ``untagged``: untagged, and older than D days by the push seen, else by first seen;
  ``stale``: Stale on evidence (``stale is True``; unknown is not stale).
- Keep rules always win: ``last`` (among the N most recently pushed tagged items: by the push
  seen, else first seen, newest first, digest breaking ties), ``tag`` (any tag matches),
  ``pulled`` (pulled within D days); and, in every policy, ``protected`` (a tag that a
  protected-tag rule of the registry finds: deletion.protection).
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hubmgr.inventory.catalog import conditions
from hubmgr.patterns import tag_finder

REMOVE_TAG, REMOVE_UNTAGGED, REMOVE_STALE = "tag", "untagged", "stale"
REMOVE_ORPHANED = "orphaned"
KEEP_LAST, KEEP_TAG, KEEP_PULLED = "last", "tag", "pulled"
KEEP_PROTECTED = "protected"


@dataclass(slots=True)
class Item:
    """A top-level item of a repository, as the rules see it."""

    digest: str
    kind: str = "image"
    tags: tuple = ()
    last_pushed: datetime | None = None
    last_pushed_source: str = ""
    first_seen: datetime | None = None
    last_pulled: datetime | None = None
    stale: bool | None = None
    is_orphan: bool = False  # an artifact whose subject is gone (conditions.orphaned)
    pk: int | None = None  # its manifest's id, where it came from the database
    protected: str = ""  # why a protected-tag rule keeps it ('' when none does)

    @property
    def seen_push(self):
        return conditions.seen_push(self)

    @property
    def age_from(self):
        return conditions.age_from(self)


@dataclass
class Evaluation:
    selected: dict = field(default_factory=dict)  # digest -> remove rule
    protected: dict = field(default_factory=dict)  # digest -> (remove rule, [keep rules])


def describe_remove(policy, rule):
    return {
        REMOVE_TAG: f"every tag matches {policy.remove_tag_regex!r} and last pushed more "
                    f"than {policy.remove_tag_days} days ago",
        REMOVE_UNTAGGED: f"untagged for more than {policy.remove_untagged_days} days",
        REMOVE_STALE: "Stale (no pull or push seen in the stale period)",
        REMOVE_ORPHANED: f"an orphaned artifact (its subject is gone) older than "
                         f"{policy.remove_orphans_days} days",
    }[rule]


def describe_keep(policy, rule):
    return {
        KEEP_LAST: f"one of the {policy.keep_last} most recently pushed tagged items",
        KEEP_TAG: f"a tag matches {policy.keep_tag_regex!r}",
        KEEP_PULLED: f"pulled within {policy.keep_pulled_days} days",
        KEEP_PROTECTED: "a protected tag (protected-tag rules apply to every policy)",
    }[rule]


def remove_rule(item: Item, policy, now: datetime, tag_regex=None):
    """The first remove rule that selects ``item``, or None."""
    if (policy.remove_orphans_days is not None and conditions.orphaned(item)
            and conditions.older_than(item, now - timedelta(days=policy.remove_orphans_days))):
        return REMOVE_ORPHANED
    if item.tags:
        if policy.remove_tag_regex and policy.remove_tag_days is not None:
            found = tag_regex or tag_finder(policy.remove_tag_regex)
            if (conditions.pushed_before(item, now - timedelta(days=policy.remove_tag_days))
                    and all(map(found, item.tags))):
                return REMOVE_TAG
    elif policy.remove_untagged_days is not None:
        if conditions.older_than(item, now - timedelta(days=policy.remove_untagged_days)):
            return REMOVE_UNTAGGED
    if policy.remove_stale and item.stale is True:
        return REMOVE_STALE
    return None


def newest_tagged(items, n):
    """Digests of the ``n`` most recently pushed tagged items."""
    if not n:
        return set()
    tagged = [i for i in items if i.tags]

    def key(i):
        at = i.age_from
        return (at.timestamp() if at is not None else float("-inf"), i.digest)

    return {i.digest for i in sorted(tagged, key=key, reverse=True)[:n]}


def keep_rules(item: Item, policy, now: datetime, newest=frozenset(), keep_regex=None):
    rules = []
    if item.digest in newest:
        rules.append(KEEP_LAST)
    if policy.keep_tag_regex and item.tags:
        found = keep_regex or tag_finder(policy.keep_tag_regex)
        if any(map(found, item.tags)):
            rules.append(KEEP_TAG)
    if (policy.keep_pulled_days is not None
            and conditions.pulled_since(item, now - timedelta(days=policy.keep_pulled_days))):
        rules.append(KEEP_PULLED)
    if item.protected:
        rules.append(KEEP_PROTECTED)
    return rules


def evaluate(items, policy, now: datetime, newest=None) -> Evaluation:
    """What ``policy`` removes from one repository's top-level ``items``, keep rules winning.

    ``items`` may be only the candidates (a superset of what the remove rules select) when
    ``newest`` gives the digests of the repository's ``keep_last`` newest tagged items."""
    result, items = Evaluation(), list(items)
    tag_regex = tag_finder(policy.remove_tag_regex) if policy.remove_tag_regex else None
    keep_regex = tag_finder(policy.keep_tag_regex) if policy.keep_tag_regex else None
    for item in items:
        rule = remove_rule(item, policy, now, tag_regex)
        if rule is None:
            continue
        if newest is None:  # sorted only once something is selected
            newest = newest_tagged(items, policy.keep_last)
        keeps = keep_rules(item, policy, now, newest, keep_regex)
        if keeps:
            result.protected[item.digest] = (rule, keeps)
        else:
            result.selected[item.digest] = rule
    return result


def brake_reason(policy, going, total):
    """Why the brake stops a repository whose plan removes ``going`` of its ``total`` items,
    or None."""
    if policy.brake_count is not None and going > policy.brake_count:
        return (f"the plan removes {going} items, more than the limit of "
                f"{policy.brake_count}")
    if total and going / total > policy.brake_share:
        return (f"the plan removes {going} of {total} items ({going / total:.0%}), more "
                f"than the limit of {policy.brake_share:.0%}")
    return None
