"""What the cleanup policy tests share: a policy made in memory, times relative to NOW, the
rules' items, a brute-force reading of the rules, Hypothesis strategies, and the policies
and runs several tests start from."""

from datetime import timedelta
from io import StringIO

from django.core.management import call_command
from django.utils import timezone
from hypothesis import strategies as st

from hubmgr.policies import rules, runs, service
from hubmgr.policies.models import CleanupPolicy
from hubmgr.patterns import compile_regex



RELEASE = r"^latest$|^v?\d+\.\d+\.\d+$"


def policy(**fields):
    fields.setdefault("name", "p")
    fields.setdefault("include", "**")
    return CleanupPolicy(**fields)


NOW = timezone.now()


def at(days):
    return NOW - timedelta(days=days, hours=12) if days is not None else None


def item(name, tags=(), pushed=None, source="push_event", first_seen=0, pulled=None,
         stale=None, orphan=False):
    return rules.Item(name, "image", tuple(tags), at(pushed), source if pushed is not None
                      else "", at(first_seen), at(pulled), stale, is_orphan=orphan)


def brute_force(items, p, now):
    """The rules as the issue states them, written naively."""
    def seen(i):
        return i.last_pushed if i.last_pushed_source in ("push_event", "access_log") else None

    def known_since(i):
        return seen(i) if seen(i) is not None else i.first_seen

    def older(t, days):
        return t is not None and now - t > timedelta(days=days)

    selected, kept = {}, set()
    for i in items:
        rule = None
        if (p.remove_orphans_days is not None and i.is_orphan
                and older(known_since(i), p.remove_orphans_days)):
            rule = "orphaned"
        elif (i.tags and p.remove_tag_regex and older(seen(i), p.remove_tag_days)
                and all(compile_regex(p.remove_tag_regex).search(t) for t in i.tags)):
            rule = "tag"
        elif not i.tags and p.remove_untagged_days is not None and older(
                known_since(i), p.remove_untagged_days):
            rule = "untagged"
        elif p.remove_stale and i.stale is True:
            rule = "stale"
        newer = [j for j in items if j.tags and known_since(j) is not None and (
            known_since(i) is None or (known_since(j), j.digest) > (known_since(i), i.digest))]
        keep = ((p.keep_last and i.tags and len(newer) < p.keep_last)
                or (p.keep_tag_regex and any(compile_regex(p.keep_tag_regex).search(t)
                                             for t in i.tags))
                or (p.keep_pulled_days is not None and i.last_pulled is not None
                    and now - i.last_pulled <= timedelta(days=p.keep_pulled_days))
                or i.protected)  # (a protected tag, worked out by the caller)
        if keep:
            kept.add(i.digest)
        elif rule:
            selected[i.digest] = rule
    return selected, kept


TAGS = ["latest", "1.2.3", "v2.0.0", "build-1", "build-2", "dev-x", "rc-1.0.0-rc1"]


days = st.one_of(st.none(), st.integers(0, 60))


@st.composite
def policies(draw):
    return policy(
        remove_tag_regex=draw(st.sampled_from(["", "^build-", "dev|build", "."])),
        remove_tag_days=draw(st.integers(0, 60)),
        remove_untagged_days=draw(days), remove_stale=draw(st.booleans()),
        remove_orphans_days=draw(days),
        keep_last=draw(st.one_of(st.none(), st.integers(0, 4))),
        keep_tag_regex=draw(st.sampled_from(["", RELEASE, "^build-2$"])),
        keep_pulled_days=draw(days))


def keep_ten_builds():
    """The README's two examples in one policy."""
    return service.save_policy(policy(
        name="builds", include="team/*", remove_tag_regex=".", remove_tag_days=0,
        keep_last=10, keep_tag_regex=RELEASE, remove_untagged_days=7))


def delete_builds():
    p = keep_ten_builds()
    p.mode = "delete"
    return service.save_policy(p)


def cleanup(*args):
    out = StringIO()
    call_command("cleanup", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def utc(text):
    from datetime import datetime

    return datetime.fromisoformat(text + "+00:00")


def braked_run(**fields):
    """A run in delete mode of a policy that would remove all of team/app's tagged items: the
    brake stops team/app."""
    p = service.save_policy(policy(name="everything", remove_tag_regex=".", remove_tag_days=0,
                                   mode="delete", **fields))
    run = runs.record_run(p, delete=True)
    assert run.status == "braked" and not run.jobs.exists()
    return run


def awaiting_run(p, user=None):
    """A run of ``p`` (in delete mode) as "Run now" on its page starts it, executed here:
    planned, waiting for a maintainer's confirmation, nothing deleted."""
    return runs.execute(runs.claim_run(p, user, confirm_first=True))


def work_tables():
    """The names of the set-wise dry run's work tables that the database holds."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT relname FROM pg_class WHERE relname LIKE 'hm\\_%'")
        else:
            cursor.execute("SELECT name FROM sqlite_temp_master WHERE name LIKE 'hm\\_%' "
                           "ESCAPE '\\' UNION SELECT name FROM sqlite_master "
                           "WHERE name LIKE 'hm\\_%' ESCAPE '\\'")
        return [name for (name,) in cursor.fetchall()]
