"""Display strings for table rows, computed in Python once per row: the table renders 50 rows
per request and template filters were most of its server time."""

from django.utils import timezone

UNITS = (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400),
         ("hour", 3600), ("minute", 60))


def human_size(n: int) -> str:
    """Decimal units, as the docker CLI and Docker Hub show them."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


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


def present(rows):
    now = timezone.now()
    for row in rows:
        row.tag_list = row.tags
        row.short = row.digest.split(":", 1)[-1][:12]
        row.size_text = human_size(row.size)
        row.pushed = _time(row.last_pushed, now)
        row.pulled = _time(row.last_pulled, now)
        row.type_label = "Attestation" if row.is_attestation else row.get_kind_display()
    return rows
