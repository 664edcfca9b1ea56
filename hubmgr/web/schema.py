"""The one check of a JSON API body, made before anything reaches a model or the database.

Each write endpoint declares its body once as a ``Schema`` of fields (``Text``, ``Choice``,
``Integer``, ``Number``, ``Boolean``, ``TimeOfDay``, ``Digests``); ``Schema.parse`` answers
the body's values, converted, or raises ``Invalid`` with a message naming the first wrong
field. Types are strict: a string field takes only a string, an integer field only an integer
(not true or false, nor a number with a fraction), a number field only a finite number. No
string anywhere in the body, keys and nested values included, may hold a NUL character
(PostgreSQL refuses it) or a lone surrogate (no encoding can store it)."""

import math
import re
from dataclasses import dataclass, field
from datetime import time

from hubmgr.registry import names

MAX_INT = 2**31 - 1  # PostgreSQL's integer column: the same bound on both databases


class Invalid(ValueError):
    """A body the schema refuses; the message names the field. (A field's ``check`` raises it
    with what is wrong; the schema adds the field's name.)"""


def storable(text: str) -> bool:
    """False for text that holds a NUL character or a lone surrogate."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _all_storable(value) -> bool:
    """Every string in ``value`` (parsed JSON: lists, dicts and their keys) is storable. A
    loop over a stack, as JSON nests as deep as the parser allows."""
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if not storable(value):
                return False
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return True


def _shown(value) -> str:
    """A value for a message: a container by its kind (its repr may be huge or deep)."""
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "an object"
    return names.shown(value, limit=60)


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Text:
    """A string of at most ``max_length`` characters. ``null``: null is accepted as "" (it
    clears the field). ``lines``: a list of strings is accepted too, joined one a line."""

    max_length: int
    null: bool = False
    lines: bool = False

    def check(self, value):
        if value is None and self.null:
            return ""
        if self.lines and isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = "\n".join(value)
        if not isinstance(value, str):
            kinds = "a string" + (" or a list of strings" if self.lines else "")
            raise Invalid(f"must be {kinds}{' or null' if self.null else ''}, "
                          f"not {_shown(value)}")
        if len(value) > self.max_length:
            raise Invalid(f"has {len(value)} characters; at most {self.max_length} are allowed")
        return value


@dataclass(frozen=True)
class Choice:
    choices: tuple

    def check(self, value):
        if not isinstance(value, str) or value not in self.choices:
            raise Invalid(f"must be one of {', '.join(map(repr, self.choices))}, "
                          f"not {_shown(value)}")
        return value


@dataclass(frozen=True)
class Integer:
    """An integer from ``low`` to ``high``; a number without a fraction (5.0) counts as one."""

    low: int
    high: int
    null: bool = True

    def check(self, value):
        if value is None and self.null:
            return None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not _is_integer(value) or not self.low <= value <= self.high:
            raise Invalid(f"must be an integer from {self.low} to {self.high}"
                          f"{' or null' if self.null else ''}, not {_shown(value)}")
        return value


@dataclass(frozen=True)
class Number:
    """A finite number from ``low`` to ``high`` (never NaN or Infinity)."""

    low: float
    high: float

    def check(self, value):
        # A huge integer is compared as an integer: float() of it would overflow.
        ok = (_is_integer(value) or isinstance(value, float) and math.isfinite(value)) \
            and self.low <= value <= self.high
        if not ok:
            raise Invalid(f"must be a number from {self.low:g} to {self.high:g}, "
                          f"not {_shown(value)}")
        return float(value)


@dataclass(frozen=True)
class Boolean:
    def check(self, value):
        if not isinstance(value, bool):
            raise Invalid(f"must be true or false, not {_shown(value)}")
        return value


_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?(Z|[+-][0-9]{2}:[0-9]{2})?")
_UTC = ("Z", "+00:00", "-00:00")


@dataclass(frozen=True)
class TimeOfDay:
    """A time of day in UTC: "HH:MM" or "HH:MM:SS", optionally marked "Z" or "+00:00". Another
    offset is refused rather than converted: moving the time across midnight would have to
    move a weekly policy's day with it."""

    null: bool = True

    def check(self, value):
        if value is None and self.null:
            return None
        found = _TIME.fullmatch(value) if isinstance(value, str) else None
        if found is None:
            raise Invalid('must be a time of day in UTC, "HH:MM" or "HH:MM:SS"'
                          f"{' or null' if self.null else ''}, not {_shown(value)}")
        hour, minute, second, offset = found.groups()
        if offset and offset not in _UTC:
            raise Invalid(f"is a time of day in UTC; {_shown(value)} has the offset "
                          f"{offset}: send the time in UTC (with no offset, Z or +00:00)")
        return time(int(hour), int(minute), int(second or 0))


@dataclass(frozen=True)
class Digests:
    """A non-empty list of at most ``max_items`` digests; answered without repeats."""

    max_items: int

    def check(self, value):
        if not isinstance(value, list) or not value:
            raise Invalid("must be a non-empty list of digests")
        if len(value) > self.max_items:
            raise Invalid(f"holds {len(value)} digests; at most {self.max_items} at once")
        for digest in value:
            if not names.valid_digest(digest):
                raise Invalid(f"holds {_shown(digest)}, which is not a digest "
                              "(sha256: and 64 hex digits, or sha512: and 128)")
        return list(dict.fromkeys(value))


@dataclass(frozen=True)
class Schema:
    """The fields a JSON object body may send, by name; ``required`` must be sent."""

    fields: dict = field(default_factory=dict)
    required: tuple = ()

    def parse(self, body) -> dict:
        """The values ``body`` sends, checked and converted, in the schema's order."""
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object")
        for key, value in body.items():
            if not _all_storable([key, value]):
                what = f'"{key[:60]}"' if storable(key) else "a field name"
                raise Invalid(f"{what} holds a NUL character or a lone surrogate "
                              "(\\u0000, \\ud800-\\udfff), which no text may contain")
        unknown = sorted(set(body) - set(self.fields))
        if unknown:
            known = ", ".join(self.fields)
            raise Invalid(f'unknown field "{unknown[0][:60]}"; '
                          + (f"the fields are: {known}" if known else "the body is {}"))
        missing = [name for name in self.required if name not in body]
        if missing:
            raise Invalid(f'"{missing[0]}" is required')
        values = {}
        for name, kind in self.fields.items():
            if name in body:
                try:
                    values[name] = kind.check(body[name])
                except Invalid as exc:
                    raise Invalid(f'"{name}": {exc}') from None
        return values


@dataclass(frozen=True)
class References:
    """A non-empty list of at most ``max_items`` ``repository@digest`` references (the
    registry-wide API's items); answered as (repository, digest) pairs without repeats."""

    max_items: int

    def check(self, value):
        if not isinstance(value, list) or not value:
            raise Invalid("must be a non-empty list of repository@digest references")
        if len(value) > self.max_items:
            raise Invalid(f"holds {len(value)} items; at most {self.max_items} at once")
        refs = []
        for ref in value:
            name, _, digest = ref.rpartition("@") if isinstance(ref, str) else ("", "", "")
            if not (names.valid_name(name) and names.valid_digest(digest)):
                raise Invalid(f"holds {_shown(ref)}, which is not repository@digest "
                              "(e.g. team/app@sha256:…)")
            refs.append((name, digest))
        return list(dict.fromkeys(refs))


@dataclass(frozen=True)
class PreviewIds:
    """A non-empty list of at most ``max_items`` preview ids (text)."""

    max_items: int

    def check(self, value):
        if not isinstance(value, list) or not value or len(value) > self.max_items:
            raise Invalid(f"must be a list of 1 to {self.max_items} preview ids")
        if not all(isinstance(v, str) and len(v) <= 100 for v in value):
            raise Invalid("must hold preview ids as the preview answered them")
        return list(dict.fromkeys(value))
