"""The one write path for policies: validate, save, and audit in one transaction."""

from django.db import transaction
from django.utils import timezone

from hubmgr.actors import acting

from .models import CleanupPolicy, PolicyAudit

# Bookkeeping, not the policy's content: left out of the audit's before/after.
_NOT_AUDITED = {"id", "created_at", "updated_at", "created_by", "updated_by", "schedule_from"}
# The settings that say when a policy runs; a change to any of them starts its schedule anew.
SCHEDULE_FIELDS = ("schedule", "run_at", "weekday")


def as_data(policy: CleanupPolicy) -> dict:
    """The policy's settings as JSON-ready data (what the audit records)."""
    data = {}
    for field in policy._meta.concrete_fields:
        if field.name in _NOT_AUDITED:
            continue
        value = field.value_from_object(policy)
        data[field.name] = value.isoformat() if hasattr(value, "isoformat") else value
    return data


def changes(before, after) -> list:
    """[(field, value before, value after)] for each setting an audit entry changed, in the
    model's order. A creation is compared with a new policy's defaults (so it lists what was
    set); a deletion lists nothing (``before`` holds what was deleted)."""
    if after is None:
        return []
    if before is None:
        before = as_data(CleanupPolicy())
    names = list(after) + [name for name in before if name not in after]
    return [(name, before.get(name), after.get(name)) for name in names
            if before.get(name) != after.get(name)]


@transaction.atomic
def save_policy(policy: CleanupPolicy, user=None) -> CleanupPolicy:
    """Validate (ValidationError names the field), save, and record who changed what."""
    policy.full_clean()
    before = None
    if policy.pk is not None:
        old = CleanupPolicy.objects.select_for_update().filter(pk=policy.pk).first()
        before = as_data(old) if old else None
    user = acting(user)
    if before is None:
        policy.created_by = user
    policy.updated_by = user
    after = as_data(policy)
    if before is None or any(before[f] != after[f] for f in SCHEDULE_FIELDS):
        policy.schedule_from = timezone.now()  # times already passed are never run
    policy.save()
    if before != after:
        PolicyAudit.objects.create(
            policy=policy, policy_name=policy.name, user=user,
            action=PolicyAudit.Action.CREATE if before is None else PolicyAudit.Action.CHANGE,
            before=before, after=after)
    return policy


@transaction.atomic
def delete_policy(policy: CleanupPolicy, user=None):
    user = acting(user)
    PolicyAudit.objects.create(policy=policy, policy_name=policy.name, user=user,
                               action=PolicyAudit.Action.DELETE, before=as_data(policy))
    policy.delete()
