"""The latest-figures table of docs/benchmarks.md, rewritten from bench/output/results.json
after `make bench` (scripts/bench.sh runs this last; it can also be run by hand).

The table sits between BEGIN and END, one row per measured case: benchmark, case, database,
figures, when it was measured. A run replaces the rows of each benchmark it measured on each
database at its scale (the "N manifests" of the database column) and keeps every other row, so
a BENCH_ONLY run, or a run without PostgreSQL, leaves the other benchmarks' figures with their
own dates. The rows are parsed back from the table itself, so figures written by hand stay
until a run measures their benchmark again. Plain Python: no Django, no services.
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "output" / "results.json"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
HEADER = ("benchmark", "case", "database", "figures", "measured")
# The order of benchmarks in the table (as bench/run.py runs them); others follow by name.
ORDER = ("table", "repositories", "plan", "sync", "delete", "kill", "ingest", "importlog",
         "policies", "overview")
VENDORS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
# Key suffix -> unit, tried in this order (a rate before seconds).
UNITS = (("_per_s", "/s"), ("_ms", " ms"), ("_mib", " MiB"), ("_mb", " MB"),
         ("_bytes", " bytes"), ("_s", " s"))
SKIP = {"url"}  # recorded for the person reading results.json, not worth a column here


def format_value(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)):
        return "/".join(format_value(v) for v in value)
    return str(value)


def format_figures(figures):
    """{"p50_ms": 3.1, "queries": [5]} -> "p50 3.1 ms, queries 5"."""
    parts = []
    for key, value in figures.items():
        if key in SKIP or value is None or value == []:
            continue
        name, unit = key, ""
        for suffix, text in UNITS:
            if key.endswith(suffix):
                name, unit = key[:-len(suffix)], text
                break
        if key == "seconds":
            name, unit = "took", " s"
        parts.append(f"{name.replace('_', ' ')} {format_value(value)}{unit}")
    return ", ".join(parts)


def _cell(text):
    return str(text).replace("|", r"\|").replace("\n", " ")


def _cells(line):
    inner = line.strip()
    if inner.startswith("|"):
        inner = inner[1:]
    if inner.endswith("|") and not inner.endswith(r"\|"):
        inner = inner[:-1]
    return [c.strip().replace(r"\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def _group(row):
    """(benchmark, database vendor, scale) a run replaces as one: "PostgreSQL 15.20, 1,000,000
    manifests" is PostgreSQL at 1,000,000 manifests, whatever its version."""
    benchmark, _, database = row[:3]
    vendor, _, scale = database.partition(",")
    return benchmark, vendor.split(" ")[0], scale.strip()


def parse_rows(table):
    """The rows of a table as written by render (header and rule skipped)."""
    rows = []
    for line in table.splitlines():
        if not line.strip().startswith("|"):
            continue
        cells = _cells(line)
        if tuple(cells[:len(HEADER)]) == HEADER or set("".join(cells)) <= set("-: "):
            continue
        rows.append((cells + [""] * len(HEADER))[:len(HEADER)])
    return rows


def rows_of(results):
    """One row per case of results.json, each database dated when its run finished."""
    rows = []
    for vendor, run in results.get("databases", {}).items():
        name = run.get("server") or VENDORS.get(vendor, vendor)
        database = f"{name}, {run.get('manifests', 0):,} manifests"
        measured = run.get("finished") or results.get("started", "")
        for benchmark, cases in run.get("sections", {}).items():
            for case, figures in cases.items():
                rows.append([benchmark, case, database, format_figures(figures), measured])
    return rows


def merge(old, new):
    """``old`` without the groups ``new`` measured, then ``new``; in ORDER, then SQLite before
    PostgreSQL, then the smaller scale; within a group in the order the bench measured it."""
    measured = {_group(row) for row in new}
    rows = [row for row in old if _group(row) not in measured] + new

    def key(row):
        benchmark, vendor, scale = _group(row)
        digits = re.sub(r"\D", "", scale.split(" ")[0]) or "0"
        place = ORDER.index(benchmark) if benchmark in ORDER else len(ORDER)
        return place, benchmark, vendor != "SQLite", int(digits)

    return sorted(rows, key=key)  # stable: each group keeps its own order


def render(rows):
    lines = ["| " + " | ".join(HEADER) + " |", "| --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def rewrite(doc_text, results):
    """``doc_text`` with the table between the markers rewritten for ``results``."""
    start, end = doc_text.find(BEGIN), doc_text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the table's markers ({BEGIN} ... {END}) are missing")
    table = doc_text[start + len(BEGIN):end]
    rows = merge(parse_rows(table), rows_of(results))
    return f"{doc_text[:start]}{BEGIN}\n{render(rows)}\n{doc_text[end:]}"


def main(results_path=RESULTS, doc_path=DOC):
    try:
        results = json.loads(Path(results_path).read_text())
    except (OSError, ValueError) as error:
        sys.exit(f"no figures to write to {doc_path}: {error}")
    Path(doc_path).write_text(rewrite(Path(doc_path).read_text(), results))
    print(f"latest figures: {doc_path}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
