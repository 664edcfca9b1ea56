"""A run report's lists as a page reads them (reports.grouped): by reason, each reason once
with its count, the items in tag order, a bounded number listed and shared between groups."""

from hubmgr.policies import reports
from hubmgr.units import natural_key, tag_order


def item(tag, digest=None):
    return {"digest": digest or f"sha256:{tag or 'none'}", "tags": [tag] if tag else []}


def test_tags_are_in_natural_order_untagged_items_last_by_digest():
    items = [item("build-10"), item(None, "sha256:b"), item("build-9"), item("Build-2"),
             item(None, "sha256:a"), item("build-9a")]
    assert [i["tags"] or i["digest"] for i in sorted(items, key=tag_order)] == [
        ["Build-2"], ["build-9"], ["build-9a"], ["build-10"], "sha256:a", "sha256:b"]
    assert natural_key("v1.10.0") > natural_key("v1.9.12")


def test_groups_follow_the_order_given_then_their_words():
    items = [{**item(f"t{n}"), "why": why} for n, why in enumerate("cbacbd")]
    found = reports.grouped(items, lambda i: i["why"], order=["d", "c"])
    assert [(g["reason"], g["count"]) for g in found["groups"]] == [
        ("d", 1), ("c", 2), ("a", 1), ("b", 2)]
    assert not found["partial"] and found["unlisted"] == 0


def test_the_listed_items_are_shared_so_that_every_group_lists_some(monkeypatch):
    monkeypatch.setattr(reports, "MAX_LISTED_ITEMS", 10)
    items = ([{**item(f"a-{n}"), "why": "a"} for n in range(50)]
             + [{**item(f"b-{n}"), "why": "b"} for n in range(2)]
             + [{**item(f"c-{n}"), "why": "c"} for n in range(50)])
    groups = reports.grouped(items, lambda i: i["why"])["groups"]
    assert [(len(g["items"]), g["more"]) for g in groups] == [(4, 46), (2, 0), (4, 46)]
    assert [i["tags"][0] for i in groups[0]["items"]] == ["a-0", "a-1", "a-2", "a-3"]


def test_groups_past_the_limit_are_counted_not_listed(monkeypatch):
    monkeypatch.setattr(reports, "MAX_LISTED_GROUPS", 2)
    items = [{**item(f"t{n}"), "why": f"reason {n}"} for n in range(5)]
    found = reports.grouped(items, lambda i: i["why"])
    assert [g["reason"] for g in found["groups"]] == ["reason 0", "reason 1"]
    assert (found["more_groups"], found["more_groups_items"]) == (3, 3)


def test_a_list_the_engine_cut_says_its_counts_are_of_what_is_listed():
    found = reports.grouped([item("a"), item("b")], lambda i: "why", total=7)
    assert found["partial"] and found["unlisted"] == 5 and found["groups"][0]["count"] == 2
