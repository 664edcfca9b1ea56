"""The distribution grammar for what goes into a registry URL: repository names, tags and
digests. Everything that enters hubmgr (events, sync results, API and form input) is checked
here, and the client checks again before it builds a URL.

Sources: distribution's reference grammar (`reference/regexp.go`) and its digest rules:
- a repository name is path components of lower-case letters and digits joined by one `.` or
  `_`, two `__` or any number of `-`, separated by `/`, at most 255 characters in all;
- a tag is a word character, then up to 127 word characters, `.` or `-`;
- a digest is `sha256:` and 64 or `sha512:` and 128 lower-case hex digits (what registries use).
"""

import re
import unicodedata

MAX_NAME = 255
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
MAX_DIGEST = len("sha512:") + 128


def valid_name(value) -> bool:
    return isinstance(value, str) and len(value) <= MAX_NAME and _NAME.fullmatch(value) is not None


def valid_tag(value) -> bool:
    return isinstance(value, str) and _TAG.fullmatch(value) is not None


def valid_digest(value) -> bool:
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def valid_reference(value) -> bool:
    """A tag or a digest: what may follow /manifests/ in a URL."""
    return valid_digest(value) or valid_tag(value)


def shown(value, limit=80) -> str:
    """A value for an error message: repr'd (so control characters show) and cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def clean(value, limit=None) -> str:
    """Text fit for a column of ``limit`` characters (or for a query): without control
    characters or lone surrogates (PostgreSQL refuses NUL, and a surrogate cannot be encoded),
    and cut with an ellipsis when longer."""
    text = "".join(c for c in (value if isinstance(value, str) else str(value))
                   if unicodedata.category(c) not in ("Cc", "Cs"))
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"
