import argparse
import json
import re
import sys
from datetime import datetime, timedelta, timezone

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone as djtimezone
from tqdm import tqdm

from hubmgr.inventory.pulls import coverage
from hubmgr.inventory.pulls.accesslog import CLOCK_SKEW
from hubmgr.inventory.pulls.pullimport import (
    MAX_GAP, MAX_SAMPLES, Importer, LogError, Summary, check_readable, choose_registry)
from hubmgr.units import plural

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([mhd]?)")
_UNITS = {"m": "minutes", "h": "hours", "": "hours", "d": "days"}


def duration(text):
    """``90m``, ``36h`` (or ``36``), ``3d``."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 36h or 3d")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def past_time(text):
    """An ISO 8601 time (UTC when it names no offset) that is not in the future."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time such as 2026-10-01T00:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if when > djtimezone.now():
        raise argparse.ArgumentTypeError(
            f"{text} is in the future: the window's start must be a time already passed")
    return when


class Command(BaseCommand):
    help = ("Backfill last pulled (and last pushed) from registry or proxy access logs: the "
            "registry's own log (text or JSON) or the combined log format; plain or gzip, "
            "- for standard input. Also sets the registry's pull observation window.")

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="*", metavar="FILE")
        parser.add_argument("--registry", help="the registry's name (when hubmgr knows several)")
        window = parser.add_mutually_exclusive_group()
        window.add_argument("--complete", action="store_true",
                            help="the logs hold every request from their first line on: the "
                                 "observation window moves back as far as they cover without "
                                 "a gap longer than --max-gap, joined to the current window "
                                 "(or now), and never before hubmgr first knew the registry")
        window.add_argument("--since", type=past_time, metavar="ISO-TIME",
                            help="set the observation window's start to this time outright "
                                 "(UTC unless it names an offset; not in the future); "
                                 "logged as an audit line")
        window.add_argument("--reset-window", action="store_true",
                            help="set the observation window's start to now; logged as an "
                                 "audit line")
        parser.add_argument("--max-gap", type=duration, default=MAX_GAP, metavar="DURATION",
                            help="with --complete: the longest time without a manifest request "
                                 "that the logs still cover, e.g. 36h or 3d (default: "
                                 f"{MAX_GAP.total_seconds() / 3600:g}h)")
        parser.add_argument("--json", action="store_true", help="the summary as JSON")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, files, registry=None, complete=False, since=None, reset_window=False,
               max_gap=MAX_GAP, json=False, no_progress=False, **options):
        if not files and not (since or reset_window):
            raise CommandError("give the access log FILE... to import (- for standard input), "
                               "or --since ISO-TIME or --reset-window to set the window")
        try:
            check_readable(files)  # before anything else, the database included
            chosen = choose_registry(registry)
            summary = Summary()
            if files:
                importer = Importer(chosen, complete=complete, max_gap=max_gap)
                bar = tqdm(total=None, unit=" lines", unit_scale=True, desc="import",
                           disable=no_progress, file=sys.stderr)
                try:
                    summary = importer.run(files,
                                           progress=lambda s: bar.update(s.lines - bar.n))
                finally:
                    bar.close()
        except LogError as exc:
            raise CommandError(str(exc)) from None
        if since or reset_window:
            _set_window(chosen, summary, since, "--since" if since else "--reset-window")
        self.stdout.write(_json(summary) if json else _text(summary, bool(files)))
        if summary.errors:
            raise CommandError("; ".join(summary.errors))


def _set_window(registry, summary, since, how):
    window = summary.window
    if summary.errors:
        current = registry.__class__.objects.filter(pk=registry.pk).values_list(
            "pulls_observed_since", flat=True).first()
        window.update(action="not moved", reason="a file could not be read to its end",
                      **{"from": current and current.isoformat()})
        return
    try:
        before = coverage.set_window(registry, since or djtimezone.now(), how)
    except ValueError as exc:  # in the future by now: cannot happen after past_time's check
        raise CommandError(f"{how}: {exc}") from None
    window.update(action="set", to=registry.pulls_observed_since.isoformat(),
                  reason=f"set by the operator ({how}; recorded in the log)",
                  **{"from": before.isoformat() if before else None})


def _json(summary):
    return json.dumps(summary.as_json(), indent=2)


def _text(s, imported=True):
    lines = [] if not imported else [
        f"Lines read: {s.lines:,}",
        f"Pulls found: {s.pulls:,}; applied: {s.applied:,} (by digest {s.by_digest:,}, by "
        f"tag resolved from history {s.from_history:,}, by tag assumed current "
        f"{s.assumed_current:,}); not in the inventory: {s.unknown_manifest:,}",
        f"Pushes found: {s.pushes:,}; applied: {s.pushes_applied:,}",
        f"Manifests updated: {s.manifests_updated:,}",
        f"Unknown repositories: {plural(s.unknown_repository_lines, 'line')}"
        + (f" ({', '.join(s.unknown_repositories)}"
           f"{', …' if len(s.unknown_repositories) >= MAX_SAMPLES else ''})"
           if s.unknown_repositories else ""),
        f"Unparseable lines: {s.unparseable:,}"
        + (f" ({s.future:,} dated more than {CLOCK_SKEW.total_seconds() / 60:g} minutes in "
           f"the future, not applied)" if s.future else ""),
    ]
    lines += [f"  {sample}" for sample in s.samples]
    if s.first:
        lines.append(f"Requests from {s.first.isoformat()} to {s.last.isoformat()}")
    cover = s.coverage
    if cover.get("gaps"):
        frm, to = cover["last_gap"]
        lines.append(f"Gaps over {cover['max_gap_hours']:g} h between requests: "
                     f"{cover['gaps']:,}; the last from {frm} to {to}")
    window = s.window
    if window["action"] == "moved":
        lines.append(f"Pull window moved from {window['from'] or 'none'} to {window['to']} "
                     f"(--complete): {window['reason']}")
    elif window["action"] == "set":
        lines.append(f"Pull window set from {window['from'] or 'none'} to {window['to']}: "
                     f"{window['reason']}")
    elif window["action"] == "not moved":
        lines.append(f"Pull window not moved (still {window['from'] or 'none'}): "
                     f"{window['reason']}")
    return "\n".join(lines)
