"""Manifest requests read from access log lines: plain functions, no models.

Three formats, recognised per line:
- the distribution registry's own log, text formatter (logrus ``key=value`` pairs) and JSON
  formatter (one object per line): its ``response completed`` entries;
- the combined log format that nginx, Apache, Traefik and HAProxy write in front of a registry.

``parse_line`` answers a ``Request`` for a request of ``/v2/<name>/manifests/<reference>``,
None for a line that is something else (a blob request, another message of the registry), or
UNPARSEABLE for a line that names a manifest but cannot be read (or is longer than MAX_LINE).
No input makes it raise: a log line can contain anything.
"""

import json
import re
from datetime import datetime, timedelta, timezone
from typing import NamedTuple
from urllib.parse import unquote

from hubmgr.registry import names
from hubmgr.registry.manifests import parse_time, plausible

MAX_LINE = 16_384  # characters (bytes before decoding); a registry's lines are ~1 KiB
MARKER = "/manifests/"
UNPARSEABLE = "unparseable"


class Request(NamedTuple):
    time: datetime
    method: str
    name: str
    reference: str
    status: int
    useragent: str


_URI = re.compile(r"/v2/(.+)/manifests/([^/]+)")
# Combined: host ident user [time] "METHOD URI PROTO" status bytes "referer" "agent" [...]
_COMBINED = re.compile(
    r'\S+ \S+ \S+ \[([^\]]{1,40})\] "(\S{1,16}) (\S+)[^"]*" (\d{3}) \S+ '
    r'"(?:[^"\\]|\\.)*" "((?:[^"\\]|\\.)*)"')
# logrus text: key=value or key="quoted \" value"; quoted values are consumed whole, so a
# "key=" inside a quoted value (a user agent can say anything) is never taken for a key.
_PAIR = re.compile(r'(?:^| )([\w.]+)=("(?:[^"\\]|\\.)*"|[^ "]*)')
_MONTHS = {m: n for n, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_UNESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)")


def parse_line(line) -> Request | str | None:
    """One log line (str or bytes, with or without its newline)."""
    try:
        if isinstance(line, (bytes, bytearray)):
            if len(line) > MAX_LINE:
                return UNPARSEABLE
            if b"/manifests/" not in line:
                return None
            line = bytes(line).decode("utf-8", "replace")
        elif not isinstance(line, str):
            return UNPARSEABLE
        if len(line) > MAX_LINE:
            return UNPARSEABLE
        if MARKER not in line:
            return None
        line = line.strip()
        if line.startswith("{"):
            return _parse_json(line)
        if line.startswith("time="):
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
    return _request(parse_time(data.get("time")), data.get("http.request.method"),
                    data.get("http.request.uri"), data.get("http.response.status"),
                    data.get("http.request.useragent"))


def _parse_text(line):
    fields = {}
    for key, value in _PAIR.findall(line):
        if value.startswith('"'):
            value = _unquote(value[1:-1])
        fields.setdefault(key, value)
    msg = fields.get("msg")
    if msg is None:
        return UNPARSEABLE
    if not msg.startswith("response completed"):
        return None
    return _request(parse_time(fields.get("time")), fields.get("http.request.method"),
                    fields.get("http.request.uri"), fields.get("http.response.status"),
                    fields.get("http.request.useragent"))


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


def _request(when, method, uri, status, agent):
    if not isinstance(method, str) or not isinstance(uri, str) or not plausible(when):
        return UNPARSEABLE
    if isinstance(status, str) and status.isdigit() and len(status) == 3:
        status = int(status)
    if type(status) is not int or not 100 <= status <= 599:
        return UNPARSEABLE
    path = uri.split("?", 1)[0].split("#", 1)[0]
    if "%" in path:
        path = unquote(path, errors="replace")
    match = _URI.fullmatch(path)
    if match is None:
        return UNPARSEABLE if MARKER in path else None
    name, reference = match.groups()
    if not names.valid_name(name) or not names.valid_reference(reference):
        return UNPARSEABLE
    agent = agent if isinstance(agent, str) else ""
    return Request(when, method.upper()[:16], name, reference, status, agent[:300])
