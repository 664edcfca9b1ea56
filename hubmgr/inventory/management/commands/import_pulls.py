import json
import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from hubmgr.inventory.pullimport import (MAX_SAMPLES, Importer, LogError, check_readable,
                                         choose_registry)


class Command(BaseCommand):
    help = ("Backfill last pulled (and last pushed) from registry or proxy access logs: the "
            "registry's own log (text or JSON) or the combined log format; plain or gzip, "
            "- for standard input.")

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="+", metavar="FILE")
        parser.add_argument("--registry", help="the registry's name (when hubmgr knows several)")
        parser.add_argument("--complete", action="store_true",
                            help="the logs hold every request from their first line on: the "
                                 "observation window moves back to that line's time")
        parser.add_argument("--json", action="store_true", help="the summary as JSON")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, files, registry=None, complete=False, json=False, no_progress=False,
               **options):
        try:
            check_readable(files)
            importer = Importer(choose_registry(registry), complete=complete)
            bar = tqdm(total=None, unit=" lines", unit_scale=True, desc="import",
                       disable=no_progress, file=sys.stderr)
            try:
                summary = importer.run(files, progress=lambda s: bar.update(s.lines - bar.n))
            finally:
                bar.close()
        except LogError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(_json(summary) if json else _text(summary))
        if summary.errors:
            raise CommandError("; ".join(summary.errors))


def _json(summary):
    return json.dumps(summary.as_json(), indent=2)


def _text(s):
    lines = [
        f"Lines read: {s.lines:,}",
        f"Pulls found: {s.pulls:,}; applied: {s.applied:,} (by digest {s.by_digest:,}, by "
        f"tag resolved from history {s.from_history:,}, by tag assumed current "
        f"{s.assumed_current:,}); not in the inventory: {s.unknown_manifest:,}",
        f"Pushes found: {s.pushes:,}; applied: {s.pushes_applied:,}",
        f"Manifests updated: {s.manifests_updated:,}",
        f"Unknown repositories: {s.unknown_repository_lines:,} lines"
        + (f" ({', '.join(s.unknown_repositories)}"
           f"{', …' if len(s.unknown_repositories) >= MAX_SAMPLES else ''})"
           if s.unknown_repositories else ""),
        f"Unparseable lines: {s.unparseable:,}",
    ]
    lines += [f"  {sample}" for sample in s.samples]
    if s.first:
        lines.append(f"Requests from {s.first.isoformat()} to {s.last.isoformat()}")
    if s.window_moved:
        lines.append(f"Pulls observed since {s.first.isoformat()} (--complete)")
    return "\n".join(lines)
