"""The deletion plan: plain functions over the part of the inventory a plan can touch (a
``Graph``, loaded by ``graph.load_graph``), no I/O.

Rules:
- every selected item goes, with every tag pointing at it (the registry removes them all);
- a going index also takes the child manifests that nothing else references: no tag, no
  index outside the plan, and not attached to something that stays (a BuildKit attestation
  in an index goes with its image);
- a going item takes what is attached to it (``Node.attached``: a signature, an attestation,
  an SBOM, a referrer, a referrers list), whatever their tags (cosign's ``sha256-<hex>.sig``
  and the referrers fallback tag belong to them), and what those take in turn, by these
  same rules; unless the plan keeps attached artifacts by choice (``keep_attached``): then
  only those inside a going index go (as its children), and the others are kept, orphaned;
- a referrers list that is not selected (it would go with its subject) goes only when every
  manifest it lists goes, as attached to that subject: it takes nothing as its children
  (anyone can tag an index ``sha256-<hex>`` and list anything in it); otherwise it is kept,
  with the manifests that stay named;
- what is attached to a going item and stays is orphaned once the plan ran: ``Plan.orphaned``;
- an item that an index outside the plan still references is kept (deleting it would break
  that index), and so is everything that was only going because of it;
- a protected item (``Graph.protected``: a tag a protected-tag rule finds, see
  deletion.protection) is kept when selected, and when it would go as attached to a going item
  (it stays, orphaned); what a protected index lists stays by the rule above;
- each going item's reason: SELECTED; else ATTACHED when what it is attached to goes (and
  the plan does not keep attached artifacts); else CHILD;
- the deletion order: an index before its children, a subject before what is attached to it
  (a job deletes an attached artifact only once its subject is deleted); otherwise by
  ``order_key``;
- reclaim_bytes counts the blobs the registry's garbage collector frees once the plan has run:
  configs, layers and the manifests themselves that no remaining manifest in any repository of
  the registry references.
"""

from collections import Counter
from dataclasses import dataclass, field
from itertools import chain

from hubmgr.registry.manifests import IMAGE, INDEX

SELECTED, CHILD, ATTACHED = "selected", "unreferenced_child", "attached"


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
    attached: tuple = ()  # keys of what is attached to it (same repository)
    subject: str = ""  # digest of what it is attached to; "" when none (or orphaned)
    referrers_list: bool = False  # a referrers fallback index (or an earlier version of one)
    label: str = ""  # what it is when an artifact (artifacts.Artifact.label), else ""
    tool: str = ""  # who made the artifact, when known

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
    protected: dict = field(default_factory=dict)  # key -> why a protected-tag rule keeps it

    def __post_init__(self):
        if not self.parents:
            for node in self.nodes.values():
                for child in node.children:
                    self.parents.setdefault(child, set()).add(node.key)
        for node in self.nodes.values():  # (a graph made by hand may name one side only)
            for key in node.attached:
                if key in self.nodes and not self.nodes[key].subject:
                    self.nodes[key].subject = node.digest
        if not self.blob_refs and not self.digest_refs:
            for node in self.nodes.values():
                self.digest_refs[node.digest] = self.digest_refs.get(node.digest, 0) + 1
                for blob in node.blobs:
                    self.blob_refs[blob] = self.blob_refs.get(blob, 0) + 1


@dataclass
class Plan:
    """What a selection deletes (``going``), what it keeps and why (``kept``), and the bytes it
    frees (``reclaim_bytes``). The words are the pages' and the API's: see docs/glossary.md."""

    going: list  # [(Node, reason)] in deletion order (see delete_order)
    kept: list  # [(key, reason)]
    reclaim_bytes: int
    unread: list  # keys whose content hubmgr has not read: their blobs are not counted
    # What reclaim_bytes counts: manifests (digest -> size) and blobs (graph key -> size).
    freed_manifests: dict = field(default_factory=dict)
    freed_blobs: dict = field(default_factory=dict)
    # What is attached to a going item and stays, orphaned once it goes: [Node], by key.
    orphaned: list = field(default_factory=list)
    keep_attached: bool = False  # the choice the plan was made with

    @property
    def going_keys(self):
        return [node.key for node, _ in self.going]


# Why the planner keeps an item, in words: written here once, and used by the set-wise policy
# engine too. ``indexes`` are (digest, tags) of the indexes outside the plan that list it;
# ``subject`` is (digest, tags) of what it is attached to.
def blocked_reason(indexes) -> str:
    return ("referenced by index " + ", ".join(map(_label, indexes[:3]))
            + (" and others" if len(indexes) > 3 else ""))


def own_tags_reason(tags) -> str:
    return "has its own tags: " + ", ".join(tags[:5])


def shared_child_reason(indexes) -> str:
    return "also referenced by index " + ", ".join(map(_label, indexes[:3]))


def kept_by_choice_reason(subject) -> str:
    return f"kept by choice: attached to {_label(subject)}, it will be orphaned"


def subject_stays_reason(subject) -> str:
    return f"attached to {_label(subject)}, which stays"


def staying_entries_reason(digests) -> str:
    """A referrers list going with its subject, but listing ``digests``, which stay."""
    return ("a referrers list that also lists what stays: "
            + ", ".join(d[:19] for d in digests[:3])
            + (" and others" if len(digests) > 3 else ""))


def _label(index):
    digest, tags = index
    return f"{digest[:19]} ({', '.join(tags[:3])})" if tags else digest[:19]


def _indexes(graph, keys):
    """(digest, tags) of the indexes at ``keys``, for the reasons above."""
    return [(key[1], graph.nodes[key].tags if key in graph.nodes else ()) for key in keys]


def plan(graph: Graph, selected, keep_attached=False) -> Plan:
    selected = [k for k in dict.fromkeys(selected)]
    kept = {}
    for key in selected:
        if key not in graph.nodes:
            kept[key] = "not in the inventory (already deleted, or never seen)"
        elif key in graph.protected:
            kept[key] = graph.protected[key]
    blocked = []
    staying = {}  # a referrers list kept -> what it lists that stayed when it was found
    while True:
        going = {k: SELECTED for k in selected if k not in kept}
        _cascade(graph, going, kept, keep_attached)
        # Anything an index outside the plan references must stay, and so must what was only
        # going because of it: start again without it. So must a referrers list that goes
        # with its subject but lists something that stays.
        found = [key for key in going
                 if any(p not in going for p in graph.parents.get(key, ()))]
        for key, reason in going.items():
            node = graph.nodes[key]
            if reason != SELECTED and node.referrers_list:
                entries = [c[1] for c in node.children if c not in going]
                if entries:
                    staying.setdefault(key, entries)
                    found.append(key)
        if not found:
            break
        kept.update(dict.fromkeys(found, ""))
        blocked += found
    for key in blocked:  # named once the plan is settled: an index blocked later is named too
        outside = sorted(p for p in graph.parents.get(key, ()) if p not in going)
        kept[key] = (blocked_reason(_indexes(graph, outside)) if outside
                     else staying_entries_reason(staying[key]))
    for key in going:
        if going[key] != SELECTED and not keep_attached and _subject(graph, key) in going:
            going[key] = ATTACHED
    _explain_kept_children(graph, going, kept)
    orphaned = _explain_kept_attached(graph, going, kept, keep_attached)
    order = delete_order(graph, going)
    unread = [k for k in order if not graph.nodes[k].fetched]
    manifests, blobs = freed(graph, set(going))
    return Plan([(graph.nodes[k], going[k]) for k in order], sorted(kept.items()),
                sum(manifests.values()) + sum(blobs.values()), unread, manifests, blobs,
                orphaned, keep_attached)


def _subject(graph, key):
    """The key of what ``key`` is attached to, or None."""
    node = graph.nodes[key]
    return (node.repository, node.subject) if node.subject else None


def _cascade(graph, going, kept, keep_attached):
    """Add, to a fixpoint, what going items take along: children of going indexes that have
    no tag, only going parents and no subject that stays (none of a referrers list that is
    not selected); what is attached to going items (with ``keep_attached``, only what joins
    as such a child). Nothing in ``kept`` joins; a protected artifact is kept instead."""
    frontier = list(going)
    while frontier:
        nxt = []
        for key in frontier:
            node = graph.nodes[key]
            listed = () if node.referrers_list and going[key] != SELECTED else node.children
            for child in listed:
                if child not in going and child not in kept and _joins_as_child(graph, child,
                                                                                going):
                    going[child] = CHILD
                    nxt.append(child)
            for artifact in node.attached:
                if artifact in going or artifact in kept or artifact not in graph.nodes:
                    continue
                if artifact in graph.protected:  # (whatever the choice: it stays)
                    kept[artifact] = graph.protected[artifact]
                elif not keep_attached or _joins_as_child(graph, artifact, going):
                    going[artifact] = CHILD  # (named once the plan is settled)
                    nxt.append(artifact)
        frontier = nxt


def _joins_as_child(graph, key, going) -> bool:
    node = graph.nodes.get(key)
    if node is None or node.tags:
        return False
    parents = graph.parents.get(key, ())
    subject = _subject(graph, key)
    return (bool(parents) and all(p in going for p in parents)
            and (subject is None or subject in going))


def _explain_kept_children(graph, going, kept):
    for key in list(going):
        node = graph.nodes[key]
        for child in node.children:
            if child in going or child in kept:
                continue
            cnode = graph.nodes.get(child)
            if cnode is None:
                continue
            subject = _subject(graph, child)
            outside = sorted(p for p in graph.parents.get(child, ()) if p not in going)
            if cnode.tags:
                kept[child] = own_tags_reason(cnode.tags)
            elif outside or subject is None:
                kept[child] = shared_child_reason(_indexes(graph, outside))
            else:
                kept[child] = subject_stays_reason(_indexes(graph, [subject])[0])


def _explain_kept_attached(graph, going, kept, keep_attached) -> list:
    """Name why what is attached to a going item stays (by choice, or the reason it was kept
    for already); returns those nodes: they will be orphaned."""
    orphaned = []
    for key in going:
        for artifact in graph.nodes[key].attached:
            if artifact in going or artifact not in graph.nodes:
                continue
            if artifact not in kept:  # (only by choice: every other one joins or is kept)
                kept[artifact] = kept_by_choice_reason(_indexes(graph, [key])[0])
            orphaned.append(graph.nodes[artifact])
    return sorted(orphaned, key=lambda node: node.key)


def delete_order(graph, going):
    """Parents before children, so no index ever points at a missing child, and a subject
    before what is attached to it, so that an artifact goes only once its subject went (a
    job keeps it when the subject was kept); otherwise by ``order_key``, and among the
    parents of one item by key, so that the order is the same in every process. (Hostile
    input can make the two relations loop: the order then breaks the loop somewhere, and a
    job waits only on earlier items.)"""
    order, seen = [], set()
    levels = {}

    def level(key):
        """How many going subjects stand above ``key`` (0: it is attached to none)."""
        if key not in levels:
            levels[key] = 0  # (first: a loop of subjects ends here)
            subject = _subject(graph, key)
            levels[key] = level(subject) + 1 if subject in going else 0
        return levels[key]

    def visit(key):
        if key in seen:
            return
        seen.add(key)
        for parent in sorted(graph.parents.get(key, ())):
            if parent in going:
                visit(parent)
        node = graph.nodes.get(key)
        if node is not None and node.subject and (node.repository, node.subject) in going:
            visit((node.repository, node.subject))
        order.append(key)

    for key in sorted(going, key=lambda k: order_key(level(k), graph.nodes[k].kind, k[1])):
        visit(key)
    return order


def order_key(level, kind, digest):
    """Where a going item stands in the deletion order when nothing it waits for comes after
    it: what is attached to nothing first, then what is attached to it, and so on (a
    signature of an attestation after the attestation); at each level indexes before images;
    then by digest. The set-wise policy engine orders by the same key in SQL, and falls back
    on ``delete_order`` where an item waits for one that the key puts after it (an index
    listed by another index of its level with a later digest; what an attached index lists
    that is attached to nothing)."""
    return level, kind != INDEX, digest


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
