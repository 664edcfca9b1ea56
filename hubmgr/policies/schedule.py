"""When a policy is due: plain functions over a policy and the time (UTC)."""

from datetime import UTC, datetime, timedelta

from .models import Schedule


def last_due(policy, now: datetime) -> datetime | None:
    """The latest scheduled time at or before ``now``, or None (no schedule)."""
    if policy.schedule == Schedule.OFF or policy.run_at is None:
        return None
    now = now.astimezone(UTC)
    today = datetime.combine(now.date(), policy.run_at.replace(tzinfo=None), tzinfo=UTC)
    if policy.schedule == Schedule.DAILY:
        return today if today <= now else today - timedelta(days=1)
    if policy.weekday is None:
        return None
    due = today - timedelta(days=(now.weekday() - policy.weekday) % 7)
    return due if due <= now else due - timedelta(days=7)


def is_due(policy, now: datetime) -> bool:
    """A scheduled time has passed since the schedule was set (or last changed), and no
    scheduled run has started since it. A time already passed when the schedule was set is
    never run; missed times (workers down for days) give one run, not one each."""
    due = last_due(policy, now)
    since = policy.schedule_from or policy.created_at
    return (due is not None and due > since
            and not policy.runs.filter(scheduled=True, started_at__gte=due).exists())
