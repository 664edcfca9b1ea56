"""The deletion plan: plain functions over the part of the inventory a plan can touch (a
``Graph``, loaded by ``graph.load_graph``), no I/O.

Rules:
- every selected item goes, with every tag pointing at it (the registry removes them all);
- a selected index also takes the child manifests that nothing else references: no tag, no
  index outside the plan (attestations attached to the index are such children);
- an item that an index outside the plan still references is kept (deleting it would break
  that index), and so is everything that was only going because of it;
- reclaim_bytes counts the blobs the registry's garbage collector frees once the plan has run:
  configs, layers and the manifests themselves that no remaining manifest in any repository of
  the registry references.
"""

from collections import Counter
from dataclasses import dataclass, field
from itertools import chain

from hubmgr.registry.manifests import IMAGE, INDEX

SELECTED, CHILD = "selected", "unreferenced_child"


@dataclass(slots=True)
class Node:
    """One manifest in one repository."""

    key: tuple  # (repository, digest)
    kind: str = IMAGE  # IMAGE | INDEX
    tags: tuple = ()
    size: int = 0
    manifest_size: int = 0
    blobs: tuple = ()  # config and layers, distinct: keys of Graph.blob_sizes
    children: tuple = ()  # keys of child manifests (same repository)
    fetched: bool = True

    @property
    def repository(self):
        return self.key[0]

    @property
    def digest(self):
        return self.key[1]


@dataclass
class Graph:
    """The part of a registry's inventory a plan can touch.

    ``nodes`` holds the selected manifests, their children, and every index that references
    any of them (with its children). ``blob_sizes`` maps each blob (its digest, or its id in
    the database) to its size. ``blob_refs`` counts, registry-wide, the manifests that reference
    each blob of those nodes, and ``digest_refs`` the manifest rows (any repository) with each of
    their digests: a blob or manifest is freed when every reference to it is going. Either count
    may stop at one more than the references from ``nodes``: that already says one stays. Left
    empty, both are counted from ``nodes``, which is then taken to be the whole registry (as in
    tests).
    """

    nodes: dict
    blob_sizes: dict
    blob_refs: dict = field(default_factory=dict)
    digest_refs: dict = field(default_factory=dict)
    parents: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.parents:
            for node in self.nodes.values():
                for child in node.children:
                    self.parents.setdefault(child, set()).add(node.key)
        if not self.blob_refs and not self.digest_refs:
            for node in self.nodes.values():
                self.digest_refs[node.digest] = self.digest_refs.get(node.digest, 0) + 1
                for blob in node.blobs:
                    self.blob_refs[blob] = self.blob_refs.get(blob, 0) + 1


@dataclass
class Plan:
    """What a selection deletes (``going``), what it keeps and why (``kept``), and the bytes it
    frees (``reclaim_bytes``). The words are the pages' and the API's: see docs/glossary.md."""

    going: list  # [(Node, reason)] in deletion order: indexes before their children
    kept: list  # [(key, reason)]
    reclaim_bytes: int
    unread: list  # keys whose content hubmgr has not read: their blobs are not counted
    # What reclaim_bytes counts: manifests (digest -> size) and blobs (graph key -> size).
    freed_manifests: dict = field(default_factory=dict)
    freed_blobs: dict = field(default_factory=dict)

    @property
    def going_keys(self):
        return [node.key for node, _ in self.going]


# Why the planner keeps an item, in words: written here once, and used by the set-wise policy
# engine too. ``indexes`` are (digest, tags) of the indexes outside the plan that list it.
def blocked_reason(indexes) -> str:
    return ("referenced by index " + ", ".join(map(_label, indexes[:3]))
            + (" and others" if len(indexes) > 3 else ""))


def own_tags_reason(tags) -> str:
    return "has its own tags: " + ", ".join(tags[:5])


def shared_child_reason(indexes) -> str:
    return "also referenced by index " + ", ".join(map(_label, indexes[:3]))


def _label(index):
    digest, tags = index
    return f"{digest[:19]} ({', '.join(tags[:3])})" if tags else digest[:19]


def _indexes(graph, keys):
    """(digest, tags) of the indexes at ``keys``, for the reasons above."""
    return [(key[1], graph.nodes[key].tags if key in graph.nodes else ()) for key in keys]


def plan(graph: Graph, selected) -> Plan:
    selected = [k for k in dict.fromkeys(selected)]
    kept = {}
    for key in selected:
        if key not in graph.nodes:
            kept[key] = "not in the inventory (already deleted, or never seen)"
    blocked = []
    while True:
        going = {k: SELECTED for k in selected if k not in kept}
        _add_unreferenced_children(graph, going)
        # Anything an index outside the plan references must stay, and so must what was only
        # going because of it: start again without it.
        found = [key for key in going
                 if any(p not in going for p in graph.parents.get(key, ()))]
        if not found:
            break
        # Only selected items can be blocked: a child joins only when all its parents go.
        kept.update(dict.fromkeys(found, ""))
        blocked += found
    for key in blocked:  # named once the plan is settled: an index blocked later is named too
        outside = sorted(p for p in graph.parents[key] if p not in going)
        kept[key] = blocked_reason(_indexes(graph, outside))
    _explain_kept_children(graph, going, kept)
    order = delete_order(graph, going)
    unread = [k for k in order if not graph.nodes[k].fetched]
    manifests, blobs = freed(graph, set(going))
    return Plan([(graph.nodes[k], going[k]) for k in order], sorted(kept.items()),
                sum(manifests.values()) + sum(blobs.values()), unread, manifests, blobs)


def _add_unreferenced_children(graph, going):
    """Add children of going indexes that have no tag and only going parents (to a fixpoint:
    an index of indexes, or a child shared by two selected indexes)."""
    frontier = [k for k in going if graph.nodes[k].kind == INDEX]
    while frontier:
        nxt = []
        for index_key in frontier:
            for child in graph.nodes[index_key].children:
                if child in going or child not in graph.nodes:
                    continue
                node = graph.nodes[child]
                if node.tags:
                    continue
                if all(p in going for p in graph.parents.get(child, ())):
                    going[child] = CHILD
                    if node.kind == INDEX:
                        nxt.append(child)
        frontier = nxt


def _explain_kept_children(graph, going, kept):
    for key, reason in list(going.items()):
        node = graph.nodes[key]
        for child in node.children:
            if child in going or child in kept:
                continue
            cnode = graph.nodes.get(child)
            if cnode is None:
                continue
            if cnode.tags:
                kept[child] = own_tags_reason(cnode.tags)
            else:
                outside = sorted(p for p in graph.parents.get(child, ()) if p not in going)
                kept[child] = shared_child_reason(_indexes(graph, outside))


def delete_order(graph, going):
    """Parents before children, so no index ever points at a missing child; among the
    parents of one item, by key, so that the order is the same in every process."""
    order, seen = [], set()

    def visit(key):
        if key in seen:
            return
        seen.add(key)
        for parent in sorted(graph.parents.get(key, ())):
            if parent in going:
                visit(parent)
        order.append(key)

    indexes = sorted(k for k in going if graph.nodes[k].kind == INDEX)
    for key in indexes + sorted(set(going).difference(indexes)):
        visit(key)
    return order


def freed(graph: Graph, going: set) -> tuple[dict, dict]:
    """What the garbage collector frees once ``going`` is deleted: the manifests (digest ->
    size) and the blobs (key in ``graph.blob_sizes`` -> size) that no remaining manifest
    references.

    A remaining index's children never go (the plan keeps them), so a manifest's own blob is
    freed exactly when every row with its digest goes.

    The rule, once: freed when as many references go as there are. The counts are the ones
    the inventory's triggers keep (``graph.load_graph`` reads them); the set-wise policy
    engine compares the same counts in SQL (``setwise._OWN``, ``setwise._FREED_BLOBS``), and
    ``tests/policies/test_engines_agree.py`` holds the two to the same bytes.
    """
    nodes = [graph.nodes[key] for key in going]
    going_digests = Counter(node.key[1] for node in nodes)
    going_blobs = Counter(chain.from_iterable(node.blobs for node in nodes))
    sizes = {node.key[1]: node.manifest_size for node in nodes}
    digest_refs, blob_refs, blob_sizes = graph.digest_refs, graph.blob_refs, graph.blob_sizes
    manifests = {d: sizes[d] for d, n in going_digests.items() if n >= digest_refs.get(d, 0)}
    blobs = {b: blob_sizes.get(b, 0) for b, n in going_blobs.items()
             if n >= blob_refs.get(b, 0)}
    return manifests, blobs
