"""Manifest requests read from access log lines: plain functions, no models.

Three formats, recognised per line:
- the distribution registry's own log, text formatter (logrus ``key=value`` pairs) and JSON
  formatter (one object per line): its ``response completed`` entries;
- the combined log format that nginx, Apache, Traefik and HAProxy write in front of a registry.

``parse_line`` answers a ``Request`` for a request of ``/v2/<name>/manifests/<reference>``,
None for a line that is something else (a blob request, another message of the registry),
UNPARSEABLE for a line that names a manifest but cannot be read (or is longer than MAX_LINE, or
is dated before 1970), or FUTURE for a manifest request dated more than CLOCK_SKEW after now
(a wrong clock: such a time must never become a "last pulled"). No input makes it raise: a log
line can contain anything.

``not_text`` tells, from a file's first bytes, a log that is not UTF-8 or latin-1 text (UTF-16,
UTF-32, binary data), which would otherwise read as lines that are all "something else".
"""

import json
import re
import time
from datetime import datetime, timedelta, timezone
from typing import NamedTuple
from urllib.parse import unquote

from hubmgr.registry import names
from hubmgr.registry.manifests import EARLIEST, parse_time

MAX_LINE = 16_384  # characters (bytes before decoding); a registry's lines are ~1 KiB
MARKER = "/manifests/"
UNPARSEABLE = "unparseable"
FUTURE = "future"  # a manifest request dated past now + CLOCK_SKEW; unparseable too
# How far ahead of this host's clock a log's clock may run. "Now" is read every NOW_EVERY
# seconds, so a time up to CLOCK_SKEW - NOW_EVERY ahead is always accepted.
CLOCK_SKEW = timedelta(minutes=5)
NOW_EVERY = 10
BOMS = ((b"\xff\xfe\x00\x00", "UTF-32LE"), (b"\x00\x00\xfe\xff", "UTF-32BE"),
        (b"\xff\xfe", "UTF-16LE"), (b"\xfe\xff", "UTF-16BE"))
# Control bytes that no text log holds (tab, newlines, form feed and escape are allowed).
CONTROL = bytes([*range(9), *range(14, 27), *range(28, 32), 127])
MAX_CONTROL_SHARE = 0.05


class Request(NamedTuple):
    time: datetime
    method: str
    name: str
    reference: str
    status: int
    useragent: str


_URI = re.compile(r"/v2/(.+)/manifests/([^/]+)")
# Combined: host ident user [time] "METHOD URI PROTO" status bytes "referer" "agent" [...]
# A quoted field may hold escaped quotes (Apache writes \", nginx \x22).
_QUOTED = r'[^"\\]*(?:\\.[^"\\]*)*'
_COMBINED = re.compile(
    rf'\S+ \S+ \S+ \[([^\]]{{1,40}})\] "(\S{{1,16}}) (\S+)(?: {_QUOTED})?" (\d{{3}}) \S+ '
    rf'"{_QUOTED}" "({_QUOTED})"')
# logrus text: key=value or key="quoted \" value"; quoted values are consumed whole, so a
# "key=" inside a quoted value (a user agent can say anything) is never taken for a key.
_PAIR = re.compile(r'(?:^| )([\w.]+)=("[^"\\]*(?:\\.[^"\\]*)*"|[^ "]*)')
_MONTHS = {m: n for n, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_UNESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)")


def not_text(head: bytes, path="FILE") -> str | None:
    """What keeps the start of a log from being read as UTF-8 or latin-1 text, or None."""
    encoding = next((name for bom, name in BOMS if head.startswith(bom)), None)
    if encoding is None and head.count(0) >= len(head) // 4 >= 2:
        encoding = _wide_encoding(head)
    if encoding:
        return (f"the file is {encoding[:6]} text ({encoding}), which import_pulls does not "
                f"read; convert it to UTF-8 first: iconv -f {encoding} -t UTF-8 "
                f"{'' if path == '-' else path + ' '}| manage.py import_pulls -")
    if len(head) - len(head.translate(None, CONTROL)) > len(head) * MAX_CONTROL_SHARE:
        return ("not a text log: its start is binary data (control bytes or NUL); give a "
                "registry or proxy access log, plain text or gzip")
    return None


def _wide_encoding(head):
    """UTF-16 or UTF-32 without a byte order mark: ASCII text with NULs between its bytes."""
    def zeros(part):
        return part.count(0) >= len(part) * 0.9 if part else False

    n = len(head) - len(head) % 4
    lanes = [head[i:n:4] for i in range(4)]
    if zeros(lanes[1]) and zeros(lanes[2]) and zeros(lanes[3]) and not zeros(lanes[0]):
        return "UTF-32LE"
    if zeros(lanes[0]) and zeros(lanes[1]) and zeros(lanes[2]) and not zeros(lanes[3]):
        return "UTF-32BE"
    if zeros(head[1:n:2]) and not zeros(head[0:n:2]):
        return "UTF-16LE"
    if zeros(head[0:n:2]) and not zeros(head[1:n:2]):
        return "UTF-16BE"
    return None


def parse_line(line) -> Request | str | None:
    """One log line (str or bytes, with or without its newline)."""
    try:
        if type(line) is not str:
            if not isinstance(line, (bytes, bytearray)):
                return UNPARSEABLE
            if len(line) > MAX_LINE:
                return UNPARSEABLE
            if b"/manifests/" not in line:
                return None
            line = line.decode("utf-8", "replace")
        elif len(line) > MAX_LINE:
            return UNPARSEABLE
        elif MARKER not in line:
            return None
        if line[:1].isspace() or line[:1] == "\ufeff":  # a byte order mark starts a file
            line = line.lstrip().lstrip("\ufeff")
        if line[:1] == "{":
            return _parse_json(line)
        if line[:5] == "time=":
            return _parse_text(line)
        found = _parse_combined(line)
        if found is UNPARSEABLE and " msg=" in line:  # text behind a prefix (journald, docker)
            return _parse_text(line)
        return found
    except Exception:  # noqa: BLE001 - hostile input is normal; nothing escapes
        return UNPARSEABLE


def _parse_json(line):
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return UNPARSEABLE
    if not isinstance(data, dict):
        return UNPARSEABLE
    msg = data.get("msg")
    if not isinstance(msg, str) or not msg.startswith("response completed"):
        return None  # another message of the registry, e.g. at debug level
    return _request(_time(data.get("time")), data.get("http.request.method"),
                    data.get("http.request.uri"), data.get("http.response.status"),
                    data.get("http.request.useragent"))


def _parse_text(line):
    fields = dict(_PAIR.findall(line))
    msg = _value(fields.get("msg"))
    if msg is None:
        return UNPARSEABLE
    if not msg.startswith("response completed"):
        return None
    return _request(_time(_value(fields.get("time"))), _value(fields.get("http.request.method")),
                    _value(fields.get("http.request.uri")),
                    _value(fields.get("http.response.status")),
                    _value(fields.get("http.request.useragent")))


def _value(raw):
    if raw is None or not raw.startswith('"'):
        return raw
    return _unquote(raw[1:-1])


def _time(value):
    """RFC 3339 as the registry writes it (UTC, nanoseconds) quickly, any other through
    parse_time."""
    if isinstance(value, str) and len(value) == 30 and value[19] == "." and value[29] == "Z" \
            and value[10] == "T":
        try:
            return datetime.fromisoformat(value[:26]).replace(tzinfo=timezone.utc)
        except ValueError:
            return None
    return parse_time(value)


def _unquote(text):
    """A Go %q-quoted value's content (logrus quotes with strconv.Quote)."""
    if "\\" not in text:
        return text
    return _UNESCAPE.sub(_unescape_one, text)


def _unescape_one(match):
    code = match.group(1)
    if code.startswith("x") and len(code) == 3:
        return chr(int(code[1:], 16))
    return {"n": "\n", "t": "\t", "r": "\r"}.get(code, code)


def _parse_combined(line):
    match = _COMBINED.match(line)
    if match is None:
        return UNPARSEABLE
    when, method, uri, status, agent = match.groups()
    return _request(_combined_time(when), method, uri, status, _unquote(agent))


_last_time = ["", None]  # consecutive lines of a combined log often share their second


def _combined_time(text):
    """``28/Nov/2026:10:00:00 +0000`` in UTC, or None."""
    if text == _last_time[0]:
        return _last_time[1]
    value = None
    if len(text) == 26 and text[2] == "/" and text[6] == "/" and text[21] in "+-":
        month = _MONTHS.get(text[3:6])
        if month and text[7:11].isdigit() and text[12:14].isdigit() and text[15:17].isdigit() \
                and text[18:20].isdigit() and text[22:26].isdigit() and text[0:2].isdigit():
            offset = timedelta(hours=int(text[22:24]), minutes=int(text[24:26]))
            try:
                value = datetime(int(text[7:11]), month, int(text[0:2]), int(text[12:14]),
                                 int(text[15:17]), int(text[18:20]), tzinfo=timezone.utc)
                value -= offset if text[21] == "+" else -offset
            except (ValueError, OverflowError):
                value = None
    _last_time[0], _last_time[1] = text, value
    return value


_now = [0.0, None]  # (read again after, now + CLOCK_SKEW): datetime.now() is not free


def _horizon():
    """The latest time a log line may carry, "now" read every NOW_EVERY seconds."""
    tick = time.monotonic()
    if tick > _now[0]:
        _now[0], _now[1] = tick + NOW_EVERY, datetime.now(timezone.utc) + CLOCK_SKEW
    return _now[1]


def _request(when, method, uri, status, agent):
    if when is None or not isinstance(method, str) or not isinstance(uri, str):
        return UNPARSEABLE
    if isinstance(status, str) and status.isdigit() and len(status) == 3:
        status = int(status)
    if type(status) is not int or not 100 <= status <= 599:
        return UNPARSEABLE
    target = _targets.get(uri, _targets)
    if target is _targets:  # not seen yet
        if len(_targets) > 100_000:
            _targets.clear()
        target = _targets[uri] = _target(uri)
    if type(target) is not tuple:
        return target
    if when < EARLIEST:
        return UNPARSEABLE
    if when > _horizon():
        return FUTURE
    agent = agent if isinstance(agent, str) else ""
    return Request(when, method.upper()[:16], target[0], target[1], status, agent[:300])


_targets = {}  # uri -> _target(uri); logs ask for the same few manifests again and again


def _target(uri):
    """(name, reference) of a manifest URI, None for another URI, or UNPARSEABLE."""
    path = uri.split("?", 1)[0] if "?" in uri else uri
    path = path.split("#", 1)[0] if "#" in path else path
    if "%" in path:
        path = unquote(path, errors="replace")
    match = _URI.fullmatch(path)
    if match is None:
        return UNPARSEABLE if MARKER in path else None
    name, reference = match.groups()
    if not names.valid_name(name) or not names.valid_reference(reference):
        return UNPARSEABLE
    return name, reference
