"""The rule engine as plain functions, against a brute-force reading of the rules."""

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from hubmgr.policies import rules

from tests.support.policies import NOW, RELEASE, TAGS, brute_force, days, item, policies, policy


def test_a_build_time_is_never_taken_for_a_push():
    p = policy(remove_tag_regex=".", remove_tag_days=30, remove_untagged_days=7)
    items = [item("built", ["dev-1"], pushed=400, source="image_created"),
             item("logged", ["dev-2"], pushed=400, source="access_log"),
             item("untagged-built", pushed=400, source="image_created", first_seen=2),
             item("untagged-seen-late", pushed=None, first_seen=8)]
    assert rules.evaluate(items, p, NOW).selected == {"logged": "tag",
                                                      "untagged-seen-late": "untagged"}


def test_every_tag_must_match_and_only_stale_on_evidence_counts():
    p = policy(remove_tag_regex="^dev-", remove_tag_days=1, remove_stale=True)
    items = [item("both", ["dev-1", "v1.0.0"], pushed=10), item("dev", ["dev-1"], pushed=10),
             item("unknown", pushed=500, stale=None), item("stale", ["v1"], pushed=0, stale=True)]
    assert rules.evaluate(items, p, NOW).selected == {"dev": "tag", "stale": "stale"}


def test_keep_rules_win_and_are_named():
    p = policy(remove_tag_regex=".", remove_tag_days=1, keep_last=1, keep_tag_regex=RELEASE,
               keep_pulled_days=7)
    items = [item("newest", ["b9"], pushed=2), item("release", ["1.2.3", "b8"], pushed=3),
             item("pulled", ["b7"], pushed=4, pulled=6), item("old", ["b6"], pushed=5)]
    result = rules.evaluate(items, p, NOW)
    assert result.selected == {"old": "tag"}
    assert result.protected == {"newest": ("tag", ["last"]), "release": ("tag", ["tag"]),
                                "pulled": ("tag", ["pulled"])}


def test_an_orphaned_artifact_is_removed_by_its_own_rule_first_and_keep_rules_still_win():
    p = policy(remove_orphans_days=7, remove_untagged_days=7, keep_pulled_days=3)
    items = [item("orphan", pushed=10, orphan=True), item("young-orphan", pushed=2, orphan=True),
             item("pulled-orphan", pushed=10, pulled=1, orphan=True),
             item("untagged", pushed=10), item("by-build-time", pushed=10, orphan=True,
                                                 source="image_created", first_seen=1)]
    result = rules.evaluate(items, p, NOW)
    assert result.selected == {"orphan": "orphaned", "untagged": "untagged"}
    assert result.protected == {"pulled-orphan": ("orphaned", ["pulled"])}
    p.remove_untagged_days = None
    assert rules.evaluate([item("tagged-orphan", ["dev-x"], pushed=10, orphan=True),
                           item("tagged", ["dev-y"], pushed=10)], p, NOW).selected == {
        "tagged-orphan": "orphaned"}


@st.composite
def item_lists(draw):
    items = []
    for n in range(draw(st.integers(0, 12))):
        items.append(item(f"sha256:{n:02}", draw(st.lists(st.sampled_from(TAGS), max_size=2,
                                                          unique=True)),
                          pushed=draw(st.one_of(st.none(), st.integers(0, 90))),
                          source=draw(st.sampled_from(["push_event", "access_log",
                                                       "image_created"])),
                          first_seen=draw(st.integers(0, 90)), pulled=draw(days),
                          stale=draw(st.sampled_from([None, False, True])),
                          orphan=draw(st.integers(0, 3)) == 0))
    return items


@pytest.mark.slow
@hsettings(max_examples=300, deadline=None)
@given(item_lists(), policies())
def test_the_engine_selects_what_a_brute_force_reading_of_the_rules_selects(items, p):
    if not p.remove_tag_regex:
        p.remove_tag_days = None
    result = rules.evaluate(items, p, NOW)
    selected, kept = brute_force(items, p, NOW)
    assert result.selected == selected
    assert not set(result.selected) & kept  # keep always wins
    assert set(result.protected) <= kept
