"""Counts that say what they count: what goes is said as top-level items and what goes with
them, apart ("1 of 3 items, with its 2 child images"), in words written once
(units.counted, reports.going_text), and a report recorded before these counts were is read
with them."""

import pytest

from hubmgr.policies import reports, runs, service
from hubmgr.units import counted, plural

from tests.support.factories import alpine_inventory
from tests.support.policies import NOW, cleanup, policy


@pytest.mark.parametrize("args, text", [
    ((1, 2, 0, 3), "1 of 3 items, with its 2 child images"),
    ((1, 2, 1, 3), "1 of 3 items, with its 2 child images and 1 attached artifact"),
    ((3, 1, 2, None), "3 items, with their 1 child image and 2 attached artifacts"),
    ((2, 0, 1, None), "2 items, with their 1 attached artifact"),
    ((1, 0, 0, 1), "1 of 1 item"),
    ((0, 0, 0, 5), "0 of 5 items"),
    ((0, 0, 0, None), "0 items"),
    ((1, 0, 0, None), "1 item"),
    ((1200, 0, 0, 5000), "1,200 of 5,000 items"),
])
def test_counted_says_items_and_what_goes_with_them_apart(args, text):
    items, children, attached, of = args
    assert counted(items, children, attached, of=of) == text


def test_plural_and_a_clause_that_a_sentence_can_go_on_from():
    assert (plural(1, "repository", "repositories"), plural(2, "item")) == (
        "1 repository", "2 items")
    alone = {"going_items": 4, "going_children": 0, "going_attached": 0}
    with_children = {"going_items": 1, "going_children": 2, "going_attached": 0}
    assert reports.going_text(alone, clause=True) == "4 items"
    assert reports.going_text(with_children, of=3, clause=True) == (
        "1 of 3 items, with its 2 child images,")


@pytest.fixture
def alpine(db):
    return alpine_inventory(attested=True)


def without_counts(report):
    """``report`` as it was recorded before what goes was counted apart."""
    keys = ("going_items", "going_children", "going_attached")
    return {**report, "repositories": [{k: v for k, v in e.items() if k not in keys}
                                       for e in report["repositories"]],
            "totals": {k: v for k, v in report["totals"].items()
                       if k not in keys + ("braked_going_items",)}}


def test_a_report_recorded_before_the_counts_is_counted_from_its_going_lists(alpine):
    report = runs.plan_every_item(policy(include="library/*", remove_untagged_days=7,
                                         brake_share=1.0), now=NOW)
    old = without_counts(report)
    assert reports.counted_apart(old) == report
    assert reports.counted_apart(report) is report  # (nothing to do)
    [entry] = reports.bounded(old)["repositories"]
    assert (entry["going_items"], entry["going_children"], entry["going_attached"]) == (1, 2, 1)
    # A list cut short: what it leaves out counts as items (the old reading), never fewer.
    [cut] = reports.counted_apart({**old, "repositories": [
        {**old["repositories"][0], "going": old["repositories"][0]["going"][:1]}]})[
        "repositories"]
    assert cut["going_items"] + cut["going_children"] + cut["going_attached"] == 4


def test_the_cleanup_command_counts_items_apart_from_their_children(alpine):
    service.save_policy(policy(name="alpine", include="library/*", remove_untagged_days=7,
                               brake_share=1.0))
    out = cleanup("alpine", "--dry-run")
    assert ("library/alpine: 1 of 3 items, with its 2 child images and 1 attached artifact, "
            "to delete (1 selected)") in out
    assert ("Total: 1 item, with its 2 child images and 1 attached artifact, to delete in 1 "
            "of 1 repository covered") in out


def test_the_cleanup_command_says_what_the_brake_held_back(alpine):
    service.save_policy(policy(name="alpine", include="library/*", remove_untagged_days=7,
                               brake_count=0))
    out = cleanup("alpine", "--dry-run")
    assert "library/alpine: 1 of 3 items, with its 2 child images and 1 attached artifact, " \
        "held back by the brake" in out
    assert ("The brake stopped 1 repository, holding back 1 item, with its 2 child images "
            "and 1 attached artifact") in out
