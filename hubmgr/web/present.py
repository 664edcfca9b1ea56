"""Display strings for table rows, computed in Python once per row: the table renders 50 rows
per request and template filters were most of its server time."""

from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

from hubmgr.deletion.protection import Protection
from hubmgr.inventory.catalog import queries
from hubmgr.policies import outcomes, runs
from hubmgr.policies.models import PolicyRun
from hubmgr.registry import artifacts
from hubmgr.units import counted, human_size, plural

UNITS = (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400),
         ("hour", 3600), ("minute", 60))


def ago(when, now) -> str:
    seconds = (now - when).total_seconds()
    if seconds < 0:
        return "just now"
    for unit, size in UNITS:
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def _time(when, now):
    if when is None:
        return None
    return {"ago": ago(when, now), "iso": when.isoformat(),
            "exact": when.strftime("%Y-%m-%d %H:%M:%S UTC")}


def window(since):
    """The observation window's start as the pages show it, or None."""
    if since is None:
        return None
    return {"day": since.strftime("%Y-%m-%d"), "exact": since.strftime("%Y-%m-%d %H:%M UTC"),
            "iso": since.isoformat()}


def present(rows, since=None, ref=""):
    """Display strings for rows marked by coverage.mark; ``since`` is the registry's
    pulls_observed_since, ``ref`` the repository as a pull command names it (pull_ref)."""
    now = timezone.now()
    since_text = since.strftime("%Y-%m-%d") if since else ""
    for row in rows:
        row.tag_list = row.tags
        row.pull_commands = pull_commands(row, ref) if ref else []
        row.short = row.digest.split(":", 1)[-1][:12]
        row.size_text = human_size(row.size)
        # A build time is not a push time: shown as such, on hover.
        row.built = _time(row.last_pushed, now) if row.pushed_from_created else None
        row.pushed = None if row.built else _time(row.last_pushed, now)
        row.pulled = _time(row.last_pulled, now)
        if row.pulled:
            row.pulled_note = ""
        elif row.never_pulled:
            row.pulled_note = "Never"
        else:
            row.pulled_note = f"Not since {since_text}" if since else "No pull data"
        info = row.artifact_info
        row.type_label = info.label
        if row.is_orphan:
            row.orphan_note = (f"Orphaned: what it belongs to ({row.subject[:19]}…) is not in "
                               "this repository, or its chain of subjects loops.")
    return rows


def with_marks(repo, rows):
    """Each top-level row's marks (signed, has SBOM, attested: artifacts.marks) and whether
    expanding it shows anything (``has_below``): two queries for the page."""
    found = queries.artifacts_of(repo, rows)
    for row in rows:
        attached = found.get(row.id, [])
        row.marks = artifacts.marks(a.artifact_info for a in attached)
        row.has_below = row.is_index or bool(attached)
    return rows


def with_protection(repo, rows, below=None, protection=None):
    """Each row's ``protected``: why a protected-tag rule keeps it ('' when none does), by its
    own tags; for rows listed ``below`` an item, also when that item is protected (what a
    protected index lists, not what is attached to it). ``protection``: the rules, when the
    caller read them already."""
    protection = Protection.current() if protection is None else protection
    above = protection.protects(repo.name, below.tags) if below and protection else ""
    for row in rows:
        row.protected = protection.protects(repo.name, row.tags) if protection else ""
        if not row.protected and above and not row.is_attached:
            row.protected = f"listed by a {above}"
    return rows


def pull_commands(row, ref) -> list[tuple[str, str]]:
    """(what it pulls, the command) for a row: docker for images and indexes, helm for a
    chart (by version: its tag), oras for any other artifact."""
    tag = row.tag_list[0] if row.tag_list else ""
    if row.artifact == artifacts.CHART:
        by_tag = [(f"version {tag}", f"helm pull oci://{ref} --version {tag}")] if tag else []
        return by_tag + [("digest", f"helm pull oci://{ref}@{row.digest}")]
    if row.artifact:
        return [("digest", f"oras pull {ref}@{row.digest}")]
    by_tag = [(f"tag {tag}", f"docker pull {ref}:{tag}")] if tag else []
    return by_tag + [("digest", f"docker pull {ref}@{row.digest}")]


def pull_ref(repo) -> str:
    """``host/repository`` as pull commands name it: a row adds ``:tag`` or ``@digest``. The
    host is HUBMGR_REGISTRY_PUBLIC_HOST, else the host and port of the registry's URL (the
    default ports are left out, as docker spells them)."""
    host = settings.REGISTRY_PUBLIC_HOST
    if "://" in host:  # a URL given where a host was asked for: its host and port
        host = urlsplit(host).netloc
    if not host:
        try:
            parts = urlsplit(repo.registry.url)
            host, port = parts.hostname or "", parts.port
        except ValueError:  # a malformed URL or port: no host rather than an error
            host, port = "", None
        if ":" in host:
            host = f"[{host}]"
        if port and (parts.scheme, port) not in (("http", 80), ("https", 443)):
            host = f"{host}:{port}"
    return f"{host}/{repo.name}" if host else repo.name


def with_last_run(policies):
    """``policies`` as a list, each with its newest run (``last_run``, None if it never ran)
    and what that run freed or would free in words (``last_run.freed``, ``freed_text``)."""
    policies = list(policies)
    found = runs.last_runs([p.pk for p in policies])
    outcomes.with_outcomes(found.values())
    for policy in policies:
        policy.last_run = found.get(policy.pk)
        if policy.last_run:
            policy.last_run.freed = freed_text(policy.last_run)
    return policies


def freed_text(run):
    """What a run freed, or would free, in words, for the tables that list runs; None when
    there is nothing to say (running, failed before any job). ``run`` is loaded with
    runs.with_reclaim and outcomes.with_outcomes: a run whose plans became deletion jobs
    (at once, on Delete forever, or on Confirm and delete for what the brake stopped) says
    what its jobs freed; a run that deleted nothing says what it would free, or why
    nothing."""
    Status = PolicyRun.Status
    held = getattr(run, "braked_reclaim_bytes", None)
    brake = (f"; the brake holds back {human_size(held)}"
             if held and run.brake_confirmed_at is None else "")
    outcome = getattr(run, "outcome", None)
    if outcome is not None:
        freed = human_size(outcome.freed_bytes + outcome.planned_bytes)
        return (f"freed {freed}" if outcome.finished else f"deleting, {freed} planned") + brake
    would = run.reclaim_bytes
    if run.status in (Status.RUNNING, Status.FAILED) or would is None:
        return None
    if run.status == Status.UNCONFIRMED:
        return f"nothing: not confirmed (would have freed {human_size(would)})"
    if run.dry_run or run.status == Status.AWAITING:
        return f"would free {human_size(would)}{brake}"
    return f"nothing deleted{brake}"  # (nothing went, or only what the brake stopped)


def deleted_text(outcome) -> str:
    """What a run's deletion jobs deleted and freed, in words (an outcomes.JobsOutcome)."""
    deleted = counted(outcome.items, outcome.children, outcome.attached)
    jobs = plural(outcome.jobs, "deletion job")
    if not outcome.finished:
        return (f"{deleted} so far: {outcome.unfinished:,} of its {jobs} still "
                f"deleting, whose plans free {human_size(outcome.planned_bytes)}"
                + (f"; {human_size(outcome.freed_bytes)} freed" if outcome.freed_bytes else ""))
    freed = human_size(outcome.freed_bytes + outcome.planned_bytes)
    return f"{deleted}, freeing {freed}, by its {jobs}"
