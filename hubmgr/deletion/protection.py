"""Protected tags: rules that no deletion overrides, and the one write path that audits them.

A rule is an RE2 tag expression (found anywhere in a tag, as a policy's tag expressions are;
``^`` and ``$`` anchor it) and a repository glob (as a policy's include: ``**`` is every
repository). An item with a tag that a rule of its repository finds is **protected**:
- a selection that names it (the page, the API, the CLI) keeps it, with the rule as the
  reason, and the reclaim figure leaves it out; so does a plan that would take it along as an
  artifact attached to a going item (it stays, orphaned, and says why);
- a cleanup policy never selects it: the protection counts as a keep rule (``rules``);
- a job's recheck right before each DELETE applies the rules in force at that moment, to the
  tags the registry answers then (``recheck.RegistryView``): a rule added, or a protected tag
  moved onto an item, after its preview keeps it.

How it meets an index: an image (or index) that a protected index lists is protected with
it. The planner gives that for free: a manifest that an index outside the plan lists is
never deleted, and a protected index is always outside the plan; the recheck keeps an item
that a protected tag's index lists in the registry. What is attached to a protected item (its
signature, an SBOM) is not protected by it: it stays while its subject does (nothing removes
an attached artifact on its own but an explicit selection, or a policy's orphan rule once the
subject is gone), and a maintainer may still delete it by name.
"""

from dataclasses import dataclass
from functools import lru_cache

from django.db import transaction

from hubmgr.actors import acting
from hubmgr.patterns import RepositoryMatcher, tag_finder

from .models import ProtectedTag, ProtectionAudit

AUDITED = ("tag_regex", "repositories", "note")
PERMISSION = "deletion.manage_protected_tags"  # to add, change or remove a rule


@dataclass(frozen=True)
class Rule:
    id: int
    tag_regex: str
    repositories: str

    def covers(self, repository: str) -> bool:
        return _matcher(self.repositories)(repository)

    def finds(self, tag: str) -> bool:
        return _finder(self.tag_regex)(tag)


@lru_cache(maxsize=256)
def _matcher(glob):
    return RepositoryMatcher(glob)


@lru_cache(maxsize=256)
def _finder(pattern):
    return tag_finder(pattern)


def reason(tag: str, rule: Rule) -> str:
    """Why a protected item stays, in words (the pages, the API, a job's kept items)."""
    return f"protected tag {tag} (rule {rule.tag_regex!r} on {rule.repositories})"


class Protection:
    """The rules in force, as read at one moment. False when there are none (then nothing is
    protected, and a caller may skip its work)."""

    def __init__(self, rules=()):
        self.rules = tuple(rules)
        self._of = {}  # repository name -> its rules

    @classmethod
    def current(cls) -> "Protection":
        return cls(Rule(pk, regex, glob) for pk, regex, glob in ProtectedTag.objects.order_by(
            "id").values_list("id", "tag_regex", "repositories"))

    def __bool__(self):
        return bool(self.rules)

    def of(self, repository: str) -> tuple:
        """The rules that apply in ``repository``."""
        found = self._of.get(repository)
        if found is None:
            found = self._of[repository] = tuple(r for r in self.rules if r.covers(repository))
        return found

    def protects(self, repository: str, tags) -> str:
        """The reason ``tags`` of an item of ``repository`` protect it, or ''."""
        rules = self.of(repository) if tags else ()
        for tag in tags:
            for rule in rules:
                if rule.finds(tag):
                    return reason(tag, rule)
        return ""


def as_data(rule: ProtectedTag) -> dict:
    return {"id": rule.pk, **{name: getattr(rule, name) for name in AUDITED}}


@transaction.atomic
def save_rule(rule: ProtectedTag, user=None) -> ProtectedTag:
    """Validate (ValidationError names the field), save, and record who changed what."""
    rule.full_clean()
    user = acting(user)
    before = None
    if rule.pk is not None:
        old = ProtectedTag.objects.select_for_update().filter(pk=rule.pk).first()
        before = as_data(old) if old else None
    if before is None:
        rule.created_by = user
    rule.updated_by = user
    rule.save()
    after = as_data(rule)
    if before != after:
        ProtectionAudit.objects.create(
            rule=rule, user=user, before=before, after=after,
            action=ProtectionAudit.Action.CREATE if before is None
            else ProtectionAudit.Action.CHANGE)
    return rule


@transaction.atomic
def delete_rule(rule: ProtectedTag, user=None):
    user = acting(user)
    ProtectionAudit.objects.create(rule=None, user=user, before=as_data(rule),
                                   action=ProtectionAudit.Action.DELETE)
    rule.delete()
