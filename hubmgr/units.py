"""Sizes in words, as the docker CLI and Docker Hub show them. Below every layer: the pages,
the API and the management commands of each app use it."""


def human_size(n: int) -> str:
    """Decimal units (1 kB = 1,000 bytes)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"
