"""Cleanup policies' patterns: repository globs (RE2, matched whole, linear on hostile names)
and tag expressions, and the validation of a policy's fields."""

import time

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from hypothesis import given, settings as hsettings, strategies as st

from hubmgr.policies import runs
from hubmgr.patterns import RepositoryMatcher, compile_regex, tag_finder

from tests.support.factories import make_image, make_repo
from tests.support.policies import RELEASE, policy


@pytest.mark.parametrize("include, exclude, name, covered", [
    ("team/*", "", "team/a", True),
    ("team/*", "", "team/a/b", False),  # * stays within one segment
    ("team/*", "", "team", False),
    ("team/**", "", "team/a/b", True),
    ("**", "", "x/y/z", True),
    ("**/base", "", "base", True),
    ("**/base", "", "a/b/base", True),
    ("**/base", "", "a/b/database", False),
    ("team/*\n!team/base", "", "team/base", False),  # ! in include excludes
    ("team/*\n!team/base", "", "team/app", True),
    ("team/**", "team/legacy/**", "team/legacy/x", False),
    ("team/**", "team/legacy/**", "team/legacy", False),
    ("team/ap?", "", "team/app", True),
    ("a.b/*", "", "axb/c", False),  # dots are literal
    ("", "", "team/a", False),  # no include pattern: nothing
    ("!team/a", "", "team/b", False),
])
def test_globs_cover_repositories_by_path_segment(include, exclude, name, covered):
    assert RepositoryMatcher(include, exclude)(name) is covered


def glob_reference(glob, name):
    """What a glob means, read by hand: dynamic programming over (glob position, name
    position), independent of the RE2 translation."""
    from functools import cache

    @cache
    def match(i, j):
        if i == len(glob):
            return j == len(name)
        if glob.startswith("**/", i):  # any number of whole segments, or none
            return match(i + 3, j) or any(
                name[k] == "/" and match(i + 3, k + 1) for k in range(j, len(name)))
        if glob.startswith("/**", i) and i + 3 == len(glob):  # nothing, or "/" and anything
            return j == len(name) or name[j] == "/"
        if glob.startswith("**", i):
            return any(match(i + 2, k) for k in range(j, len(name) + 1))
        if glob[i] == "*":
            return match(i + 1, j) or (j < len(name) and name[j] != "/" and match(i, j + 1))
        if j == len(name):
            return False
        if glob[i] == "?":
            return name[j] != "/" and match(i + 1, j + 1)
        return glob[i] == name[j] and match(i + 1, j + 1)

    return match(0, 0)


@given(st.text(alphabet="ab/*?.", max_size=12), st.text(alphabet="ab/.", max_size=12))
@hsettings(max_examples=500, deadline=None)
def test_a_glob_covers_what_a_reading_by_hand_covers(glob, name):
    if not glob.strip() or glob.startswith("!"):
        return
    assert RepositoryMatcher(glob)(name) is glob_reference(glob, name)


@given(st.lists(st.text(alphabet="ab/*?.", max_size=8), min_size=1, max_size=3),
       st.text(alphabet="ab/.", max_size=12))
@hsettings(max_examples=500, deadline=None)
def test_every_covered_name_starts_as_an_include_pattern_does(globs, name):
    """The prefixes a query narrows the repositories by before matching lose none."""
    globs = [g for g in globs if g.strip() and not g.strip().startswith("!")]
    matcher = RepositoryMatcher("\n".join(globs))
    prefixes = matcher.prefixes()
    if globs and matcher(name) and prefixes is not None:
        assert any(name.startswith(p) for p in prefixes), (globs, name, prefixes)


@pytest.mark.django_db
def test_a_policy_reads_only_the_repositories_its_patterns_can_cover():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for name in ("team", "team/a", "team/a/b", "teamx", "other", "zzz"):
        make_repo(name)
    p = policy(include="team/**\nother", exclude="team/a/b")
    with CaptureQueriesContext(connection) as queries:
        found = [repo.name for repo in runs.covered_repositories(p)]
    assert found == ["other", "team", "team/a"]
    assert "LIKE" in queries[-1]["sql"].upper()
    assert RepositoryMatcher("**/base").prefixes() is None  # any name may end so


def test_a_hostile_glob_on_a_hostile_name_runs_in_linear_time():
    # Python's re took 16.8 s for the first on a name of 40 "a"s (and doubled with each "a").
    globs = ["*a" * 10 + "*b", "**a" * 40 + "b", "*?" * 120 + "b", "**/" * 80 + "b"]
    names = ["a" * 255, "a/" * 127 + "a", "a" * 40]
    started = time.perf_counter()
    for glob in globs:
        matcher = RepositoryMatcher(glob, "\n".join(globs))
        assert not any(matcher(name) for name in names)
    assert time.perf_counter() - started < 1.0


def test_many_globs_are_matched_in_one_pass():
    includes = "\n".join(f"team{n}/**" for n in range(2000))
    matcher = RepositoryMatcher(includes, "team7/secret\n!x")
    assert matcher("team1999/a/b") and matcher("team7/app")
    assert not matcher("team7/secret") and not matcher("team2000/a")


@pytest.mark.django_db
def test_a_dry_run_with_a_hostile_glob_over_a_hostile_repository_name_is_quick():
    now = timezone.now()
    repo = make_repo("a" * 40)
    make_image(repo, "old", pushed=400)
    p = policy(include="*a" * 10 + "*b\n" + "a" * 40, remove_untagged_days=30)
    started = time.perf_counter()
    report = runs.preview(p, 10, now=now)
    assert time.perf_counter() - started < 5.0
    assert report["totals"]["repositories"] == 1


def errors_of(p):
    with pytest.raises(ValidationError) as exc:
        p.full_clean()
    return exc.value.message_dict


@pytest.mark.django_db
@pytest.mark.parametrize("field, value, words", [
    ("keep_tag_regex", "(unclosed", "missing )"),
    ("keep_tag_regex", r"(a)\1", "backreferences"),  # RE2 has none: refused, not run
    ("remove_tag_regex", "(?=x)y", "not a valid regular expression"),
    ("keep_tag_regex", "a" * 501, "at most"),
])
def test_an_invalid_expression_is_refused_naming_its_field(field, value, words):
    p = policy(remove_untagged_days=7, remove_tag_days=1, **{field: value})
    message = " ".join(errors_of(p)[field])
    assert words in message


@pytest.mark.django_db
def test_the_tagged_rule_needs_both_expression_and_days_and_a_schedule_needs_a_time():
    errors = errors_of(policy(remove_tag_regex="^dev-", schedule="weekly"))
    assert set(errors) == {"remove_tag_days", "run_at", "weekday"}
    errors = errors_of(policy(keep_last=3))
    assert "remove rule" in errors["remove_untagged_days"][0]
    policy(remove_tag_regex="^dev-", remove_tag_days=30).full_clean()


def test_a_catastrophic_backtracking_expression_runs_in_linear_time():
    tag = "a" * 100_000 + "!"
    started = time.perf_counter()
    for pattern in (r"(a+)+$", r"(a|aa)*b", r"^(\w+\s?)*$"):
        assert compile_regex(pattern).search(tag) is None
    assert time.perf_counter() - started < 1.0


def test_expressions_search_as_python_re_does():
    assert compile_regex("dev").search("feature-dev-1")
    assert not compile_regex("^dev").search("feature-dev-1")
    assert compile_regex(RELEASE).search("v1.2.3")
    assert not compile_regex(RELEASE).search("v1.2.3-rc1")


@pytest.mark.django_db
@given(st.sampled_from(["^build-", "dev", r"^v?\d+\.\d+\.\d+$", "é", "^$", "a|b", "(a+)+$"]),
       st.text(max_size=40))
def test_the_tag_test_of_runs_answers_as_search_does(pattern, tag):
    assert tag_finder(pattern)(tag) == (compile_regex(pattern).search(tag) is not None)
