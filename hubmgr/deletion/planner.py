"""The deletion plan: plain functions over a snapshot of the inventory, no I/O.

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

from dataclasses import dataclass, field

SELECTED, CHILD = "selected", "unreferenced_child"


@dataclass(frozen=True)
class Node:
    """One manifest in one repository."""

    key: tuple  # (repository, digest)
    kind: str = "image"  # "image" | "index"
    tags: tuple = ()
    size: int = 0
    manifest_size: int = 0
    blobs: frozenset = frozenset()  # digests of config and layers
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
    """Manifests of one registry, as much of it as the plan can touch.

    ``nodes`` must hold the selected manifests, their children, every index that references any
    of them, and every manifest (any repository) that shares a blob or digest with them.
    ``blob_sizes`` maps blob digest to size.
    """

    nodes: dict
    blob_sizes: dict
    parents: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.parents:
            for node in self.nodes.values():
                for child in node.children:
                    self.parents.setdefault(child, set()).add(node.key)


@dataclass
class Plan:
    items: list  # [(Node, reason)] in deletion order: indexes before their children
    kept: list  # [(key, reason)]
    reclaim_bytes: int
    unknown: list  # keys whose content hubmgr has not read: their blobs are not counted

    @property
    def keys(self):
        return [node.key for node, _ in self.items]


def _describe(graph, key):
    node = graph.nodes.get(key)
    if node and node.tags:
        return f"{key[1][:19]} ({', '.join(node.tags[:3])})"
    return key[1][:19]


def plan(graph: Graph, selected) -> Plan:
    selected = [k for k in dict.fromkeys(selected)]
    kept = {}
    for key in selected:
        if key not in graph.nodes:
            kept[key] = "not in the inventory (already deleted, or never seen)"
    while True:
        going = {k: SELECTED for k in selected if k not in kept}
        _add_unreferenced_children(graph, going)
        # Anything an index outside the plan references must stay, and so must what was only
        # going because of it: start again without it.
        blocked = {}
        for key in going:
            outside = sorted(p for p in graph.parents.get(key, ()) if p not in going)
            if outside:
                blocked[key] = "referenced by index " + ", ".join(
                    _describe(graph, p) for p in outside[:3]) + (" and others" if
                                                                 len(outside) > 3 else "")
        if not blocked:
            break
        # Only selected items can be blocked: a child joins only when all its parents go.
        kept.update(blocked)
    _explain_kept_children(graph, going, kept)
    order = _delete_order(graph, going)
    items = [(graph.nodes[k], going[k]) for k in order]
    unknown = [k for k in order if not graph.nodes[k].fetched]
    return Plan(items, sorted(kept.items()), reclaim(graph, set(going)), unknown)


def _add_unreferenced_children(graph, going):
    """Add children of going indexes that have no tag and only going parents (to a fixpoint:
    an index of indexes, or a child shared by two selected indexes)."""
    frontier = [k for k in going if graph.nodes[k].kind == "index"]
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
                    if node.kind == "index":
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
                kept[child] = "has its own tags: " + ", ".join(cnode.tags[:5])
            else:
                outside = sorted(p for p in graph.parents.get(child, ()) if p not in going)
                kept[child] = "also referenced by index " + ", ".join(
                    _describe(graph, p) for p in outside[:3])


def _delete_order(graph, going):
    """Parents before children, so no index ever points at a missing child."""
    order, seen = [], set()

    def visit(key):
        if key in seen:
            return
        seen.add(key)
        for parent in graph.parents.get(key, ()):
            if parent in going:
                visit(parent)
        order.append(key)

    for key in sorted(going, key=lambda k: (graph.nodes[k].kind != "index", k)):
        visit(key)
    return order


def reclaim(graph: Graph, going: set) -> int:
    """Bytes of blobs that no remaining manifest references once ``going`` is deleted."""
    remaining = [n for k, n in graph.nodes.items() if k not in going]
    still_blobs = set()
    still_manifests = set()
    for node in remaining:
        still_blobs |= node.blobs
        still_manifests.add(node.digest)
        still_manifests.update(c[1] for c in node.children)
    freed = 0
    counted = set()
    for key in going:
        node = graph.nodes[key]
        if node.digest not in still_manifests and node.digest not in counted:
            counted.add(node.digest)
            freed += node.manifest_size
        for blob in node.blobs:
            if blob not in still_blobs and blob not in counted:
                counted.add(blob)
                freed += graph.blob_sizes.get(blob, 0)
    return freed
