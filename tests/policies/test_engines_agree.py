"""The contract between the two policy engines: a preview counted set-wise in SQL (the pages,
the API, the form's live preview) answers what planning every item with the deletion planner
(a recorded run) answers, entry for entry; and both remove the rules' selection and never
break an index."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import transaction
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from hubmgr.deletion.models import ProtectedTag
from hubmgr.deletion.planner import ATTACHED, CHILD, SELECTED
from hubmgr.patterns import compile_regex
from hubmgr.inventory.catalog.store import refresh
from hubmgr.inventory.models import Blob, IndexChild, Manifest, ManifestBlob, Repository, Tag
from hubmgr.inventory.registries import default_registry
from hubmgr.policies import rules, runs, service

from tests.support.factories import (
    cosign_tag, days_ago, digest, make_image, make_index, make_repo)
from tests.support.policies import (
    NOW, RELEASE, TAGS, at, brute_force, days, keep_ten_builds, policies, policy)


REPOS = ("team/a", "team/b", "other/c")


SOURCES = ["push_event", "access_log", "image_created"]


ARTIFACT_KINDS = {"sig": "signature", "att": "attestation", "sbom": "sbom"}

# Protected-tag rules a case may hold: (expression, glob, the glob's repositories written
# naively). One reaches cosign's tags: attached artifacts that would go with their subject.
PROTECT = [("^latest$", "**", REPOS), ("^build-1$", "team/*", ("team/a", "team/b")),
           (r"\.sig$", "**", REPOS), ("^v", "other/*", ("other/c",))]


def protected(repo, tags, protect) -> bool:
    return any(repo in repos and any(compile_regex(regex).search(t) for t in tags)
               for regex, _, repos in protect)


def _times(draw):
    return dict(pushed=draw(st.one_of(st.none(), st.integers(0, 90))),
                source=draw(st.sampled_from(SOURCES)), first_seen=draw(st.integers(0, 90)),
                pulled=draw(days), size=draw(st.integers(1, 1000)),
                blobs=draw(st.lists(st.integers(0, 5), max_size=3, unique=True)),
                fetched=draw(st.integers(0, 4)) > 0)  # a fifth not read yet


@st.composite
def inventories(draw):
    """Three repositories of images and indexes (children shared by several indexes, tagged
    children, indexes of indexes), tags, push, pull and first-seen times, some pushes known
    only from a build time; artifacts: BuildKit attestations in indexes, signatures,
    attestations and SBOMs attached by an OCI 1.1 subject or by a cosign tag (to an item, an
    index's child, another artifact, or to a digest the repository does not hold: an orphan),
    referrers fallback indexes; an observation window; a policy."""
    manifests = {}
    for repo in REPOS:
        names, artifacts = [], []
        for n in range(draw(st.integers(0, 9))):
            kids = []
            if names and draw(st.integers(0, 2)) == 0:
                kids = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
            name = f"{repo}/{'index' if kids else 'image'}{n}"
            images = [k for k in kids if not manifests[k]["kids"]]
            if images and draw(st.booleans()):  # BuildKit's attestation of one of its images
                manifests[f"{name}-att"] = dict(
                    repo=repo, kids=[], tags=[], artifact="attestation", subject=images[0],
                    **_times(draw))
                kids = [*kids, f"{name}-att"]
            manifests[name] = dict(
                repo=repo, kids=kids,
                tags=draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True)),
                artifact="", subject=None, **_times(draw))
            names.append(name)
        for n in range(draw(st.integers(0, 5))):
            name = f"{repo}/artifact{n}"
            subject = draw(st.sampled_from([*names, *artifacts, f"{repo}/gone{n}"]))
            suffix = draw(st.sampled_from(sorted(ARTIFACT_KINDS)))
            by_tag = draw(st.booleans())  # cosign's tag, else an OCI 1.1 subject field
            manifests[name] = dict(
                repo=repo, kids=[], artifact=ARTIFACT_KINDS[suffix],
                subject=None if by_tag else subject,
                tags=[cosign_tag(digest(subject), suffix)] if by_tag else draw(
                    st.lists(st.sampled_from(TAGS), max_size=1)), **_times(draw))
            artifacts.append(name)
        referrers = {}
        for name in artifacts:
            if manifests[name]["subject"] in names:
                referrers.setdefault(manifests[name]["subject"], []).append(name)
        for n, (subject, listed) in enumerate(sorted(referrers.items())):
            if draw(st.integers(0, 3)):  # its referrers fallback index, tagged sha256-<hex>
                others = [a for a in artifacts if a not in listed]
                if others and draw(st.integers(0, 3)) == 0:  # that lists another's too
                    listed = [*listed, draw(st.sampled_from(others))]
                manifests[f"{repo}/referrers{n}"] = dict(
                    repo=repo, kids=listed, tags=[digest(subject).replace(":", "-")],
                    artifact="", subject=None, **_times(draw))
        if artifacts and draw(st.integers(0, 3)) == 0:  # an index that lists artifacts
            manifests[f"{repo}/bundle"] = dict(
                repo=repo, kids=draw(st.lists(st.sampled_from(artifacts), min_size=1,
                                              max_size=2, unique=True)),
                tags=draw(st.lists(st.sampled_from(TAGS), max_size=1)), artifact="",
                subject=None, **_times(draw))
    # One tag names one manifest per repository.
    for repo in REPOS:
        taken = set()
        for spec in manifests.values():
            if spec["repo"] == repo:
                spec["tags"] = [t for t in spec["tags"] if t not in taken]
                taken.update(spec["tags"])
    window = draw(st.one_of(st.none(), st.integers(0, settings.STALE_DAYS + 30)))
    protect = draw(st.lists(st.sampled_from(PROTECT), max_size=2, unique=True))
    return manifests, window, draw(policies()), protect


def subjects(manifests):
    """{name: the name of what it belongs to} of the artifacts and referrers lists, as the
    inventory learns it: from a subject field; cosign's tag on an artifact (by its own
    content); a referrers fallback tag on an index whose read entries all belong to that
    subject; an index listing only referrers of one subject. A subject the repository does
    not hold is given by its digest (an orphan's)."""
    by_digest = {(spec["repo"], digest(name)): name for name, spec in manifests.items()}
    found = {}

    def named(spec, tag):
        subject = "sha256:" + tag.removeprefix("sha256-").split(".")[0]
        return by_digest.get((spec["repo"], subject), subject)

    for name, spec in manifests.items():
        if spec["subject"]:
            found[name] = spec["subject"] if spec["subject"] in manifests else digest(
                spec["subject"])
            continue
        for tag in spec["tags"]:
            if tag.startswith("sha256-") and "." in tag and not spec["kids"] \
                    and spec.get("artifact"):
                found[name] = named(spec, tag)
    for name, spec in manifests.items():
        if name in found or not spec["kids"] or spec.get("artifact"):
            continue
        read = [kid for kid in spec["kids"] if manifests[kid].get("fetched", True)]
        for tag in spec["tags"]:
            if tag.startswith("sha256-") and "." not in tag and all(
                    found.get(kid, "") == named(spec, tag) for kid in read):
                found[name] = named(spec, tag)
    for name, spec in manifests.items():
        listed = {found.get(kid, "") for kid in spec["kids"]}
        if spec["kids"] and name not in found and len(listed) == 1 and "" not in listed:
            found[name] = listed.pop()
    return found


def attached(manifests):
    """The names of the rows attached to a subject the repository holds (not items)."""
    return {name for name, subject in subjects(manifests).items() if subject in manifests}


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
        subject = spec.get("subject")
        m = Manifest.objects.create(
            repository=repo, digest=digest(name), kind="index" if spec["kids"] else "image",
            artifact=spec.get("artifact", ""), subject=digest(subject) if subject else "",
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


def expected_rules_items(manifests, window, now, protect=()):
    """Each repository's top-level items, with Stale and protection worked out naively."""
    parents = {kid for spec in manifests.values() for kid in spec["kids"]}
    since = now - timedelta(days=window, hours=12) if window else None
    cutoff = now - timedelta(days=settings.STALE_DAYS)
    out = {repo: [] for repo in REPOS}
    subject_of, not_items = subjects(manifests), attached(manifests)
    for name, spec in manifests.items():
        if name not in not_items and (spec["tags"] or name not in parents):
            # An index counts as pulled when it or one of its children was.
            pulls = [at(manifests[n]["pulled"]) for n in [name, *spec["kids"]]]
            pulled = max((t for t in pulls if t is not None), default=None)
            seen = at(spec["pushed"]) if spec["source"] != "image_created" else None
            active = any(t is not None and t >= cutoff for t in (pulled, seen))
            stale = False if active else (True if since and since <= cutoff else None)
            out[spec["repo"]].append(rules.Item(
                digest(name), tags=tuple(spec["tags"]), last_pushed=at(spec["pushed"]),
                last_pushed_source=spec["source"] if spec["pushed"] is not None else "",
                first_seen=at(spec["first_seen"]), last_pulled=pulled, stale=stale,
                is_orphan=name in subject_of,
                protected="yes" if protected(spec["repo"], spec["tags"], protect) else ""))
    return out


@pytest.mark.slow
@pytest.mark.django_db
@hsettings(max_examples=100, deadline=None,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(inventories())
def test_a_dry_run_removes_the_rules_selection_and_never_breaks_an_index(case):
    manifests, window, p, protect = case
    if not p.remove_tag_regex:
        p.remove_tag_days = None
    p.brake_share = 1.0
    with transaction.atomic():
        store(manifests, window, NOW)
        for regex, glob, _ in protect:
            ProtectedTag.objects.create(tag_regex=regex, repositories=glob)
        report = runs.plan_every_item(p, now=NOW)
        assert_counted_setwise_as_planned(p, report)
        by_repo = {r["repository"]: r for r in report["repositories"]}
        naive = expected_rules_items(manifests, window, NOW, protect)
        by_digest = {digest(name): spec for name, spec in manifests.items()}
        names = {digest(name): name for name in manifests}
        subject_of, not_items = subjects(manifests), attached(manifests)
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
            # Nothing protected goes, an attached artifact included.
            assert not [d for d in going if protected(repo, by_digest[d]["tags"], protect)]
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
                if names[d] in not_items:
                    # Judged with its subject: never selected, never going while its subject
                    # stays; going when its subject goes (to any depth: a signature of an
                    # attestation) unless the planner keeps it, and says why (an index that
                    # stays lists it; a referrers list that lists what stays).
                    goes_with = digest(subject_of[names[d]]) in going
                    assert d not in going or (goes_with and going[d]["reason"] == ATTACHED), d
                    assert d in going or not goes_with or d in planner_kept, d
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
    assert runs.preview(p, 1000, now=NOW) == report
    for limit in (0, 2):
        bounded = runs.preview(p, limit, now=NOW)
        assert bounded["totals"] == report["totals"]
        for full, cut in zip(report["repositories"], bounded["repositories"], strict=True):
            assert cut == full | {key: full[key][:limit]
                                  for key in ("going", "protected", "kept", "unread")}


def test_a_bounded_report_lists_the_first_entries_and_counts_them_all(builds_repo):
    p = keep_ten_builds()
    whole = runs.plan_every_item(p, now=NOW)
    for limit in (0, 1):
        bounded = runs.preview(p, limit, now=NOW)
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
    together = runs.plan_every_item(p, now=NOW)
    monkeypatch.setattr(runs, "GRAPH_ITEMS", 1)  # one repository per graph
    apart = runs.plan_every_item(p, now=NOW)
    assert together == apart
    assert_counted_setwise_as_planned(p, together)
    assert len(together["repositories"]) == 3
    for report in together["repositories"]:
        repo = Repository.objects.get(name=report["repository"])
        selected = [i["digest"] for i in report["going"] if i["reason"] == SELECTED]
        alone = make_plan(repo, selected)
        assert [i["digest"] for i in report["going"]] == [n.digest for n, _ in alone.going]
        assert report["reclaim_bytes"] == alone.reclaim_bytes
        # Nothing of another repository, and the shared blob and the twin's manifest blob
        # stay: each is still referenced elsewhere.
        assert all(Manifest.objects.filter(repository=repo, digest=i["digest"]).exists()
                   for i in report["going"])
        assert report["reclaim_bytes"] == 3 * 1000  # the old image's layer, the children's


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
    report = runs.plan_every_item(p, now=NOW)
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
    report = runs.plan_every_item(p, now=NOW)
    assert_counted_setwise_as_planned(p, report)
    [r] = report["repositories"]
    assert r["going"] == []
    reasons = {i["digest"]: i["reason"] for i in r["kept"]}
    named = sorted([digest("other")[:19], f"{digest('inner')[:19]} (build-1)"])
    assert reasons == {digest("inner"): f"referenced by index {digest('outer')[:19]}",
                       digest("image"): "referenced by index " + ", ".join(named)}


@pytest.mark.parametrize("narrow", [True, False])
def test_a_narrow_or_wide_scope_reads_the_same_rows(builds_repo, monkeypatch, narrow):
    """PostgreSQL reads a narrow scope by its repositories' ids, a wide one through the
    hm_scope table (setwise._in_scope): both answer as the planner does."""
    from hubmgr.policies import setwise

    monkeypatch.setattr(setwise, "_narrow", lambda repos: narrow)
    for name in ("team/x", "other/y"):
        repo = make_repo(name)
        make_image(repo, f"{name}-old", tags=["build-1"], pushed=40)
        refresh(repo)
    p = keep_ten_builds()
    report = runs.plan_every_item(p, now=NOW)
    assert report["totals"]["going"] > 0
    assert_counted_setwise_as_planned(p, report)
