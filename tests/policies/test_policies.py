"""Cleanup policies: the patterns, the audited write path, the rule engine (against a
brute-force reading of the rules), dry runs planned by the deletion planner, the brake and the
cleanup command."""

import json
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from hubmgr.deletion.planner import CHILD, SELECTED
from hubmgr.inventory.models import Blob, IndexChild, Manifest, ManifestBlob, Repository, Tag
from hubmgr.inventory.registries import default_registry
from hubmgr.inventory.store import refresh
from hubmgr.policies import rules, runs, service
from hubmgr.policies.models import CleanupPolicy, PolicyAudit, PolicyRun
from hubmgr.policies.patterns import RepositoryMatcher, compile_regex, tag_finder

from tests.support.factories import (
    days_ago, digest, make_image, make_index, make_repo, observe_pulls,
)

RELEASE = r"^latest$|^v?\d+\.\d+\.\d+$"


def policy(**fields):
    fields.setdefault("name", "p")
    fields.setdefault("include", "**")
    return CleanupPolicy(**fields)


# ---- repository globs ------------------------------------------------------------------------
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
    report = runs.dry_run(p, now=now, limit=10)
    assert time.perf_counter() - started < 5.0
    assert report["totals"]["repositories"] == 1


# ---- validation ------------------------------------------------------------------------------
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


# ---- the audited write path ------------------------------------------------------------------
@pytest.mark.django_db
@given(st.sampled_from(["^build-", "dev", r"^v?\d+\.\d+\.\d+$", "é", "^$", "a|b", "(a+)+$"]),
       st.text(max_size=40))
def test_the_tag_test_of_runs_answers_as_search_does(pattern, tag):
    assert tag_finder(pattern)(tag) == (compile_regex(pattern).search(tag) is not None)


def test_every_change_is_audited_with_who_before_and_after(maintainer):
    p = service.save_policy(policy(name="untagged", remove_untagged_days=7), maintainer)
    created = PolicyAudit.objects.get()
    assert (created.action, created.user, created.before) == ("create", maintainer, None)
    assert created.after["remove_untagged_days"] == 7 and created.after["mode"] == "report"
    assert p.created_by == p.updated_by == maintainer

    p.remove_untagged_days = 14
    service.save_policy(p, maintainer)
    service.save_policy(p, maintainer)  # nothing changed: nothing to audit
    change = PolicyAudit.objects.filter(action="change").get()
    assert (change.before["remove_untagged_days"], change.after["remove_untagged_days"]) == (7, 14)

    service.delete_policy(p, maintainer)
    deleted = PolicyAudit.objects.get(action="delete")
    assert (deleted.policy, deleted.policy_name, deleted.after) == (None, "untagged", None)
    assert deleted.before["remove_untagged_days"] == 14
    assert PolicyAudit.objects.count() == 3 and not PolicyAudit.objects.filter(policy__isnull=False)


@pytest.mark.django_db
def test_an_invalid_change_saves_nothing_and_audits_nothing(maintainer):
    p = service.save_policy(policy(remove_untagged_days=7), maintainer)
    p.keep_tag_regex = "(("
    with pytest.raises(ValidationError):
        service.save_policy(p, maintainer)
    assert CleanupPolicy.objects.get().keep_tag_regex == ""
    assert PolicyAudit.objects.count() == 1


@pytest.mark.django_db
def test_the_admin_saves_through_the_audited_path(admin_client, admin_user):
    response = admin_client.post("/admin/policies/cleanuppolicy/add/", {
        "name": "builds", "include": "team/*", "exclude": "", "mode": "report",
        "schedule": "off", "run_at": "", "weekday": "", "remove_tag_regex": "^build-",
        "remove_tag_days": "30", "remove_untagged_days": "7", "keep_last": "10",
        "keep_tag_regex": RELEASE, "keep_pulled_days": "", "brake_share": "0.5",
        "brake_count": ""})
    assert response.status_code == 302, response.content.decode()[:2000]
    audit = PolicyAudit.objects.get()
    assert (audit.action, audit.user, audit.after["keep_last"]) == ("create", admin_user, 10)
    response = admin_client.post(f"/admin/policies/cleanuppolicy/{audit.policy_id}/delete/",
                                 {"post": "yes"})
    assert response.status_code == 302
    assert PolicyAudit.objects.filter(action="delete", policy_name="builds").exists()


# ---- the rules, as plain functions ------------------------------------------------------------
NOW = timezone.now()


def at(days):
    return NOW - timedelta(days=days, hours=12) if days is not None else None


def item(name, tags=(), pushed=None, source="push_event", first_seen=0, pulled=None,
         stale=None):
    return rules.Item(name, "image", tuple(tags), at(pushed), source if pushed is not None
                      else "", at(first_seen), at(pulled), stale)


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


def brute_force(items, p, now):
    """The rules as the issue states them, written naively."""
    def seen(i):
        return i.last_pushed if i.last_pushed_source in ("push_event", "access_log") else None

    def known_since(i):
        return seen(i) if seen(i) is not None else i.first_seen

    def older(t, days):
        return t is not None and now - t > timedelta(days=days)

    selected, kept = {}, set()
    for i in items:
        rule = None
        if (i.tags and p.remove_tag_regex and older(seen(i), p.remove_tag_days)
                and all(compile_regex(p.remove_tag_regex).search(t) for t in i.tags)):
            rule = "tag"
        elif not i.tags and p.remove_untagged_days is not None and older(
                known_since(i), p.remove_untagged_days):
            rule = "untagged"
        elif p.remove_stale and i.stale is True:
            rule = "stale"
        newer = [j for j in items if j.tags and known_since(j) is not None and (
            known_since(i) is None or (known_since(j), j.digest) > (known_since(i), i.digest))]
        keep = ((p.keep_last and i.tags and len(newer) < p.keep_last)
                or (p.keep_tag_regex and any(compile_regex(p.keep_tag_regex).search(t)
                                             for t in i.tags))
                or (p.keep_pulled_days is not None and i.last_pulled is not None
                    and now - i.last_pulled <= timedelta(days=p.keep_pulled_days)))
        if keep:
            kept.add(i.digest)
        elif rule:
            selected[i.digest] = rule
    return selected, kept


TAGS = ["latest", "1.2.3", "v2.0.0", "build-1", "build-2", "dev-x", "rc-1.0.0-rc1"]
days = st.one_of(st.none(), st.integers(0, 60))


@st.composite
def policies(draw):
    return policy(
        remove_tag_regex=draw(st.sampled_from(["", "^build-", "dev|build", "."])),
        remove_tag_days=draw(st.integers(0, 60)),
        remove_untagged_days=draw(days), remove_stale=draw(st.booleans()),
        keep_last=draw(st.one_of(st.none(), st.integers(0, 4))),
        keep_tag_regex=draw(st.sampled_from(["", RELEASE, "^build-2$"])),
        keep_pulled_days=draw(days))


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
                          stale=draw(st.sampled_from([None, False, True]))))
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


# ---- dry runs over the inventory ---------------------------------------------------------------
REPOS = ("team/a", "team/b", "other/c")
SOURCES = ["push_event", "access_log", "image_created"]


@st.composite
def inventories(draw):
    """Three repositories of images and indexes (children shared by several indexes, tagged
    children, indexes of indexes), tags, push, pull and first-seen times, some pushes known
    only from a build time; an observation window; a policy."""
    manifests = {}
    for repo in REPOS:
        names = []
        for n in range(draw(st.integers(0, 9))):
            kids = []
            if names and draw(st.integers(0, 2)) == 0:
                kids = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
            name = f"{repo}/{'index' if kids else 'image'}{n}"
            manifests[name] = dict(
                repo=repo, kids=kids,
                tags=draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True)),
                pushed=draw(st.one_of(st.none(), st.integers(0, 90))),
                source=draw(st.sampled_from(SOURCES)), first_seen=draw(st.integers(0, 90)),
                pulled=draw(days), size=draw(st.integers(1, 1000)),
                blobs=draw(st.lists(st.integers(0, 5), max_size=3, unique=True)),
                fetched=draw(st.integers(0, 4)) > 0)  # a fifth not read yet
            names.append(name)
    # One tag names one manifest per repository.
    for repo in REPOS:
        taken = set()
        for spec in manifests.values():
            if spec["repo"] == repo:
                spec["tags"] = [t for t in spec["tags"] if t not in taken]
                taken.update(spec["tags"])
    window = draw(st.one_of(st.none(), st.integers(0, settings.STALE_DAYS + 30)))
    return manifests, window, draw(policies())


def store(manifests, window, now):
    registry = default_registry()
    registry.pulls_observed_since = now - timedelta(days=window, hours=12) if window else None
    registry.save()
    repos = {name: Repository.objects.create(registry=registry, name=name) for name in REPOS}
    # A pool of layers that images of every repository share.
    pool = [Blob.objects.create(registry=registry, digest=digest(f"layer{k}"), size=100 * k + 7)
            for k in range(6)]
    ids = {}
    for name, spec in manifests.items():
        repo = repos[spec["repo"]]
        m = Manifest.objects.create(
            repository=repo, digest=digest(name), kind="index" if spec["kids"] else "image",
            size=spec["size"], manifest_size=spec["size"], fetched=spec.get("fetched", True),
            last_pushed=at(spec["pushed"]),
            last_pushed_source=spec["source"] if spec["pushed"] is not None else "",
            last_pulled=at(spec["pulled"]))
        Manifest.objects.filter(pk=m.pk).update(first_seen=at(spec["first_seen"]))
        ids[name] = m.pk
        IndexChild.objects.bulk_create([IndexChild(index_id=m.pk, child_id=ids[kid])
                                        for kid in spec["kids"]])
        ManifestBlob.objects.bulk_create([ManifestBlob(manifest_id=m.pk, blob=pool[k])
                                          for k in spec.get("blobs", ())])
        Tag.objects.bulk_create([Tag(repository=repo, name=t, manifest_id=m.pk)
                                 for t in spec["tags"]])
    for repo in repos.values():
        refresh(repo)
    return repos


def expected_rules_items(manifests, window, now):
    """Each repository's top-level items, with Stale worked out naively."""
    parents = {kid for spec in manifests.values() for kid in spec["kids"]}
    since = now - timedelta(days=window, hours=12) if window else None
    cutoff = now - timedelta(days=settings.STALE_DAYS)
    out = {repo: [] for repo in REPOS}
    for name, spec in manifests.items():
        if spec["tags"] or name not in parents:
            # An index counts as pulled when it or one of its children was.
            pulls = [at(manifests[n]["pulled"]) for n in [name, *spec["kids"]]]
            pulled = max((t for t in pulls if t is not None), default=None)
            seen = at(spec["pushed"]) if spec["source"] != "image_created" else None
            active = any(t is not None and t >= cutoff for t in (pulled, seen))
            stale = False if active else (True if since and since <= cutoff else None)
            out[spec["repo"]].append(rules.Item(
                digest(name), tags=tuple(spec["tags"]), last_pushed=at(spec["pushed"]),
                last_pushed_source=spec["source"] if spec["pushed"] is not None else "",
                first_seen=at(spec["first_seen"]), last_pulled=pulled, stale=stale))
    return out


@pytest.mark.slow
@pytest.mark.django_db
@hsettings(max_examples=60, deadline=None,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(inventories())
def test_a_dry_run_removes_the_rules_selection_and_never_breaks_an_index(case):
    manifests, window, p = case
    if not p.remove_tag_regex:
        p.remove_tag_days = None
    p.brake_share = 1.0
    with transaction.atomic():
        store(manifests, window, NOW)
        report = runs.dry_run(p, now=NOW)
        assert_counted_setwise_as_planned(p, report)
        by_repo = {r["repository"]: r for r in report["repositories"]}
        naive = expected_rules_items(manifests, window, NOW)
        by_digest = {digest(name): spec for name, spec in manifests.items()}
        for repo in REPOS:
            selected, kept = brute_force(naive[repo], p, NOW)
            r = by_repo.get(repo, {"going": [], "kept": [], "protected": []})
            going = {i["digest"]: i for i in r["going"]}
            planner_kept = {i["digest"]: i["reason"] for i in r["kept"]}
            # The selection: what the rules select, each going or kept by the planner.
            assert {d for d, i in going.items() if i["reason"] == SELECTED} | (
                set(planner_kept) & set(selected)) == set(selected)
            assert all(i["rule"] == selected[d] for d, i in going.items()
                       if i["reason"] == SELECTED)
            assert not set(going) & kept  # keep rules always win
            assert {i["digest"] for i in r["protected"]} <= kept
            # Nothing a remaining index references goes.
            for name, spec in manifests.items():
                if spec["repo"] == repo and digest(name) not in going:
                    assert not {digest(kid) for kid in spec["kids"]} & set(going)
            # Exactly the selection plus the children nothing else keeps.
            parents_of = {}
            for name, spec in manifests.items():
                for kid in spec["kids"]:
                    parents_of.setdefault(digest(kid), set()).add(digest(name))
            for d, spec in by_digest.items():
                if spec["repo"] != repo or d in selected:
                    continue
                orphan = (not spec["tags"] and parents_of.get(d)
                          and parents_of[d] <= set(going))
                assert (d in going) == bool(orphan), d
                if d in going:
                    assert going[d]["reason"] == CHILD
        transaction.set_rollback(True)


def assert_counted_setwise_as_planned(p, report):
    """The set-wise dry run (``limit`` given: the pages, the API, the live preview) answers
    what the planner's answers, entry for entry: all of each list, or its first entries."""
    assert runs.dry_run(p, now=NOW, limit=1000) == report
    for limit in (0, 2):
        bounded = runs.dry_run(p, now=NOW, limit=limit)
        assert bounded["totals"] == report["totals"]
        for full, cut in zip(report["repositories"], bounded["repositories"], strict=True):
            assert cut == full | {key: full[key][:limit]
                                  for key in ("going", "protected", "kept", "unread")}


@pytest.fixture
def builds_repo(db):
    """team/app: 12 build tags a day apart, two release tags, an index with two untagged
    children, three untagged images of various ages."""
    repo = make_repo("team/app")
    for n in range(12):
        make_image(repo, f"build{n}", tags=[f"build-{n}"], pushed=40 - n)
    make_image(repo, "rel", tags=["v1.0.0"], pushed=200)
    amd, arm = make_image(repo, "amd"), make_image(repo, "arm")
    make_index(repo, "idx", [amd, arm], tags=["latest"], pushed=100)
    for n, age in enumerate((1, 10, 30)):
        make_image(repo, f"loose{n}", pushed=age)
    refresh(repo)
    make_image(make_repo("other/x"), "x0", pushed=100)
    refresh(Repository.objects.get(name="other/x"))
    return repo


def keep_ten_builds():
    """The README's two examples in one policy."""
    return service.save_policy(policy(
        name="builds", include="team/*", remove_tag_regex=".", remove_tag_days=0,
        keep_last=10, keep_tag_regex=RELEASE, remove_untagged_days=7))


def test_a_dry_run_reports_each_item_with_its_rule_and_the_reclaim(builds_repo):
    report = runs.dry_run(keep_ten_builds())
    assert report["totals"]["repositories"] == 1  # other/x is not covered
    [repo] = report["repositories"]
    going = {i["digest"]: i["rule"] for i in repo["going"]}
    assert going == {digest("build0"): "tag", digest("build1"): "tag",
                     digest("loose1"): "untagged", digest("loose2"): "untagged"}
    assert {i["digest"]: i["keep"] for i in repo["protected"]} == {
        digest("rel"): ["tag"], digest("idx"): ["tag"],
        **{digest(f"build{n}"): ["last"] for n in range(2, 12)}}
    assert repo["reclaim_bytes"] == 4 * 1000  # one layer each; no manifest sizes
    assert repo["brake"] is None and report["note"].startswith("Index children")
    assert not PolicyRun.objects.exists()  # a dry run records nothing by itself


def test_the_brake_stops_a_repository_that_would_lose_too_much(builds_repo):
    p = keep_ten_builds()
    p.remove_tag_regex, p.keep_last, p.keep_tag_regex = ".", None, ""
    [repo] = runs.dry_run(p)["repositories"]
    assert "more than the limit of 50%" in repo["brake"]  # 16 of 17 items
    p.brake_share, p.brake_count = 1.0, 3
    report = runs.dry_run(p)
    assert "more than the limit of 3" in report["repositories"][0]["brake"]
    assert report["totals"]["braked"] == 1 and report["totals"]["reclaim_bytes"] == 0
    assert report["totals"]["braked_reclaim_bytes"] > 0
    p.brake_count = None
    assert runs.dry_run(p)["repositories"][0]["brake"] is None


def test_only_stale_on_evidence_is_removed(db):
    repo = make_repo("team/s")
    make_image(repo, "old", tags=["a"], pushed=settings.STALE_DAYS + 5)
    make_image(repo, "fresh", tags=["b"], pushed=1)
    make_image(repo, "other", tags=["c"], pushed=settings.STALE_DAYS + 5)
    refresh(repo)
    p = policy(remove_stale=True, brake_share=1.0)
    assert runs.dry_run(p)["repositories"] == []  # no window: Stale is unknown
    observe_pulls(settings.STALE_DAYS + 10)
    [r] = runs.dry_run(p)["repositories"]
    assert {i["digest"] for i in r["going"]} == {digest("old"), digest("other")}


def test_an_index_child_goes_only_with_its_index_and_a_shared_one_stays(db):
    repo = make_repo("team/m")
    amd, arm = make_image(repo, "amd"), make_image(repo, "arm")
    make_index(repo, "old", [amd, arm], tags=["build-1"], pushed=50)
    make_index(repo, "new", [arm], tags=["build-2"], pushed=1)
    refresh(repo)
    Manifest.objects.filter(repository=repo).update(first_seen=days_ago(60))
    p = policy(remove_tag_regex="^build-", remove_tag_days=30, remove_untagged_days=0,
               brake_share=1.0)
    [r] = runs.dry_run(p)["repositories"]
    assert [(i["digest"], i["reason"]) for i in r["going"]] == [
        (digest("old"), SELECTED), (digest("amd"), CHILD)]
    assert [(i["digest"], i["reason"]) for i in r["kept"]] == [
        (digest("arm"), f"also referenced by index {digest('new')[:19]} (build-2)")]


# ---- the command ----------------------------------------------------------------------------
def cleanup(*args):
    out = StringIO()
    call_command("cleanup", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_the_command_prints_each_repository_and_item_with_its_rule(builds_repo):
    keep_ten_builds()
    out = cleanup("builds", "--dry-run")
    assert "team/app: 4 of 17 items to delete" in out
    assert f"delete   {digest('build0')}  image  build-0  (rule tag)" in out
    assert f"protect  {digest('build2')}  build-2  (rule tag, kept by last)" in out
    assert "Total: 4 items to delete in 1 of 1 repositories covered; 4.0 kB (4000 bytes)" in out
    run = PolicyRun.objects.get()
    assert (run.status, run.dry_run, run.finished_at is not None) == ("done", True, True)
    report = json.loads(cleanup("builds", "--dry-run", "--json"))
    assert report["totals"]["going"] == 4


@pytest.mark.django_db
def test_the_command_says_what_is_missing():
    assert "There are no cleanup policies" in cleanup("--dry-run")
    with pytest.raises(CommandError, match="No cleanup policy named 'nope'"):
        cleanup("nope", "--dry-run")
    assert "There are no cleanup policies" in cleanup()


def test_repositories_nothing_can_match_cost_no_query_of_their_own(
        db, django_assert_max_num_queries):
    for n in range(5):
        repo = make_repo(f"team/fresh{n}")
        make_image(repo, f"f{n}", tags=["build-1"], pushed=1)
        make_image(repo, f"u{n}", pushed=1)
        refresh(repo)
    p = policy(remove_tag_regex="^build-", remove_tag_days=30, remove_untagged_days=7,
               remove_stale=True, keep_last=3)
    registry = default_registry()
    with django_assert_max_num_queries(2):  # the repositories, then their candidates
        assert runs.dry_run(p, registry=registry)["repositories"] == []


def test_each_going_item_carries_what_a_deletion_job_needs(builds_repo):
    from hubmgr.deletion import jobs

    [repo] = runs.dry_run(keep_ten_builds())["repositories"]
    job = jobs.create_job(builds_repo, {"items": repo["going"], "kept": repo["kept"],
                                        "reclaim_bytes": repo["reclaim_bytes"]})
    assert list(job.items.order_by("position").values_list("digest", "reason")) == [
        (i["digest"], i["reason"]) for i in repo["going"]]


def test_a_failed_dry_run_is_recorded_as_failed_with_its_reason(builds_repo, monkeypatch):
    p = keep_ten_builds()

    def broken(*args, **kwargs):
        raise RuntimeError("the inventory went away")

    monkeypatch.setattr(runs, "load_graphs", broken)
    run = runs.record_dry_run(p)
    assert (run.status, run.error, run.report) == (
        "failed", "RuntimeError: the inventory went away", {})
    assert run.finished_at is not None
    with pytest.raises(CommandError, match="Failed: builds"):
        cleanup("--dry-run")


def test_the_command_runs_every_policy_and_shows_the_brake(builds_repo):
    keep_ten_builds()
    service.save_policy(policy(name="everything", remove_tag_regex=".", remove_tag_days=0))
    out = cleanup("--dry-run")
    assert "Policy builds (nothing is deleted; mode: report)" in out
    assert "Policy everything (nothing is deleted; mode: report)" in out
    assert "STOPPED BY THE BRAKE: the plan removes 14 of 17 items (82%)" in out
    assert "The brake stopped 1 repositories" in out
    assert dict(PolicyRun.objects.values_list("policy__name", "status")) == {
        "builds": "done", "everything": "braked"}
    reports = json.loads(cleanup("--dry-run", "--json"))
    assert [r["policy"] for r in reports] == ["builds", "everything"]


def test_a_policy_in_report_mode_deletes_nothing_and_one_in_delete_mode_starts_jobs(
        builds_repo):
    from hubmgr.deletion.models import DeletionJob

    p = keep_ten_builds()
    service.save_policy(policy(name="everything", include="**", remove_tag_regex=".",
                               remove_tag_days=0, mode="delete"))
    out = cleanup("builds")
    assert "Policy builds (nothing is deleted; mode: report)" in out
    assert not DeletionJob.objects.exists()
    assert "Deletion job" not in cleanup("--dry-run")  # delete mode, but a dry run

    p.mode = "delete"
    service.save_policy(p)
    out = cleanup("builds")
    job = DeletionJob.objects.get()
    assert f"Deletion job {job.pk} started" in out and "(deleting; mode: delete)" in out
    run = PolicyRun.objects.filter(policy=p).first()
    assert (run.dry_run, list(run.jobs.all()), run.report["repositories"][0]["job"]) == (
        False, [job], job.pk)
    going = run.report["repositories"][0]["going"]
    assert list(job.items.order_by("position").values_list("digest", flat=True)) == [
        i["digest"] for i in going]
    assert job.reclaim_bytes == run.report["repositories"][0]["reclaim_bytes"] == 4000

    cleanup("everything")  # the brake stops team/app: no job
    run = PolicyRun.objects.filter(policy__name="everything", dry_run=False).get()
    assert run.status == "braked" and not run.jobs.exists()
    assert DeletionJob.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_against_the_registry_report_mode_deletes_nothing_and_delete_mode_exactly_the_report(
        registry, registry_client):
    from hubmgr import devstack
    from hubmgr.deletion import jobs
    from hubmgr.inventory.registries import client_for

    from tests.support.helpers import image, multiarch, sync

    c = registry_client
    d = {tag: image(c, "pol/app", tag=tag, seed=tag)["digest"]
         for tag in ("build-1", "build-2", "build-3", "v1.0.0")}
    d["loose"] = image(c, "pol/app", seed="loose")["digest"]
    index, kids = multiarch(c, "pol/app", tag="build-0", seed="m")
    d["index"], d["kids"] = index, [k["digest"] for k in kids]
    image(c, "pol/other", tag="build-1", seed="other")
    sync()
    # An untagged image is known from its push event; the catalog cannot list it.
    Manifest.objects.create(repository=Repository.objects.get(name="pol/app"),
                            digest=d["loose"])
    sync()
    # Pushes seen 40 days ago (as notifications would have told), build-3 35 days ago.
    Manifest.objects.update(last_pushed=days_ago(40), last_pushed_source="push_event")
    Manifest.objects.filter(digest=d["build-3"]).update(last_pushed=days_ago(35))
    p = service.save_policy(policy(
        name="pol", include="pol/app", remove_tag_regex="^build-", remove_tag_days=30,
        remove_untagged_days=7, keep_last=1, keep_tag_regex=RELEASE, brake_share=1.0))
    expected = {d["build-1"], d["build-2"], d["loose"], d["index"], *d["kids"]}

    cleanup("pol")
    [repo] = PolicyRun.objects.get().report["repositories"]
    assert {i["digest"] for i in repo["going"]} == expected
    assert {i["digest"]: i["keep"] for i in repo["protected"]} == {d["build-3"]: ["last"]}
    for digest_ in d.values():
        for one in ([digest_] if isinstance(digest_, str) else digest_):
            assert c.head_manifest("pol/app", one) is not None

    p.mode = "delete"
    service.save_policy(p)
    cleanup("pol")
    run = PolicyRun.objects.filter(dry_run=False).get()
    [job] = run.jobs.all()
    client = client_for(default_registry())
    try:
        assert jobs.process_job(job.pk, client, wait=True) == "done"
    finally:
        client.close()
    assert run.report["repositories"][0]["reclaim_bytes"] == job.reclaim_bytes > 0
    for one in expected:
        assert c.head_manifest("pol/app", one) is None
    for tag in ("build-3", "v1.0.0"):
        assert c.head_manifest("pol/app", d[tag]) is not None
    assert c.head_manifest("pol/other", "build-1") is not None
    registry.stop()  # the collector runs offline, and frees exactly the reported bytes
    before = devstack.blob_bytes(registry.root)
    devstack.garbage_collect(registry.config_path)
    assert before - devstack.blob_bytes(registry.root) == job.reclaim_bytes


def test_the_admin_pages_show_policies_runs_and_changes(admin_client, builds_repo):
    p = keep_ten_builds()
    runs.record_dry_run(p)
    for path in ("/admin/policies/cleanuppolicy/", "/admin/policies/cleanuppolicy/add/",
                 f"/admin/policies/cleanuppolicy/{p.pk}/change/", "/admin/policies/policyrun/",
                 "/admin/policies/policyaudit/"):
        assert admin_client.get(path).status_code == 200, path
    response = admin_client.post("/admin/policies/cleanuppolicy/add/", {
        "name": "bad", "include": "**", "mode": "report", "schedule": "off",
        "keep_tag_regex": "(a)\\1", "remove_untagged_days": "7", "brake_share": "0.5"})
    assert response.status_code == 200 and "backreferences" in response.content.decode()
    assert not CleanupPolicy.objects.filter(name="bad").exists()


def test_one_run_of_a_policy_at_a_time_and_an_interrupted_one_is_marked_failed(builds_repo):
    p = keep_ten_builds()
    running = PolicyRun.objects.create(policy=p)
    with pytest.raises(runs.AlreadyRunning):
        runs.record_dry_run(p)
    with pytest.raises(CommandError, match="Failed: builds"):
        cleanup("builds", "--dry-run")
    PolicyRun.objects.filter(pk=running.pk).update(
        heartbeat_at=timezone.now() - runs.ABANDONED_AFTER - timedelta(seconds=1))
    assert runs.record_dry_run(p).status == "done"
    running.refresh_from_db()
    assert (running.status, running.error) == (
        "failed", "Interrupted: the process running it stopped (no sign of life for 5 minutes).")
    assert running.finished_at is not None


def delete_builds():
    p = keep_ten_builds()
    p.mode = "delete"
    return service.save_policy(p)


def test_a_run_declared_dead_while_it_works_deletes_nothing_and_stays_failed(
        builds_repo, monkeypatch):
    """The zombie: a run still selecting is marked failed by another process (its heartbeat
    looked old), a second run of the policy starts, and then the first one finishes."""
    from hubmgr.deletion.models import DeletionJob

    p = delete_builds()
    second = []
    real_dry_run = runs.dry_run

    def slow_dry_run(policy, **kwargs):
        report = real_dry_run(policy, **kwargs)
        later = timezone.now() + runs.ABANDONED_AFTER + timedelta(minutes=1)
        assert runs.fail_abandoned(policy, now=later) == 1  # what run_due would do then
        second.append(runs.claim_run(policy))
        return report

    monkeypatch.setattr(runs, "dry_run", slow_dry_run)
    first = runs.record_run(p, delete=True)
    assert first.status == "failed" and first.error.startswith("Interrupted")
    assert not first.jobs.exists() and not DeletionJob.objects.exists()
    assert PolicyRun.objects.get(pk=second[0].pk).status == "running"


def test_only_a_run_holding_a_live_claim_creates_deletion_jobs(builds_repo):
    from hubmgr.deletion.models import DeletionJob

    p = delete_builds()
    run = runs.claim_run(p)
    report = runs.dry_run(p)
    PolicyRun.objects.filter(pk=run.pk).update(
        heartbeat_at=timezone.now() - runs.ABANDONED_AFTER - timedelta(seconds=1))
    with pytest.raises(runs.ClaimLost):
        runs.start_jobs(run, report)  # not marked failed yet, but its claim is not live
    assert not DeletionJob.objects.exists()
    PolicyRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
    runs.start_jobs(run, report)
    assert DeletionJob.objects.count() == 1


def test_a_run_writes_its_sign_of_life_while_one_long_step_runs(
        builds_repo, transactional_db, monkeypatch):
    monkeypatch.setattr(runs, "HEARTBEAT_SECONDS", 0.05)
    p = keep_ten_builds()
    seen = []
    real_dry_run = runs.dry_run

    def long_selection(policy, **kwargs):  # one long query: no per-repository callback
        run = PolicyRun.objects.get(status="running")
        PolicyRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(
            minutes=4))
        time.sleep(0.6)
        seen.append(timezone.now() - PolicyRun.objects.get(pk=run.pk).heartbeat_at)
        return real_dry_run(policy, **kwargs)

    monkeypatch.setattr(runs, "dry_run", long_selection)
    assert runs.record_dry_run(p).status == "done"
    assert seen[0] < timedelta(seconds=1)


def test_a_run_past_its_time_limit_stops_and_starts_no_deletion(builds_repo, settings):
    from hubmgr.deletion.models import DeletionJob

    settings.POLICY_RUN_SECONDS = 0
    run = runs.record_run(delete_builds(), delete=True)
    assert run.status == "failed" and "HUBMGR_POLICY_RUN_SECONDS" in run.error
    assert not DeletionJob.objects.exists()


# ---- schedules -------------------------------------------------------------------------------
def utc(text):
    from datetime import datetime

    return datetime.fromisoformat(text + "+00:00")


@pytest.mark.parametrize("schedule, weekday, now, due", [
    ("off", None, "2026-11-28 10:00", None),
    ("daily", None, "2026-11-28 10:00", "2026-11-28 03:30"),
    ("daily", None, "2026-11-28 03:30", "2026-11-28 03:30"),
    ("daily", None, "2026-11-28 03:29", "2026-11-27 03:30"),
    ("weekly", 5, "2026-11-28 10:00", "2026-11-28 03:30"),  # a Saturday
    ("weekly", 5, "2026-11-28 01:00", "2026-11-21 03:30"),
    ("weekly", 0, "2026-11-28 10:00", "2026-11-23 03:30"),  # the Monday before
    ("weekly", 6, "2026-11-28 10:00", "2026-11-22 03:30"),
])
def test_the_last_scheduled_time(schedule, weekday, now, due):
    from datetime import time as clock

    from hubmgr.policies.schedule import last_due

    p = policy(schedule=schedule, run_at=clock(3, 30), weekday=weekday)
    assert last_due(p, utc(now)) == (utc(due) if due else None)


def test_a_scheduled_policy_runs_once_per_time_in_a_worker(builds_repo, monkeypatch):
    from datetime import time as clock

    from hubmgr.deletion.models import DeletionJob
    from hubmgr.policies import tasks

    p = keep_ten_builds()
    p.schedule, p.run_at, p.mode = "daily", clock(3, 30), "delete"
    service.save_policy(p)
    now = timezone.now()
    CleanupPolicy.objects.filter(pk=p.pk).update(created_at=now - timedelta(days=3),
                                                  schedule_from=now - timedelta(days=3))
    queued = []
    monkeypatch.setattr(tasks.run_policy, "delay", queued.append)
    runs.record_dry_run(p)  # a person's run does not stand in for the scheduled one
    assert tasks.run_due() == [p.pk] and queued == [p.pk]
    assert tasks.run_policy(p.pk) is not None
    run = PolicyRun.objects.get(scheduled=True)
    assert (run.status, run.dry_run, run.jobs.count()) == ("done", False, 1)
    assert DeletionJob.objects.count() == 1
    assert tasks.run_policy(p.pk) is None  # a second delivery: already run
    assert tasks.run_due() == []
    assert tasks.run_policy(12345) is None  # deleted since


def test_a_new_policy_does_not_run_for_a_time_before_it_existed(db):
    from hubmgr.policies import schedule

    p = service.save_policy(policy(remove_untagged_days=7, schedule="daily",
                                   run_at=(timezone.now() - timedelta(hours=1)).time()))
    assert not schedule.is_due(p, timezone.now())
    assert schedule.is_due(p, timezone.now() + timedelta(days=1))


def test_a_schedule_set_after_its_time_today_first_runs_at_its_next_time(db):
    """PATCH {"schedule": "daily", "run_at": "00:30"} at 00:33 once started a run at 00:34."""
    from datetime import time as clock

    import time_machine

    from hubmgr.policies import schedule

    made = utc("2026-11-20 12:00")
    with time_machine.travel(made, tick=False):
        p = service.save_policy(policy(remove_untagged_days=7, mode="delete"))
    with time_machine.travel(utc("2026-11-28 00:33"), tick=False):
        p.schedule, p.run_at = "daily", clock(0, 30)
        service.save_policy(p)
    assert not schedule.is_due(p, utc("2026-11-28 00:34"))
    assert not schedule.is_due(p, utc("2026-11-29 00:29"))
    assert schedule.is_due(p, utc("2026-11-29 00:30"))
    with time_machine.travel(utc("2026-11-28 00:40"), tick=False):
        p.name = "renamed"  # not a schedule change: its next time stays
        service.save_policy(p)
    assert schedule.is_due(p, utc("2026-11-29 00:31"))
    with time_machine.travel(utc("2026-11-29 00:35"), tick=False):
        p.run_at = clock(0, 20)  # moved to a time already passed today
        service.save_policy(p)
    assert not schedule.is_due(p, utc("2026-11-29 00:36"))
    assert schedule.is_due(p, utc("2026-11-30 00:20"))


def test_a_maintainer_confirms_what_the_brake_stopped_once_while_the_plan_is_fresh(
        builds_repo, maintainer):
    from hubmgr.deletion.models import DeletionJob

    p = service.save_policy(policy(name="everything", remove_tag_regex=".", remove_tag_days=0,
                                   mode="delete"))
    dry = runs.record_dry_run(p)
    with pytest.raises(runs.CannotConfirm, match="delete mode"):
        runs.confirm_brake(dry, maintainer)
    out = cleanup("everything")
    run = PolicyRun.objects.get(dry_run=False)
    assert f"To delete them anyway: cleanup --confirm-brake {run.pk}" in out
    assert not DeletionJob.objects.exists()
    with pytest.raises(runs.CannotConfirm, match="too old"):
        runs.confirm_brake(run, maintainer, now=timezone.now() + timedelta(hours=2))

    [job_id] = runs.confirm_brake(run, maintainer)
    job = DeletionJob.objects.get()
    assert (job.pk, job.created_by, list(run.jobs.all())) == (job_id, maintainer, [job])
    run.refresh_from_db()
    entry = run.report["repositories"][0]
    assert (entry["job"], entry["brake_confirmed_by"]) == (job.pk, "maria")
    assert job.items.count() == len(entry["going"]) == 16  # 14 tagged items and 2 children
    with pytest.raises(CommandError, match="Already confirmed"):
        cleanup("--confirm-brake", str(run.pk))
    with pytest.raises(CommandError, match="No policy run 999"):
        cleanup("--confirm-brake", "999")


def braked_run(**fields):
    """A run in delete mode of a policy that would remove all of team/app's tagged items: the
    brake stops team/app."""
    p = service.save_policy(policy(name="everything", remove_tag_regex=".", remove_tag_days=0,
                                   mode="delete", **fields))
    run = runs.record_run(p, delete=True)
    assert run.status == "braked" and not run.jobs.exists()
    return run


@pytest.mark.django_db(transaction=True)
def test_two_confirmations_at_once_start_the_jobs_once(builds_repo, maintainer, monkeypatch):
    import threading

    from django.db import connection

    from hubmgr.deletion import jobs
    from hubmgr.deletion.models import DeletionJob

    run = braked_run()
    create_job = jobs.create_job

    def slow_create_job(*args, **kwargs):
        time.sleep(0.5)  # the other confirmation arrives meanwhile
        return create_job(*args, **kwargs)

    monkeypatch.setattr(jobs, "create_job", slow_create_job)
    both, outcomes = threading.Barrier(2), []

    def confirm():
        try:
            loaded = PolicyRun.objects.get(pk=run.pk)  # both see it unconfirmed
            both.wait()
            outcomes.append(runs.confirm_brake(loaded, maintainer))
        except runs.CannotConfirm as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=confirm) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    job = DeletionJob.objects.get()
    refused = [o for o in outcomes if isinstance(o, str)]
    assert [job.pk] in outcomes and len(refused) == 1, outcomes
    assert refused[0].startswith("Already confirmed by maria at ")
    run.refresh_from_db()
    assert (run.brake_confirmed_by, list(run.jobs.all())) == (maintainer, [job])


def test_a_run_whose_policy_changed_since_cannot_be_confirmed(builds_repo, maintainer):
    run = braked_run()
    assert runs.cannot_confirm(run) is None
    p = run.policy
    p.keep_last = 10
    service.save_policy(p, maintainer)
    with pytest.raises(runs.CannotConfirm, match="The policy changed after this run started "
                                                 r"\(.* by maria\); run it again"):
        runs.confirm_brake(run, maintainer)
    run.refresh_from_db()
    assert run.brake_confirmed_at is None and not run.jobs.exists()


def test_only_a_finished_braked_run_can_be_confirmed(builds_repo, maintainer):
    p = service.save_policy(policy(name="builds", remove_untagged_days=7, mode="delete",
                                   brake_share=1.0))
    running = PolicyRun.objects.create(policy=p, dry_run=False)
    assert "still running" in runs.cannot_confirm(running)
    running.delete()
    done = runs.record_run(p, delete=True)
    assert done.status == "done"
    with pytest.raises(runs.CannotConfirm, match="stopped nothing"):
        runs.confirm_brake(done, maintainer)


def test_run_totals_are_read_without_the_report(builds_repo):
    run = braked_run()
    [listed] = runs.with_totals(PolicyRun.objects.filter(pk=run.pk))
    assert "report" in listed.get_deferred_fields()
    assert listed.totals == run.report["totals"] and listed.totals["braked"] == 1


def test_a_dry_run_loads_repositories_in_chunks(builds_repo, monkeypatch):
    for n in range(4):
        repo = make_repo(f"team/more{n}")
        make_image(repo, f"more{n}", pushed=30)
        refresh(repo)
    p = keep_ten_builds()
    whole = runs.dry_run(p, now=NOW)
    monkeypatch.setattr(runs, "CHUNK", 2)
    assert runs.dry_run(p, now=NOW) == whole
    assert [r["repository"] for r in whole["repositories"]] == [
        "team/app", "team/more0", "team/more1", "team/more2", "team/more3"]


def test_a_bounded_report_lists_the_first_entries_and_counts_them_all(builds_repo):
    p = keep_ten_builds()
    whole = runs.dry_run(p, now=NOW)
    for limit in (0, 1):
        bounded = runs.dry_run(p, now=NOW, limit=limit)
        assert bounded["totals"] == whole["totals"]
        for full, cut in zip(whole["repositories"], bounded["repositories"], strict=True):
            for key in ("going", "protected", "kept", "unread"):
                assert cut[key] == full[key][:limit]
                assert cut[f"{key}_count"] == full[f"{key}_count"] == len(full[key])
            assert cut["reclaim_bytes"] == full["reclaim_bytes"]
    assert whole["repositories"][0]["going_count"] > 1


def test_repositories_planned_from_one_graph_get_each_its_own_plan(db, monkeypatch):
    """Several repositories' selections load as one graph (runs.GRAPH_ITEMS): each plan and
    reclaim is still what a deletion preview of that repository alone shows. A blob shared by
    images going in two repositories is freed by neither plan alone; a digest pushed to two
    repositories keeps its manifest blob; an index in one repository never reaches another's."""
    from hubmgr.deletion.actions import make_plan

    shared = Blob.objects.create(registry=default_registry(), digest=digest("shared"),
                                 size=7000)
    repos = [make_repo(f"team/r{n}") for n in range(3)]
    for n, repo in enumerate(repos):
        old = make_image(repo, f"old{n}", pushed=30)
        ManifestBlob.objects.create(manifest=old, blob=shared)
        make_image(repo, f"new{n}", tags=["v1.0.0"], pushed=1)
        kids = [make_image(repo, f"kid{n}{k}") for k in range(2)]
        make_index(repo, f"idx{n}", kids, pushed=30)
    # The same image (same digest) in r0 and r1, both untagged and old.
    for repo in repos[:2]:
        Manifest.objects.create(repository=repo, digest=digest("twin"), kind="image",
                                size=300, manifest_size=300, fetched=True,
                                last_pushed=days_ago(30), last_pushed_source="push_event")
    for repo in repos:
        refresh(repo)
    p = service.save_policy(policy(name="untagged", include="team/*", remove_untagged_days=7,
                                   brake_share=1.0))
    together = runs.dry_run(p, now=NOW)
    monkeypatch.setattr(runs, "GRAPH_ITEMS", 1)  # one repository per graph
    apart = runs.dry_run(p, now=NOW)
    assert together == apart
    assert_counted_setwise_as_planned(p, together)
    assert len(together["repositories"]) == 3
    for report in together["repositories"]:
        repo = Repository.objects.get(name=report["repository"])
        selected = [i["digest"] for i in report["going"] if i["reason"] == SELECTED]
        alone = make_plan(repo, selected)
        assert [i["digest"] for i in report["going"]] == [n.digest for n, _ in alone.items]
        assert report["reclaim_bytes"] == alone.reclaim_bytes
        # Nothing of another repository, and the shared blob and the twin's manifest blob
        # stay: each is still referenced elsewhere.
        assert all(Manifest.objects.filter(repository=repo, digest=i["digest"]).exists()
                   for i in report["going"])
        assert report["reclaim_bytes"] == 3 * 1000  # the old image's layer, the children's


def test_an_index_whose_child_was_pulled_counts_as_pulled(db):
    observe_pulls(settings.STALE_DAYS + 10)
    repo = make_repo("team/pulled")
    amd, arm = make_image(repo, "amd", pulled=2), make_image(repo, "arm")
    make_index(repo, "idx", [amd, arm], tags=["build-1"], pushed=300)
    make_index(repo, "idle", [make_image(repo, "s390x")], tags=["build-2"], pushed=300)
    refresh(repo)
    p = policy(remove_stale=True, brake_share=1.0)
    [r] = runs.dry_run(p)["repositories"]
    assert {i["digest"] for i in r["going"]} == {digest("idle"), digest("s390x")}
    p = policy(remove_tag_regex="^build-", remove_tag_days=30, keep_pulled_days=7,
               brake_share=1.0)
    [r] = runs.dry_run(p)["repositories"]
    assert [(i["digest"], i["keep"]) for i in r["protected"]] == [(digest("idx"), ["pulled"])]


def test_a_selected_image_an_index_still_needs_is_kept_by_both_dry_runs(db):
    """A tagged image is a top-level item a rule can select, yet a kept index may reference
    it: the planner keeps it ("referenced by index …"), with what only it would have taken
    along, and the set-wise dry run says the same. An index of indexes goes whole."""
    repo = make_repo("team/nested")
    shared = make_image(repo, "shared", tags=["build-1"], pushed=60)
    make_index(repo, "release", [shared, make_image(repo, "arm")], tags=["v1.0.0"], pushed=60)
    inner = make_index(repo, "inner", [make_image(repo, "s390x")], pushed=60)
    make_index(repo, "outer", [inner, make_image(repo, "ppc")], tags=["build-2"], pushed=60)
    refresh(repo)
    p = policy(remove_tag_regex="^build-", remove_tag_days=30, keep_tag_regex=RELEASE,
               brake_share=1.0)
    report = runs.dry_run(p, now=NOW)
    assert_counted_setwise_as_planned(p, report)
    [r] = report["repositories"]
    assert [(i["digest"], i["reason"]) for i in r["going"]] == [
        (digest("outer"), SELECTED), (digest("inner"), CHILD), (digest("ppc"), CHILD),
        (digest("s390x"), CHILD)]
    assert [(i["digest"], i["reason"].split(" (")[0]) for i in r["kept"]] == [
        (digest("shared"), f"referenced by index {digest('release')[:19]}")]
    assert r["protected"] == []  # (the release index is not selected: nothing to protect)


def test_a_blocked_item_names_every_index_that_keeps_it_once_the_plan_is_settled(db):
    """Two selected items, each kept: an index kept by an index outside the selection, and an
    image that index and another outside index reference. The image's reason names both
    indexes (the first was still going when the image was found blocked; Hypothesis found
    the two dry runs naming them differently)."""
    repo = make_repo("team/blocked")
    image = make_image(repo, "image", tags=["build-2"], pushed=60)
    inner = make_index(repo, "inner", [image], tags=["build-1"], pushed=60)
    make_index(repo, "outer", [inner], pushed=60)
    make_index(repo, "other", [image], pushed=60)
    refresh(repo)
    p = policy(remove_tag_regex="^build-", remove_tag_days=30, brake_share=1.0)
    report = runs.dry_run(p, now=NOW)
    assert_counted_setwise_as_planned(p, report)
    [r] = report["repositories"]
    assert r["going"] == []
    reasons = {i["digest"]: i["reason"] for i in r["kept"]}
    named = sorted([digest("other")[:19], f"{digest('inner')[:19]} (build-1)"])
    assert reasons == {digest("inner"): f"referenced by index {digest('outer')[:19]}",
                       digest("image"): "referenced by index " + ", ".join(named)}


def test_a_failed_setwise_dry_run_leaves_nothing_behind_for_the_next(builds_repo, monkeypatch):
    from hubmgr.policies import setwise

    p = keep_ten_builds()
    good = runs.dry_run(p, now=NOW, limit=5)
    real = setwise._plan

    def failing(cursor):
        real(cursor)
        cursor.execute(setwise._q("SELECT no_such_column FROM hm_item"))

    monkeypatch.setattr(setwise, "_plan", failing)
    with pytest.raises(Exception, match="no_such_column"):
        runs.dry_run(p, now=NOW, limit=5)
    monkeypatch.setattr(setwise, "_plan", real)
    assert runs.dry_run(p, now=NOW, limit=5) == good
    assert work_tables() == []


def work_tables():
    """The names of the set-wise dry run's work tables that the database holds."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT relname FROM pg_class WHERE relname LIKE 'hm\\_%'")
        else:
            cursor.execute("SELECT name FROM sqlite_temp_master WHERE name LIKE 'hm\\_%' "
                           "ESCAPE '\\' UNION SELECT name FROM sqlite_master "
                           "WHERE name LIKE 'hm\\_%' ESCAPE '\\'")
        return [name for (name,) in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres  # SQLite's transactions are IMMEDIATE here (settings): dry runs take turns
def test_two_dry_runs_at_once_neither_waits_for_the_other(builds_repo, monkeypatch):
    """Each dry run's work tables are its own (on PostgreSQL, regular tables named for it and
    never committed): a second dry run while the first holds its tables finishes, and both
    answer alike."""
    import threading

    from django.db import connection

    from hubmgr.policies import setwise

    p = keep_ten_builds()
    good = runs.dry_run(p, now=NOW, limit=5)
    real, holding, release, answers = setwise._plan, threading.Event(), threading.Event(), {}

    def held(cursor):
        real(cursor)
        if threading.current_thread().name == "first":
            holding.set()
            release.wait(30)

    def dry_run(name):
        try:
            answers[name] = runs.dry_run(p, now=NOW, limit=5)
        finally:
            connection.close()

    monkeypatch.setattr(setwise, "_plan", held)
    first = threading.Thread(target=dry_run, args=["first"], name="first")
    first.start()
    try:
        assert holding.wait(30)
        second = threading.Thread(target=dry_run, args=["second"], name="second")
        second.start()
        second.join(30)
        assert "second" in answers, "the second dry run waited for the first"
    finally:
        release.set()
        first.join(30)
    assert answers == {"first": good, "second": good}
    assert work_tables() == []
