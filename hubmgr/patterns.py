"""The two pattern languages of cleanup policies and protected tags: repository globs and tag
regular expressions. Below every layer (policies and deletion both read them).

Both are compiled with RE2, which runs in time linear in the text's length: no pattern a
maintainer saves, matched against any name or tag someone pushed, can stall a run, a preview
or the web server by catastrophic backtracking (as Python's ``re`` does on a glob such as
``*a*a*a*a*a*a*a*a*a*a*b`` against a long name of ``a``s). RE2 has no backreferences or
lookaround; a tag expression using them is refused when saved. Tag expressions match with
``search`` (unanchored, as Python's ``re.search``): write ``^`` and ``$`` to anchor. Globs
match whole names.
"""

from functools import lru_cache

import re2
from django.core.exceptions import ValidationError

MAX_REGEX_LENGTH = 500

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the error goes to the person saving, not to stderr


@lru_cache(maxsize=256)
def compile_regex(pattern: str):
    """The compiled RE2 expression; ValueError with a readable reason when it is not one."""
    if len(pattern) > MAX_REGEX_LENGTH:
        raise ValueError(f"is {len(pattern)} characters long; at most {MAX_REGEX_LENGTH} "
                         "are allowed")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else ""
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"is not a valid regular expression ({reason}; RE2 syntax: no "
                         "backreferences or lookaround)") from None


def tag_finder(pattern: str):
    """``compile_regex(pattern).search`` as a yes/no test of one tag, made for runs (which test
    every candidate's tags). It calls RE2's compiled expression directly: the wrapper's
    ``search`` builds a generator and a match object per call, several times the cost of
    the test itself, and that was most of a run's rule time. Falls back to ``search`` if the
    wrapper changes."""
    regex = compile_regex(pattern)
    match = getattr(getattr(regex, "_regexp", None), "Match", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    if match is None or anchor is None:
        return lambda tag: regex.search(tag) is not None

    def found(tag):
        data = tag.encode()
        return match(anchor, data, 0, len(data))[0] != (-1, -1)

    return found


def validate_regex(value):
    """A field validator shared by the model, the admin and (later) the form and the API."""
    if not value:
        return
    try:
        compile_regex(value)
    except ValueError as exc:
        raise ValidationError(f"This expression {exc}.", code="invalid_regex") from None


# ---- repository globs ----------------------------------------------------------------------
def glob_lines(text: str):
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


MAX_GLOB_LENGTH = 255  # a repository name is at most 255 characters too
MAX_GLOB_TEXT = 10_000  # characters of a policy's include or exclude globs, all lines


@lru_cache(maxsize=1024)
def glob_expression(glob: str) -> str:
    """The glob as RE2 source, matched against whole names. ``*`` and ``?`` stay within one
    path segment; ``**`` spans any number of them (``team/**`` covers ``team/a`` and
    ``team/a/b``, ``**/base`` covers ``base`` too)."""
    if len(glob) > MAX_GLOB_LENGTH:
        raise ValueError(f"is {len(glob)} characters long; at most {MAX_GLOB_LENGTH} are "
                         "allowed")
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("(?:/.*)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re2.escape(glob[i]))
            i += 1
    return "".join(out)


def any_glob(globs):
    """One compiled RE2 expression whose ``fullmatch`` tells whether any of ``globs`` matches
    a name, in one pass over the name however many globs there are; None for no globs."""
    if not globs:
        return None
    return re2.compile("(?s)" + "|".join(f"(?:{glob_expression(g)})" for g in globs), _OPTIONS)


def validate_globs(value):
    for line in glob_lines(value):
        glob = line[1:].strip() if line.startswith("!") else line
        if not glob:
            raise ValidationError(f"{line!r} names no repositories.", code="invalid_glob")
        if len(glob) > MAX_GLOB_LENGTH:
            raise ValidationError(f"A pattern is at most {MAX_GLOB_LENGTH} characters long.",
                                  code="invalid_glob")


class RepositoryMatcher:
    """Which repository names a policy covers: any include pattern matches and no exclude
    pattern does (an include line starting with ``!`` is an exclude). No include pattern:
    nothing is covered."""

    def __init__(self, include: str, exclude: str = ""):
        includes, excludes = [], []
        for line in glob_lines(include):
            if line.startswith("!"):
                excludes.append(line[1:].strip())
            else:
                includes.append(line)
        excludes += [line.lstrip("!").strip() for line in glob_lines(exclude)]
        self.include, self.exclude = any_glob(includes), any_glob(excludes)
        self.includes = includes

    def prefixes(self, most=50) -> list[str] | None:
        """What every covered name starts with, one string per include pattern (its text
        before the first wildcard, without a last ``/``: ``team/**`` covers ``team``), for a
        query to narrow the names it reads before they are matched; None when a pattern
        starts with a wildcard or there are more than ``most`` patterns."""
        found = set()
        for glob in self.includes:
            literal = glob.split("*", 1)[0].split("?", 1)[0].rstrip("/")
            if not literal:
                return None
            found.add(literal)
        return sorted(found) if len(found) <= most else None

    def __call__(self, name: str) -> bool:
        return (self.include is not None and self.include.fullmatch(name) is not None
                and (self.exclude is None or self.exclude.fullmatch(name) is None))
