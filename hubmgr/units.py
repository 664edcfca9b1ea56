"""Sizes and counts in words (sizes as the docker CLI and Docker Hub show them), and tags in
the order a person reads them. Below every layer: the pages, the API and the management
commands of each app use it."""

import re

_DIGITS = re.compile(r"(\d+)")


def human_size(n: int) -> str:
    """Decimal units (1 kB = 1,000 bytes)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def plural(n: int, word: str, words: str = "") -> str:
    """``n`` and the word, singular for one: "1 item", "2 items", "0 items"."""
    return f"{n:,} {word if n == 1 else words or word + 's'}"


def counted(items: int, children: int = 0, attached: int = 0, of: int | None = None) -> str:
    """What goes (or went), with top-level items and what goes with them counted apart: "1 of
    3 items, with its 2 child images and 1 attached artifact". ``items`` are the items of the
    table (an index, an image, an orphaned artifact), ``children`` the images (or indexes)
    that go with an index, ``attached`` the signatures, attestations, SBOMs and referrers
    that go with what they are attached to; ``of``, when given, the items there are. A part
    that is zero is left out. Every summary of a plan says it this way: the pages, the API's
    readers and the commands."""
    head = (f"{items:,} of {plural(of, 'item')}" if of is not None
            else plural(items, "item"))
    parts = [plural(n, word) for n, word in ((children, "child image"),
                                            (attached, "attached artifact")) if n]
    if not parts:
        return head
    whose = "its " if items == 1 else "their " if items else ""
    return f"{head}, with {whose}{' and '.join(parts)}"


def natural_key(text: str) -> list:
    """A sort key that puts build-9 before build-10 (and ignores case)."""
    return [int(part) if n % 2 else part.lower() for n, part in enumerate(_DIGITS.split(text))]


def tag_order(item) -> tuple:
    """A sort key for listed items (dicts with "tags" and "digest"): tagged items first, by
    their first tag in natural order; untagged ones by digest."""
    tags = sorted(item.get("tags") or [], key=natural_key)
    return (0, natural_key(tags[0]), item["digest"]) if tags else (1, [], item["digest"])
