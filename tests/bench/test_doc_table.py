"""The latest-figures table that `make bench` writes into docs/benchmarks.md (bench/doc_table.py):
plain text in, plain text out, no services."""

import json

import pytest

from bench import doc_table

DOC = """# Benchmarks

Intro stays.

<!-- bench:begin -->
| benchmark | case | database | figures | measured |
| --- | --- | --- | --- | --- |
| table | table, full page | SQLite 3.40.1, 100,000 manifests | p50 15.3 ms | 2026-11-28 18:30 UTC |
| table | each sort (6 cases) | SQLite 3.40.1, 100,000 manifests | p50 10.2–11.4 ms | 2026-11-28 18:30 UTC |
| table | table, full page | PostgreSQL 15.20, 1,000,000 manifests | p50 20.5 ms | 2026-11-28 18:32 UTC |
| importlog | 1000000 lines | SQLite 3.40.1, 100,000 manifests | lines 127,356/s | 2026-11-28 18:31 UTC |
| policies | live preview | PostgreSQL 15.20, 100,000 manifests | p50 381 ms | 2026-12-05 06:25 UTC |
<!-- bench:end -->

Notes stay.
"""


def results(vendor="sqlite", server="SQLite 3.45.0", manifests=100_000, sections=None):
    return {"run_id": "1-2", "started": "2026-12-06 02:00 UTC", "cores": 2, "databases": {
        vendor: {"server": server, "manifests": manifests, "finished": "2026-12-06 02:30 UTC",
                 "sections": sections or {}}}}


def rows(text):
    start, end = text.index(doc_table.BEGIN), text.index(doc_table.END)
    return doc_table.parse_rows(text[start:end])


def test_it_formats_figures_with_their_units_and_leaves_out_urls_and_empty_ones():
    assert doc_table.format_figures({
        "url": "/x", "p50_ms": 3.14159, "queries": [5, 6], "raw_per_s": 111, "goal_ms": None,
        "rss_peak_mib": 76.2, "median_s": 36.1, "seconds": 2.2, "items": 160000,
    }) == ("p50 3.14 ms, queries 5/6, raw 111/s, rss peak 76.2 MiB, median 36.1 s, "
           "took 2.2 s, items 160,000")


def test_a_run_replaces_the_benchmarks_it_measured_on_that_database_and_keeps_the_rest():
    new = doc_table.rewrite(DOC, results(sections={"table": {
        "table, full page": {"url": "/r", "p50_ms": 14.0, "p95_ms": 15.5, "queries": [11]}}}))
    assert rows(new) == [
        ["table", "table, full page", "SQLite 3.45.0, 100,000 manifests",
         "p50 14 ms, p95 15.5 ms, queries 11", "2026-12-06 02:30 UTC"],
        # the old SQLite table rows are gone, range row included; PostgreSQL's stay
        ["table", "table, full page", "PostgreSQL 15.20, 1,000,000 manifests", "p50 20.5 ms",
         "2026-11-28 18:32 UTC"],
        ["importlog", "1000000 lines", "SQLite 3.40.1, 100,000 manifests", "lines 127,356/s",
         "2026-11-28 18:31 UTC"],
        ["policies", "live preview", "PostgreSQL 15.20, 100,000 manifests", "p50 381 ms",
         "2026-12-05 06:25 UTC"],
    ]
    assert new.startswith("# Benchmarks\n\nIntro stays.\n") and new.endswith("\nNotes stay.\n")


def test_a_run_at_another_scale_keeps_the_rows_of_the_first():
    new = doc_table.rewrite(DOC, results("postgresql", "PostgreSQL 15.20", 1_000_000, {
        "policies": {"live preview": {"p50_ms": 572.0}}}))
    policies = [r for r in rows(new) if r[0] == "policies"]
    assert [r[2] for r in policies] == ["PostgreSQL 15.20, 100,000 manifests",
                                        "PostgreSQL 15.20, 1,000,000 manifests"]


def test_an_empty_run_changes_nothing_and_the_table_reads_back_as_written():
    assert doc_table.rewrite(DOC, {}) == DOC
    assert doc_table.rewrite(DOC, results()) == DOC


def test_a_pipe_in_a_case_name_survives_the_round_trip():
    new = doc_table.rewrite(DOC, results(sections={"table": {"search a|b": {"p50_ms": 1.0}}}))
    assert ["table", "search a|b"] in [r[:2] for r in rows(new)]
    assert doc_table.rewrite(new, {}) == new


def test_a_document_without_the_markers_is_refused():
    with pytest.raises(ValueError, match="markers"):
        doc_table.rewrite("# Benchmarks\n", results())


def test_main_rewrites_the_file_from_results_json(tmp_path):
    doc, found = tmp_path / "benchmarks.md", tmp_path / "results.json"
    doc.write_text(DOC)
    found.write_text(json.dumps(results(sections={"kill": {
        "kill to next DELETE": {"median_s": 36.1, "max_s": 36.4, "runs": [27.7, 36.1, 36.4]}}})))
    doc_table.main(found, doc)
    assert ("| kill | kill to next DELETE | SQLite 3.45.0, 100,000 manifests | median 36.1 s, "
            "max 36.4 s, runs 27.7/36.1/36.4 | 2026-12-06 02:30 UTC |") in doc.read_text()


def test_the_committed_table_reads_back_unchanged():
    text = (doc_table.ROOT / "docs" / "benchmarks.md").read_text()
    assert len(rows(text)) > 20
    assert doc_table.rewrite(text, {}) == text
