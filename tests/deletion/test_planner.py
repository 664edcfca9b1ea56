"""The deletion planner: rules on small graphs, and properties over random ones."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubmgr.deletion.planner import CHILD, SELECTED, Graph, Node, plan


def graph(*nodes, sizes=None):
    sizes = sizes or {}
    blob_sizes = {b: sizes.get(b, 100) for n in nodes for b in n.blobs}
    return Graph({n.key: n for n in nodes}, blob_sizes)


def img(repo, name, blobs=(), tags=(), size=10):
    return Node((repo, name), "image", tuple(tags), size, 7, frozenset(blobs))


def idx(repo, name, children, tags=()):
    return Node((repo, name), "index", tuple(tags), 0, 5, frozenset(),
                tuple((repo, c) for c in children))


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
                            frozenset(), tuple((repo, k) for k in kids))
            else:
                node = Node((repo, name), "image", tags, 0, draw(st.integers(1, 50)),
                            frozenset(draw(st.lists(st.sampled_from(blobs), max_size=3))))
            nodes.setdefault(node.key, node)
    g = Graph(nodes, sizes)
    a_keys = sorted(k for k in nodes if k[0] == "a")
    selected = draw(st.lists(st.sampled_from(a_keys), max_size=len(a_keys), unique=True))
    return g, selected


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
    g, selected = case
    p = plan(g, selected)
    deleted = set(p.going_keys)
    for key in deleted:
        for parent in g.parents.get(key, ()):
            assert parent in deleted, (key, parent)
    for node, reason in p.going:
        if reason == CHILD:
            assert not node.tags and key_is_child_of_deleted(g, node.key, deleted)
        else:
            assert node.key in selected
    kept = {k for k, _ in p.kept}
    assert set(selected) <= deleted | kept
    assert deleted <= set(g.nodes)
    # Parents come before their children in the deletion order.
    position = {k: n for n, k in enumerate(p.going_keys)}
    for key in deleted:
        for parent in g.parents.get(key, ()):
            assert position[parent] < position[key]


def key_is_child_of_deleted(g, key, deleted):
    return any(p in deleted for p in g.parents.get(key, ()))


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(graphs())
def test_reclaim_equals_a_brute_force_recount(case):
    g, selected = case
    p = plan(g, selected)
    assert p.reclaim_bytes == gc_freed(g, set(p.going_keys))


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(graphs())
def test_an_unreferenced_untagged_child_of_a_deleted_index_is_never_left_behind(case):
    g, selected = case
    p = plan(g, selected)
    deleted = set(p.going_keys)
    for key in deleted:
        for child in g.nodes[key].children:
            node = g.nodes[child]
            if not node.tags and all(par in deleted for par in g.parents.get(child, ())):
                assert child in deleted
