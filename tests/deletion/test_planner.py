"""The deletion planner: rules on small graphs, and properties over random ones."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubmgr.deletion.planner import ATTACHED, CHILD, SELECTED, Graph, Node, plan


def graph(*nodes, sizes=None):
    sizes = sizes or {}
    blob_sizes = {b: sizes.get(b, 100) for n in nodes for b in n.blobs}
    return Graph({n.key: n for n in nodes}, blob_sizes)


def img(repo, name, blobs=(), tags=(), size=10, attached=(), label=""):
    return Node((repo, name), "image", tuple(tags), size, 7, frozenset(blobs),
                attached=tuple((repo, a) for a in attached), label=label)


def idx(repo, name, children, tags=(), attached=(), referrers_list=False):
    return Node((repo, name), "index", tuple(tags), 0, 5, frozenset(),
                tuple((repo, c) for c in children), attached=tuple((repo, a) for a in attached),
                referrers_list=referrers_list)


def test_an_index_takes_its_unreferenced_children_and_goes_first():
    g = graph(idx("a", "i", ["c1", "c2"], tags=["1.0"]), img("a", "c1", ["base", "l1"]),
              img("a", "c2", ["base", "l2"]))
    p = plan(g, [("a", "i")])
    assert [(n.digest, r) for n, r in p.going] == [("i", SELECTED), ("c1", CHILD), ("c2", CHILD)]
    assert p.kept == []
    # base counted once; three manifest blobs.
    assert p.reclaim_bytes == 3 * 100 + 5 + 7 + 7


def test_a_child_another_index_uses_stays_and_the_plan_says_why():
    g = graph(idx("a", "i", ["c1", "c2"]), idx("a", "j", ["c2"], tags=["keep"]),
              img("a", "c1", ["l1"]), img("a", "c2", ["l2"]))
    p = plan(g, [("a", "i")])
    assert p.going_keys == [("a", "i"), ("a", "c1")]
    assert p.kept == [(("a", "c2"), "also referenced by index j (keep)")]
    assert p.reclaim_bytes == 100 + 5 + 7


def test_a_tagged_child_stays():
    g = graph(idx("a", "i", ["c1"]), img("a", "c1", ["l1"], tags=["solo"]))
    p = plan(g, [("a", "i")])
    assert p.going_keys == [("a", "i")] and p.kept == [(("a", "c1"), "has its own tags: solo")]
    assert p.reclaim_bytes == 5


def test_a_selected_image_that_an_outside_index_needs_is_kept():
    g = graph(idx("a", "i", ["c1"], tags=["1.0"]), img("a", "c1", ["l1"]))
    p = plan(g, [("a", "c1")])
    assert p.going == [] and p.kept == [(("a", "c1"), "referenced by index i (1.0)")]
    assert p.reclaim_bytes == 0


def test_selecting_the_index_and_its_child_deletes_both():
    g = graph(idx("a", "i", ["c1"]), img("a", "c1", ["l1"], tags=["t"]))
    p = plan(g, [("a", "c1"), ("a", "i")])
    assert p.going_keys == [("a", "i"), ("a", "c1")]


def test_an_attestation_goes_with_its_index():
    att = img("a", "att", ["sbom"])
    g = graph(idx("a", "i", ["c1", "att"]), img("a", "c1", ["l1"]), att)
    assert ("a", "att") in plan(g, [("a", "i")]).going_keys


def signed(*extra, sig_tags=("sha256-i.sig",)):
    """Index i (tag 1.0) over c1 and its BuildKit attestation att; a cosign signature of i,
    a notation signature n, and the referrers list f (listing n) attached to i; a signature
    of the attestation."""
    return graph(idx("a", "i", ["c1", "att"], tags=["1.0"], attached=["sig", "n", "f"]),
                 img("a", "c1", ["l1"], attached=["att"]),
                 img("a", "att", ["sbom"], attached=["att-sig"]),
                 img("a", "att-sig", ["s0"]),
                 img("a", "sig", ["s1"], tags=sig_tags), img("a", "n", ["s2"]),
                 idx("a", "f", ["n"], tags=["sha256-i"], referrers_list=True), *extra)


def test_what_is_attached_goes_with_its_subject_whatever_its_tags_and_after_it():
    g = signed()
    p = plan(g, [("a", "i")])
    assert dict((n.digest, r) for n, r in p.going) == {
        "i": SELECTED, "c1": CHILD, "att": ATTACHED, "att-sig": ATTACHED, "sig": ATTACHED,
        "n": ATTACHED, "f": ATTACHED}
    assert p.kept == [] and p.orphaned == []
    order = [k[1] for k in p.going_keys]
    for before, after in (("i", "sig"), ("i", "f"), ("f", "n"), ("c1", "att"),
                          ("att", "att-sig")):
        assert order.index(before) < order.index(after)
    assert p.reclaim_bytes == 5 * 100 + 5 * 7 + 2 * 5  # every blob and manifest


def test_an_attached_artifact_an_outside_index_lists_is_kept_and_orphaned():
    g = signed(idx("a", "other", ["n"], tags=["x"]))
    p = plan(g, [("a", "i")])
    kept = dict(p.kept)
    assert kept[("a", "n")] == "referenced by index f (sha256-i), other (x)"
    # The referrers list would list what stays: it stays too, and says why.
    assert kept[("a", "f")] == "a referrers list that also lists what stays: n"
    assert [n.digest for n in p.orphaned] == ["f", "n"]
    assert {"sig", "att", "att-sig"} <= {k[1] for k in p.going_keys}


def test_a_referrers_list_that_lists_another_subjects_referrer_stays():
    g = graph(img("a", "s", ["l"], tags=["1"], attached=["r1", "f"]),
              img("a", "t", ["l2"], tags=["2"], attached=["r2"]),
              img("a", "r1", ["e"]), img("a", "r2", ["e"]),
              idx("a", "f", ["r1", "r2"], tags=["sha256-s"], referrers_list=True))
    p = plan(g, [("a", "s")])
    assert p.going_keys == [("a", "s")]
    assert dict(p.kept) == {("a", "f"): "a referrers list that also lists what stays: r2",
                            ("a", "r1"): "referenced by index f (sha256-s)"}
    assert plan(g, [("a", "s"), ("a", "t")]).kept == []  # both subjects go: everything goes


def test_a_referrers_list_takes_nothing_as_its_children_when_it_goes_with_its_subject():
    """Anyone can tag an index sha256-<hex> and list anything in it: what it lists goes only as
    attached to its subject, and a list that also lists strangers stays. Selected, it is an
    index like any other."""
    g = graph(img("a", "s", ["l"], tags=["1"], attached=["r1", "f"]),
              img("a", "r1", ["e"]), img("a", "stranger", ["x"]),
              idx("a", "f", ["r1", "stranger"], tags=["sha256-s"], referrers_list=True))
    p = plan(g, [("a", "s")])
    assert p.going_keys == [("a", "s")]
    assert dict(p.kept) == {
        ("a", "f"): "a referrers list that also lists what stays: stranger",
        ("a", "r1"): "referenced by index f (sha256-s)"}
    assert sorted(plan(g, [("a", "f")]).going_keys) == [("a", "f"), ("a", "stranger")]


def test_keeping_attached_artifacts_keeps_them_by_choice_but_not_the_index_own_children():
    g = signed()
    p = plan(g, [("a", "i")], keep_attached=True)
    assert dict((n.digest, r) for n, r in p.going) == {
        "i": SELECTED, "c1": CHILD, "att": CHILD}
    assert dict(p.kept) == {
        ("a", key): "kept by choice: attached to i (1.0), it will be orphaned"
        for key in ("f", "n", "sig")} | {
        ("a", "att-sig"): "kept by choice: attached to att, it will be orphaned"}
    assert [n.digest for n in p.orphaned] == ["att-sig", "f", "n", "sig"]
    assert p.keep_attached


def test_an_attestation_of_an_image_that_stays_stays_with_it():
    g = graph(idx("a", "i", ["c1", "att"]), img("a", "c1", ["l1"], tags=["solo"],
                                                 attached=["att"]),
              img("a", "att", ["l2"]))
    p = plan(g, [("a", "i")])
    assert p.going_keys == [("a", "i")]
    assert dict(p.kept) == {("a", "c1"): "has its own tags: solo",
                            ("a", "att"): "attached to c1 (solo), which stays"}


def test_a_selected_orphan_goes_with_what_it_lists_and_nothing_else():
    # An orphan's subject is not in the repository: the graph knows none.
    g = graph(idx("a", "f", ["r1"], tags=["sha256-gone"], referrers_list=True),
              img("a", "r1", ["e"]), img("a", "solo", ["l"], tags=["x"]))
    p = plan(g, [("a", "f")])
    assert [(n.digest, r) for n, r in p.going] == [("f", SELECTED), ("r1", CHILD)]
    assert p.kept == [] and p.orphaned == []


def test_an_index_attached_to_its_own_child_does_not_loop():
    # Hostile: index x lists y and names y as its subject (a fallback tag on x).
    g = graph(idx("a", "x", ["y"], tags=["sha256-y"]), img("a", "y", ["l"], attached=["x"]))
    for selected in ("x", "y"):
        p = plan(g, [("a", selected)])
        assert sorted(p.going_keys) == [("a", "x"), ("a", "y")] and p.kept == []
    # The order breaks the loop somewhere; a job waits only on earlier items (see
    # test_plan_inventory.test_a_job_waits_only_on_items_before_it).
    assert p.going_keys == [("a", "x"), ("a", "y")]


def test_a_layer_shared_with_another_repository_is_not_counted():
    g = graph(img("a", "x", ["shared", "own"]), img("b", "y", ["shared"]),
              sizes={"shared": 1000, "own": 30})
    assert plan(g, [("a", "x")]).reclaim_bytes == 30 + 7


def test_the_same_manifest_in_another_repository_keeps_its_blob():
    g = graph(img("a", "x", ["l"]), img("b", "x", ["l"]))
    assert plan(g, [("a", "x")]).reclaim_bytes == 0


def test_unknown_selections_are_kept_with_a_reason():
    p = plan(graph(img("a", "x")), [("a", "nope")])
    assert p.kept == [(("a", "nope"), "not in the inventory (already deleted, or never seen)")]


@st.composite
def graphs(draw):
    blobs = [f"layer{n}" for n in range(draw(st.integers(1, 8)))]
    sizes = {b: draw(st.integers(1, 1000)) for b in blobs}
    nodes = {}
    for repo in ("a", "b"):
        count = draw(st.integers(1, 10))
        for n in range(count):
            name = f"{repo}{n}"
            # Same-digest twins across repositories happen: reuse a name sometimes.
            if repo == "b" and draw(st.booleans()) and n < 3:
                name = f"a{n}"
            earlier = [k[1] for k in nodes if k[0] == repo]
            tags = tuple(draw(st.lists(st.sampled_from(["t1", "t2", "t3"]), max_size=1,
                                       unique=True)))
            if earlier and draw(st.integers(0, 3)) == 0:
                kids = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3,
                                     unique=True))
                node = Node((repo, name), "index", tags, 0, draw(st.integers(1, 50)),
                            frozenset(), tuple((repo, k) for k in kids),
                            referrers_list=draw(st.booleans()))
            else:
                node = Node((repo, name), "image", tags, 0, draw(st.integers(1, 50)),
                            frozenset(draw(st.lists(st.sampled_from(blobs), max_size=3))))
            if node.key in nodes:
                continue
            # Attached to an earlier manifest of its repository, not one below it (a loop
            # through an index is hostile input: test_an_index_attached_to_its_own_child...).
            below = _below(nodes, node)
            subjects = [k for k in earlier if (repo, k) not in below]
            if subjects and draw(st.integers(0, 2)) == 0:
                subject = nodes[(repo, draw(st.sampled_from(subjects)))]
                subject.attached += (node.key,)
            nodes[node.key] = node
    g = Graph(nodes, sizes)
    a_keys = sorted(k for k in nodes if k[0] == "a")
    selected = draw(st.lists(st.sampled_from(a_keys), max_size=len(a_keys), unique=True))
    return g, selected, draw(st.booleans())


def _below(nodes, node):
    """The keys below ``node``, through indexes."""
    found, frontier = set(), list(node.children)
    while frontier:
        key = frontier.pop()
        if key not in found:
            found.add(key)
            frontier.extend(nodes[key].children if key in nodes else ())
    return found


def gc_freed(g, deleted):
    """Brute force: what a mark-and-sweep over the remaining manifests would not mark."""
    def stored(nodes):
        out = {}
        for n in nodes:
            out[n.digest] = n.manifest_size
            for b in n.blobs:
                out[b] = g.blob_sizes[b]
        return out

    before = stored(g.nodes.values())
    remaining = [n for k, n in g.nodes.items() if k not in deleted]
    marked = set()
    for n in remaining:
        marked.add(n.digest)
        marked |= set(n.blobs)
        marked |= {c[1] for c in n.children}
    return sum(size for blob, size in before.items() if blob not in marked)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(graphs())
def test_nothing_referenced_from_outside_the_plan_is_deleted(case):
    g, selected, keep_attached = case
    p = plan(g, selected, keep_attached)
    deleted = set(p.going_keys)
    for key in deleted:
        for parent in g.parents.get(key, ()):
            assert parent in deleted, (key, parent)
    for node, reason in p.going:
        subject = (node.repository, node.subject) if node.subject else None
        if reason == CHILD:
            assert not node.tags and key_is_child_of_deleted(g, node.key, deleted)
            assert subject is None or subject in deleted
        elif reason == ATTACHED:
            assert subject in deleted and not keep_attached
        else:
            assert node.key in selected
        # What is attached to what stays goes only when selected.
        assert subject is None or subject in deleted or node.key in selected
    kept = {k for k, _ in p.kept}
    assert set(selected) <= deleted | kept
    assert deleted <= set(g.nodes)
    # Parents come before their children in the deletion order, subjects before what is
    # attached to them (unless the two relations make a loop, which an order must break).
    position = {k: n for n, k in enumerate(p.going_keys)}
    for key in deleted if not loops(g, deleted) else ():
        for parent in g.parents.get(key, ()):
            assert position[parent] < position[key]
        node = g.nodes[key]
        if node.subject and (node.repository, node.subject) in deleted:
            assert position[(node.repository, node.subject)] < position[key]


def loops(g, keys):
    """Whether "goes before" (an index before its child, a subject before what is attached
    to it) makes a loop among ``keys``."""
    after = {k: [c for c in g.nodes[k].children if c in keys]
             + [a for a in g.nodes[k].attached if a in keys] for k in keys}
    state = {}

    def visit(key):
        state[key] = "open"
        for nxt in after[key]:
            if state.get(nxt) == "open" or (nxt not in state and visit(nxt)):
                return True
        state[key] = "done"
        return False

    return any(key not in state and visit(key) for key in keys)


def key_is_child_of_deleted(g, key, deleted):
    return any(p in deleted for p in g.parents.get(key, ()))


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(graphs())
def test_reclaim_equals_a_brute_force_recount(case):
    g, selected, keep_attached = case
    p = plan(g, selected, keep_attached)
    assert p.reclaim_bytes == gc_freed(g, set(p.going_keys))


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(graphs())
def test_an_unreferenced_untagged_child_of_a_deleted_index_is_never_left_behind(case):
    g, selected, keep_attached = case
    p = plan(g, selected, keep_attached)
    deleted = set(p.going_keys)
    for key in deleted:
        for child in g.nodes[key].children:
            node = g.nodes[child]
            subject = (node.repository, node.subject) if node.subject else None
            # (A referrers list that lists what stays stays: it lists that.)
            lists_what_stays = node.referrers_list and any(
                c not in deleted for c in node.children)
            if not node.tags and all(par in deleted for par in g.parents.get(child, ())) \
                    and (subject is None or subject in deleted) and not lists_what_stays:
                assert child in deleted


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(graphs())
def test_what_is_attached_to_a_deleted_item_goes_or_is_kept_with_a_reason(case):
    g, selected, keep_attached = case
    p = plan(g, selected, keep_attached)
    deleted, kept = set(p.going_keys), dict(p.kept)
    orphaned = {n.key for n in p.orphaned}
    for key in deleted:
        for artifact in g.nodes[key].attached:
            assert artifact in deleted or (kept[artifact] and artifact in orphaned)
            if keep_attached and artifact not in deleted and not g.parents.get(artifact):
                assert kept[artifact].startswith("kept by choice: attached to ")


def test_the_order_puts_what_is_attached_after_everything_attached_to_nothing():
    """planner.order_key: level by level (what is attached to nothing, then what is attached
    to that), indexes before images, then by digest: a signature whose digest sorts first
    still comes after every item, not pulled forward with its subject."""
    g = graph(img("a", "y", attached=["s"]), img("a", "m"), img("a", "s"),
              idx("a", "k", ["m"]), img("a", "t"), img("a", "z"))
    g.nodes[("a", "t")].subject = "s"  # a signature of the signature
    g.nodes[("a", "s")].attached = (("a", "t"),)
    p = plan(g, [("a", "y"), ("a", "k"), ("a", "z")])
    assert p.going_keys == [("a", "k"), ("a", "m"), ("a", "y"), ("a", "z"), ("a", "s"),
                            ("a", "t")]
