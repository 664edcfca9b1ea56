"""Backfill "last pulled" (and "last pushed") from access logs: ``import_pulls``.

Lines are streamed (plain or gzip, "-" for standard input) and applied in chunks of CHUNK_LINES,
so memory does not grow with the log. What counts is what notifications count: a GET of a
manifest answered 2xx (a HEAD only with HUBMGR_COUNT_HEAD_PULLS), never hubmgr's own
User-Agent; a PUT of a manifest answered 201 is a push. A reference by digest is exact; one by
tag is resolved to the digest the tag named at that time (TagHistory), else to the tag's
current digest ("assumed current"). Only repositories and manifests the inventory knows are
touched (a sync first makes them known); times only move forward, so importing a log twice
changes nothing.

Pushes. The log does not say which digest a PUT by tag stored: the last PUT of each tag is
taken to have stored the tag's current digest when no later push of that tag is recorded,
and is recorded in the tag history (source access_log); earlier PUTs of the tag only count
for the repository's last push. A push from the log gives "last pushed" (source access_log)
where it is later; a time from a push event gives way only to a log push more than PUSH_SLACK
later (the same push's log line is written just after its event).

The observation window (``--complete``). A log is taken to have seen every request only over
its coverage: the stretches where no two consecutive manifest requests (of any method or
status) are more than ``max_gap`` apart (MAX_GAP by default). The window moves back to the
start of the stretch that reaches it, the log and the window joined: the current window start,
or now where there is none, must be within ``max_gap`` of the log. It never moves back past
the first time hubmgr knows the registry existed (``coverage.first_known``), nor forward.

Text. A log in UTF-16 or UTF-32, or binary data, is refused with a message naming the file
(LogError); so is a non-empty file in which no line is a manifest request. A time past now
plus ``accesslog.CLOCK_SKEW`` is counted unparseable and never applied.
"""

import bisect
import gzip
import io
import re
import sys
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from hubmgr.registry import names

from ..catalog.store import bump_version, chunks, note_activity
from ..models import Manifest, Registry, Repository, Tag, TagHistory
from . import coverage, taghistory
from .accesslog import FUTURE, UNPARSEABLE, not_text, parse_line
from .notifications import OUR_AGENT

CHUNK_LINES = 50_000
BLOCK = 1 << 20
MAX_SAMPLES = 5
MAX_NAMES_CACHED = 100_000
PUSH_SLACK = timedelta(seconds=10)
WHOLE_SECOND = timedelta(microseconds=999_999)
OTHER_COMPRESSION = ((re.compile(rb"BZh[1-9]1AY&SY"), "bzip2", "bzcat"),
                     (re.compile(rb"\xfd7zXZ\x00"), "xz", "xzcat"),
                     (re.compile(rb"\x28\xb5\x2f\xfd"), "zstd", "zstdcat"))
# The longest time without a manifest request that a log is still taken to cover (--complete;
# --max-gap). A day: a registry in use is asked for a manifest more often than that.
MAX_GAP = timedelta(hours=24)
MAX_STRETCHES = 10_000  # beyond that the earliest are forgotten (the window moves less)
SNIFF = 1 << 16  # bytes of a log's start looked at for its encoding


class LogError(Exception):
    """A problem a person can act on (file missing, not readable, truncated gzip)."""


@dataclass
class Summary:
    lines: int = 0
    pulls: int = 0  # lines that count as pulls
    applied: int = 0  # pulls resolved to a manifest hubmgr knows
    by_digest: int = 0
    from_history: int = 0  # pulls by tag, resolved from the tag history
    assumed_current: int = 0  # pulls by tag, resolved to the tag's current digest
    unknown_manifest: int = 0  # pulls of a digest or tag the inventory does not hold
    pushes: int = 0
    pushes_applied: int = 0
    unknown_repository_lines: int = 0
    unknown_repositories: list = field(default_factory=list)  # the first few names
    unparseable: int = 0
    future: int = 0  # of the unparseable: dated past now + accesslog.CLOCK_SKEW
    samples: list = field(default_factory=list)  # the first few unparseable lines
    requests: int = 0  # manifest requests read (any method or status)
    manifests_updated: int = 0  # rows whose last pulled or pushed moved
    first: object = None  # the earliest time of a manifest request read
    last: object = None
    # The log's coverage (see the module's docstring): {"max_gap_hours", "gaps" (how many
    # longer than that), "last_gap": [from, to] or None, "stretch_from": the start of the
    # stretch ending at the last request}; times as ISO 8601.
    coverage: dict = field(default_factory=dict)
    # What became of the window: {"action": "moved", "not moved", "set", or None (not asked),
    # "from", "to": ISO 8601 or None, "reason": a sentence}.
    window: dict = field(default_factory=lambda: {"action": None, "from": None, "to": None,
                                                  "reason": ""})
    window_moved: bool = False
    errors: list = field(default_factory=list)

    def as_json(self):
        data = {k: v for k, v in self.__dict__.items()}
        for key in ("first", "last"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


def _iso(when):
    return when.isoformat() if when else None


def _hours(delta):
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h" if hours < 72 else f"{hours / 24:.1f} days"


class Stretches:
    """The times a log covers: sorted, disjoint [first, last] stretches of request times in
    which no two consecutive times are more than ``gap`` apart. Times may come in any order
    (several files, rotated logs); memory is bounded by the number of stretches."""

    def __init__(self, gap):
        self.gap = gap
        self.items = []  # [[first, last], ...], sorted, more than gap apart

    def add(self, when):
        items = self.items
        if items:
            last = items[-1]
            if last[0] <= when <= last[1]:
                return
            if last[1] < when <= last[1] + self.gap:
                last[1] = when
                return
        i = bisect.bisect_right(items, when, key=lambda item: item[0])
        before = items[i - 1] if i else None
        after = items[i] if i < len(items) else None
        joins_before = before is not None and when <= before[1] + self.gap
        joins_after = after is not None and after[0] - self.gap <= when
        if joins_before and joins_after:
            before[1] = after[1]
            del items[i]
        elif joins_before:
            before[1] = max(before[1], when)
        elif joins_after:
            after[0] = when
        else:
            items.insert(i, [when, when])
            if len(items) > MAX_STRETCHES:
                del items[0]  # a smaller coverage than the truth: the window moves less

    def reaching(self, anchor):
        """The earliest time from which the stretches and [anchor, ...) leave no gap."""
        start = anchor
        for first, last in reversed(self.items):
            if first >= start:
                continue
            if last + self.gap < start:
                break
            start = first
        return start

    def report(self):
        items = self.items
        return {"max_gap_hours": self.gap.total_seconds() / 3600, "gaps": max(len(items) - 1, 0),
                "last_gap": [_iso(items[-2][1]), _iso(items[-1][0])] if len(items) > 1
                else None,
                "stretch_from": _iso(items[-1][0]) if items else None}


def choose_registry(name=None) -> Registry:
    from ..registries import default_registry

    if name:
        try:
            return Registry.objects.get(name=name)
        except Registry.DoesNotExist:
            raise LogError(f"no registry named {names.shown(name)}") from None
    registries = list(Registry.objects.all()[:2])
    if len(registries) > 1:
        raise LogError("several registries are known: choose one with --registry NAME")
    return registries[0] if registries else default_registry()


def check_readable(paths):
    """Fail early, before any work, on a file that cannot be opened or is not text."""
    for path in paths:
        if path != "-":
            open_log(path)[1].close()


def open_log(path):
    """A binary stream of the log's text: gzip is recognised by its magic bytes."""
    try:
        raw = sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as exc:
        raise LogError(f"{path}: {exc.strerror or exc}") from None
    stream = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
    try:
        magic = stream.peek(2)[:2]
    except OSError as exc:
        raise LogError(f"{path}: {exc.strerror or exc}") from None
    if magic == b"\x1f\x8b":
        stream = gzip.GzipFile(fileobj=stream, mode="rb")
    head = b"" if magic == b"\x1f\x8b" else stream.peek(10)[:10]
    for signature, kind, tool in OTHER_COMPRESSION:
        if signature.match(head):
            if raw is not sys.stdin.buffer:
                raw.close()
            raise LogError(f"{path}: compressed with {kind}, which import_pulls does not read: "
                           f"{tool} {'' if path == '-' else path + ' '}| import_pulls -")
    try:
        problem = not_text(stream.peek(SNIFF)[:SNIFF], path)
    except (EOFError, OSError, zlib.error):
        problem = None  # a damaged gzip file: reading it says so
    if problem:
        if raw is not sys.stdin.buffer:
            raw.close()
        raise LogError(f"{path}: {problem}")
    return stream, raw


def read_lines(stream, summary, progress=None):
    """Lines as bytes, each at most MAX_LINE long: a longer one is skipped (and counted
    unparseable) without being held whole."""
    from .accesslog import MAX_LINE

    rest, skipping = b"", False
    while True:
        block = stream.read(BLOCK)
        if progress:
            progress()
        if not block:
            break
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        if skipping:
            if parts:
                parts[0], skipping = None, False
            else:
                rest = b""
                continue
        for line in parts:
            if line is not None:
                yield line
        if len(rest) > MAX_LINE:
            _unparseable(summary, rest[:200])
            summary.lines += 1
            rest, skipping = b"", True
    if rest and not skipping:
        yield rest


def _unparseable(summary, line):
    summary.unparseable += 1
    if len(summary.samples) < MAX_SAMPLES:
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line)
        summary.samples.append(names.clean(text, 200))


class Importer:
    """Feed it lines (or run it on files); it applies them a chunk at a time."""

    def __init__(self, registry, complete=False, max_gap=MAX_GAP):
        self.registry = registry
        self.complete = complete
        self.summary = Summary()
        self.stretches = Stretches(max_gap)
        self.text_seen = False  # a line other than whitespace (in the current file)
        self.count_head = settings.COUNT_HEAD_PULLS
        self.repos = {}  # name -> id or None (unknown)
        self.chunk = []  # (kind, name, reference, time)
        self.tag_pushes = {}  # (repository id, tag) -> latest PUT time

    def feed(self, line):
        summary = self.summary
        summary.lines += 1
        found = parse_line(line)
        if found is None or found is UNPARSEABLE or found is FUTURE:
            if not self.text_seen and line.strip():
                self.text_seen = True
            if found is not None:
                _unparseable(summary, line[:200])
                summary.future += found is FUTURE
            return
        when, method, name, reference, status, agent = found
        summary.requests += 1
        self.stretches.add(when)
        if summary.first is None or when < summary.first:
            summary.first = when
        if summary.last is None or when > summary.last:
            summary.last = when
        if method == "PUT":
            if status != 201:
                return
            summary.pushes += 1
            kind = "push"
        elif 200 <= status < 300 and (method == "GET" or method == "HEAD" and self.count_head) \
                and not agent.startswith(OUR_AGENT):
            summary.pulls += 1
            kind = "pull"
        else:
            return
        self.chunk.append((kind, name, reference, when))
        if len(self.chunk) >= CHUNK_LINES:
            self.flush()

    def run(self, paths, progress=None):
        tick = (lambda: progress(self.summary)) if progress else None
        for path in paths:
            try:
                stream, raw = open_log(path)
            except LogError as exc:
                self.summary.errors.append(str(exc))
                continue
            requests, lines = self.summary.requests, self.summary.lines
            unparseable, self.text_seen = self.summary.unparseable, False
            try:
                for line in read_lines(stream, self.summary, tick):
                    self.feed(line)
            except (EOFError, OSError, zlib.error, gzip.BadGzipFile) as exc:
                reason = "the gzip file is truncated" if isinstance(exc, EOFError) else \
                    f"{type(exc).__name__}: {names.clean(exc, 200)}"
                self.summary.errors.append(f"{path}: {reason}; what was read before is applied")
            else:
                if self.summary.requests == requests and (
                        self.text_seen or self.summary.unparseable > unparseable):
                    self.summary.errors.append(_no_request(path, self.summary.lines - lines))
            finally:
                if raw is not sys.stdin.buffer:
                    raw.close()
        self.flush()
        self.finish()
        return self.summary

    # ---- applying --------------------------------------------------------------------------
    def _repository_ids(self, names_):
        wanted = [n for n in names_ if n not in self.repos]
        if len(self.repos) + len(wanted) > MAX_NAMES_CACHED:
            self.repos = {}
            wanted = list(names_)
        for chunk in chunks(wanted):
            found = dict(Repository.objects.filter(registry=self.registry, name__in=chunk)
                         .values_list("name", "id"))
            for name in chunk:
                self.repos[name] = found.get(name)
        return {n: self.repos[n] for n in names_}

    def flush(self):
        chunk, self.chunk = self.chunk, []
        if not chunk:
            return
        summary = self.summary
        by_repo = defaultdict(list)
        for entry in chunk:
            by_repo[entry[1]].append(entry)
        ids = self._repository_ids(list(by_repo))
        pulled, pushed = {}, {}
        activity = {}
        for name, entries in by_repo.items():
            repo_id = ids[name]
            if repo_id is None:
                summary.unknown_repository_lines += len(entries)
                if len(summary.unknown_repositories) < MAX_SAMPLES \
                        and name not in summary.unknown_repositories:
                    summary.unknown_repositories.append(name)
                continue
            self._resolve(repo_id, entries, pulled, pushed, activity)
        with transaction.atomic():
            moved = _move_pulls(pulled) + _move_pushes(pushed)
            summary.manifests_updated += moved
            for repo_id, (push_at, pull_at) in activity.items():
                note_activity(Repository(pk=repo_id), pushed=push_at, pulled=pull_at)
            if moved:  # open tables of the chunk's repositories reload (web.live)
                Repository.objects.filter(pk__in=list(activity)).update(
                    version=F("version") + 1)

    def _resolve(self, repo_id, entries, pulled, pushed, activity):
        summary = self.summary
        digests, tags = set(), set()
        first = last = entries[0][3]
        for kind, _, reference, when in entries:
            if when < first:
                first = when
            elif when > last:
                last = when
            # The parser let through only valid references: a tag has no ":".
            if ":" in reference:
                digests.add(reference)
            else:
                tags.add(reference)
                if kind == "push":
                    key = (repo_id, reference)
                    self.tag_pushes[key] = _later(self.tag_pushes.get(key), when)
        rows = {}
        for chunk in chunks(digests):
            rows.update(Manifest.objects.filter(repository_id=repo_id, digest__in=chunk)
                        .values_list("digest", "id"))
        current = {}
        for chunk in chunks(tags):
            current.update((t, (m, d)) for t, m, d in Tag.objects.filter(
                repository_id=repo_id, name__in=chunk)
                .values_list("name", "manifest_id", "manifest__digest"))
        timeline = taghistory.Timeline(repo_id, tags, (first, last + WHOLE_SECOND)) \
            if tags else None
        if timeline and timeline.points:
            for chunk in chunks({d for _, ds in timeline.points.items() for _, d in ds[1]}
                                 - set(rows)):
                rows.update(Manifest.objects.filter(repository_id=repo_id, digest__in=chunk)
                            .values_list("digest", "id"))
        push_at = pull_at = None
        for kind, _, reference, when in entries:
            if kind == "push":
                push_at = when if push_at is None or when > push_at else push_at
                if reference in digests and reference in rows:
                    manifest_id = rows[reference]
                    pushed[manifest_id] = _later(pushed.get(manifest_id), when)
                    summary.pushes_applied += 1
                continue
            pull_at = when if pull_at is None or when > pull_at else pull_at
            if reference in digests:
                manifest_id = rows.get(reference)
                if manifest_id is not None:
                    summary.by_digest += 1
            else:
                # A time in whole seconds (the combined format) is looked up at the end of
                # its second: a pull in the second a tag moved most likely followed the push.
                at = when if when.microsecond else when + WHOLE_SECOND
                digest = timeline.digest_at(reference, at) if timeline else None
                if digest is not None:
                    manifest_id = rows.get(digest)
                    summary.from_history += manifest_id is not None
                else:
                    manifest_id = current.get(reference, (None,))[0]
                    summary.assumed_current += manifest_id is not None
            if manifest_id is None:
                summary.unknown_manifest += 1
                continue
            summary.applied += 1
            pulled[manifest_id] = _later(pulled.get(manifest_id), when)
        old_push, old_pull = activity.get(repo_id, (None, None))
        activity[repo_id] = (_later(old_push, push_at), _later(old_pull, pull_at))

    def finish(self):
        """Pushes by tag (see the module's docstring) and, with --complete, the window."""
        by_repo = defaultdict(dict)
        for (repo_id, tag), when in self.tag_pushes.items():
            by_repo[repo_id][tag] = when
        for repo_id, tags in by_repo.items():
            timeline = taghistory.Timeline(repo_id, tags)
            current = {}
            for chunk in chunks(tags):
                current.update((t, (m, d)) for t, m, d in Tag.objects.filter(
                    repository_id=repo_id, name__in=chunk)
                    .values_list("name", "manifest_id", "manifest__digest"))
            points, pushed = [], {}
            for tag, when in tags.items():
                if tag not in current or timeline.known_after(tag, when):
                    continue
                manifest_id, digest = current[tag]
                points.append((tag, digest, when))
                pushed[manifest_id] = max(pushed.get(manifest_id, when), when)
                self.summary.pushes_applied += 1
            with transaction.atomic():
                moved = _move_pushes(pushed)
                self.summary.manifests_updated += moved
                taghistory.record(repo_id, points, TagHistory.Source.ACCESS_LOG)
                if moved:
                    bump_version(Repository(pk=repo_id))
        self.summary.coverage = self.stretches.report()
        if self.complete:
            self._complete_window()

    def _complete_window(self):
        """--complete: move the window back as far as the log's coverage and hubmgr's own
        knowledge of the registry allow (see the module's docstring), and say why."""
        summary, gap = self.summary, self.stretches.gap
        window = summary.window
        window["action"] = "not moved"
        current = Registry.objects.filter(pk=self.registry.pk).values_list(
            "pulls_observed_since", flat=True).first()
        window["from"] = window["to"] = _iso(current)
        if summary.errors:
            window["reason"] = "a file could not be read to its end, so it covers nothing"
            return
        if not self.stretches.items:
            window["reason"] = "no manifest request was read"
            return
        anchor = current or timezone.now()
        anchor_text = f"the window's start ({_iso(current)})" if current else "now"
        start = self.stretches.reaching(anchor)
        if start >= anchor:
            before = [last for _, last in self.stretches.items if last < anchor]
            window["reason"] = (
                f"the log's last request before {anchor_text} is at {_iso(before[-1])}, more "
                f"than the {_hours(gap)} allowed between requests (--max-gap) earlier: "
                f"pulls in between were not seen" if before else
                f"the log holds no request before {anchor_text}")
            return
        floor = coverage.first_known(self.registry)
        if floor is None:
            window["reason"] = ("hubmgr knows no manifest of this registry yet (run sync "
                                "first), so nothing shows it existed then")
            return
        target = max(start, floor)
        limited = (f"; limited to the first time hubmgr knows the registry existed, "
                   f"{_iso(floor)} (its first manifest seen or push event)"
                   if floor > start else "")
        if current is not None and target >= current:
            window["reason"] = (f"the log covers back to {_iso(start)}{limited}, which is not "
                                f"before the window's start")
            return
        if not coverage.move_back(self.registry, target):
            window["reason"] = "the window was moved back meanwhile (a notification)"
            return
        summary.window_moved = True
        window.update(action="moved", to=_iso(target),
                      reason=f"the log covers {_iso(start)} to {anchor_text} with no gap over "
                             f"{_hours(gap)}{limited}")


def _no_request(path, lines):
    return (f"{path}: none of its {lines:,} lines is a manifest request that import_pulls "
            f"reads (the registry's log, text or JSON formatter at log.level info, or the "
            f"combined format of nginx, Apache, Traefik or HAProxy); is this the access log?")


def _later(a, b):
    if a is None:
        return b
    return a if b is None or a >= b else b


# Forward-only updates. {t} is the new time, {slack} that time less PUSH_SLACK.
_PULL_SET, _PULL_WHERE = "last_pulled = {t}", "(last_pulled IS NULL OR last_pulled < {t})"
_PUSH_SET = "last_pushed = {t}, last_pushed_source = 'access_log'"
_PUSH_WHERE = ("(last_pushed IS NULL OR last_pushed_source NOT IN ('push_event', 'access_log') "
               "OR (last_pushed_source = 'access_log' AND last_pushed < {t}) "
               "OR (last_pushed_source = 'push_event' AND last_pushed < {slack}))")


def _move_pulls(times) -> int:
    """Each manifest's "last pulled" moves forward (never back): the rows that moved."""
    return _move("last_pulled", _PULL_SET, _PULL_WHERE, times)


def _move_pushes(times) -> int:
    """Pushes found in the log: "last pushed" moves forward (see the module's docstring)."""
    return _move("last_pushed", _PUSH_SET, _PUSH_WHERE, times)


def _move(column, assign, condition, times) -> int:
    """UPDATE manifests {id: time} where ``condition`` holds: one statement on PostgreSQL
    (the pairs as two arrays), one prepared statement for all rows elsewhere."""
    if not times:
        return 0
    table = connection.ops.quote_name(Manifest._meta.db_table)
    pairs = sorted(times.items())
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            slack = f"(v.t - interval '{PUSH_SLACK.total_seconds():.0f} seconds')"
            cursor.execute(
                f"UPDATE {table} SET {assign.format(t='v.t')} FROM unnest(%s::bigint[], "
                f"%s::timestamptz[]) AS v(id, t) WHERE {table}.id = v.id AND "
                f"{condition.format(t='v.t', slack=slack)}",
                [[pk for pk, _ in pairs], [when for _, when in pairs]])
        else:
            field = Manifest._meta.get_field(column)
            rows = []
            for manifest_id, when in pairs:
                value = field.get_db_prep_save(when, connection)
                rows.append({"id": manifest_id, "t": value,
                             "slack": field.get_db_prep_save(when - PUSH_SLACK, connection)})
            cursor.executemany(
                f"UPDATE {table} SET {assign.format(t='%(t)s')} WHERE id = %(id)s AND "
                f"{condition.format(t='%(t)s', slack='%(slack)s')}", rows)
        return max(cursor.rowcount, 0)
