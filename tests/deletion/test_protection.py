"""Protected tags (deletion.protection): the rules, their audit, and how every plan keeps what
they protect: the planner, the policies' rules and both policy engines."""

import pytest
from django.core.exceptions import ValidationError

from hubmgr.deletion import protection
from hubmgr.deletion.graph import load_graph
from hubmgr.deletion.models import ProtectedTag, ProtectionAudit
from hubmgr.deletion.planner import Graph, Node, plan
from hubmgr.deletion.protection import Protection, Rule
from hubmgr.inventory.catalog.store import refresh
from hubmgr.policies import runs
from hubmgr.policies.models import CleanupPolicy

from tests.support.factories import digest, make_artifact, make_image, make_repo, sample_repo


def protect(tag_regex, repositories="**", user=None):
    return protection.save_rule(ProtectedTag(tag_regex=tag_regex, repositories=repositories),
                                user)


def test_a_rule_protects_the_tags_it_finds_in_the_repositories_it_covers():
    rules = Protection([Rule(1, r"^(latest|prod)$", "team/**"),
                        Rule(2, r"^v\d+\.\d+\.\d+$", "**")])
    assert rules.protects("team/app", ["build-1", "prod"]).startswith("protected tag prod")
    assert rules.protects("team/a/b", ["latest"])
    assert not rules.protects("other/app", ["latest"])  # the glob
    assert not rules.protects("team/app", ["latest-rc", "production"])  # anchored
    assert rules.protects("other/app", ["v1.2.3"]) == (
        r"protected tag v1.2.3 (rule '^v\\d+\\.\\d+\\.\\d+$' on **)")
    assert not rules.protects("team/app", []) and not Protection()


def _graph(protected=()):
    """x (build-1) with a signature s (tag sha256-x.sig) and an SBOM b attached; an index i
    (latest) listing c."""
    nodes = {
        ("r", "x"): Node(("r", "x"), tags=("build-1",), blobs=("lx",),
                         attached=(("r", "s"), ("r", "b"))),
        ("r", "s"): Node(("r", "s"), tags=("sha256-x.sig",), blobs=("ls",), label="Signature"),
        ("r", "b"): Node(("r", "b"), blobs=("lb",), label="SBOM"),
        ("r", "i"): Node(("r", "i"), kind="index", tags=("latest",), children=(("r", "c"),)),
        ("r", "c"): Node(("r", "c"), blobs=("lc",)),
    }
    graph = Graph(nodes, {"lx": 10, "ls": 20, "lb": 40, "lc": 80})
    graph.protected = {("r", k): f"protected {k}" for k in protected}
    return graph


def test_the_planner_keeps_a_selected_protected_item_and_what_it_lists():
    p = plan(_graph(protected="i"), [("r", "i"), ("r", "c")])
    assert p.going == [] and p.reclaim_bytes == 0
    assert dict(p.kept)[("r", "i")] == "protected i"
    assert dict(p.kept)[("r", "c")].startswith("referenced by index i")


def test_a_protected_artifact_stays_orphaned_and_out_of_the_reclaim_figure():
    p = plan(_graph(protected="s"), [("r", "x")])
    assert [(n.digest, reason) for n, reason in p.going] == [("x", "selected"), ("b", "attached")]
    assert dict(p.kept) == {("r", "s"): "protected s"}
    assert [n.digest for n in p.orphaned] == ["s"]
    assert p.reclaim_bytes == 10 + 40
    # Without protection it goes with its subject.
    assert {n.digest for n, _ in plan(_graph(), [("r", "x")]).going} == {"x", "s", "b"}


@pytest.mark.django_db
def test_the_graph_marks_what_the_rules_in_force_protect():
    repo, index, images, loose = sample_repo()
    protect("^latest$")
    graph, selected = load_graph(repo, [index.digest, images[0].digest])
    assert set(graph.protected) == {("team/app", index.digest)}
    p = plan(graph, selected)
    assert [n.digest for n, _ in p.going] == [images[0].digest]
    assert dict(p.kept)[("team/app", index.digest)].startswith("protected tag latest")


@pytest.mark.django_db
def test_every_change_is_audited_with_its_before_and_after(maintainer):
    rule = protect("^latest$", user=maintainer)
    rule.repositories = "team/**"
    protection.save_rule(rule, maintainer)
    protection.save_rule(rule, maintainer)  # nothing changed: no entry
    protection.delete_rule(rule, None)
    entries = list(ProtectionAudit.objects.order_by("id"))
    assert [e.action for e in entries] == ["create", "change", "delete"]
    assert entries[0].user == maintainer and entries[0].before is None
    assert entries[1].before["repositories"] == "**"
    assert entries[1].after["repositories"] == "team/**"
    assert entries[2].after is None and entries[2].before["tag_regex"] == "^latest$"
    assert not ProtectedTag.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("fields, field", [
    ({"tag_regex": "(a"}, "tag_regex"), ({"tag_regex": "(?=x)"}, "tag_regex"),
    ({"tag_regex": "a" * 10_000}, "tag_regex"), ({"tag_regex": ""}, "tag_regex"),
    ({"tag_regex": "x", "repositories": "a" * 300}, "repositories")])
def test_an_invalid_rule_is_refused_naming_its_field(fields, field):
    with pytest.raises(ValidationError) as found:
        protection.save_rule(ProtectedTag(**fields))
    assert field in found.value.message_dict
    assert not ProtectedTag.objects.exists() and not ProtectionAudit.objects.exists()


def _policy(**rules):
    return CleanupPolicy(name="p", include="team/*", brake_share=1.0, **rules)


@pytest.mark.django_db
@pytest.mark.parametrize("limit", [0, 100])
def test_a_policy_never_selects_a_protected_item_and_both_engines_agree(limit):
    repo = make_repo("team/app")
    for n in range(4):
        make_image(repo, f"b{n}", tags=[f"build-{n}"], pushed=40 + n)
    make_image(repo, "prod", tags=["build-9"], pushed=50)
    refresh(repo)
    protect("^build-9$", "team/*")
    protect("^build-0$", "other/*")  # another repository's rule
    p = _policy(remove_tag_regex="^build-", remove_tag_days=30)
    every = runs.plan_every_item(p)
    dry = runs.preview(p, limit)
    for report in (every, dry):
        [found] = report["repositories"]
        assert found["selected"] == 4 and found["protected_count"] == 1
        if limit or report is every:
            assert [(i["digest"], i["keep"]) for i in found["protected"]] == [
                (digest("prod"), ["protected"])]
    assert "protected" in every["rules"]["keep"]
    assert every["totals"]["going"] == dry["totals"]["going"] == 4
    assert every["totals"]["reclaim_bytes"] == dry["totals"]["reclaim_bytes"]


@pytest.mark.django_db
@pytest.mark.parametrize("limit", [0, 100])
def test_a_protected_artifact_of_a_going_item_is_kept_alike_by_both_engines(limit):
    repo = make_repo("team/app")
    old = make_image(repo, "old", tags=["build-1"], pushed=60)
    make_artifact(repo, "sig", subject=old, tags=[f"sha256-{old.digest[7:]}.sig"], pushed=60)
    make_artifact(repo, "att", subject=old, kind="attestation", pushed=60)
    refresh(repo)
    protect(r"\.sig$")
    p = _policy(remove_tag_regex="^build-", remove_tag_days=30)
    every = runs.plan_every_item(p)["repositories"][0]
    dry = runs.preview(p, limit)["repositories"][0]
    assert [i["digest"] for i in every["going"]] == [old.digest, digest("att")]
    assert every["kept_count"] == dry["kept_count"] == 1
    assert every["reclaim_bytes"] == dry["reclaim_bytes"]
    if limit:
        assert dry["kept"] == every["kept"]
        assert dry["kept"][0]["reason"].startswith("protected tag sha256-")
        assert [i["digest"] for i in dry["going"]] == [old.digest, digest("att")]
