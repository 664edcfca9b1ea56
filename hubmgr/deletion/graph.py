"""Load the part of the inventory a deletion plan can touch, as a planner Graph.

The queries take long lists of ids (100,000 selected items and their children). Each list goes
as one parameter (a PostgreSQL array, a JSON array on SQLite) through the database cursor: the
ORM spent most of a plan's time preparing each list value, and PostgreSQL answered long
``IN (%s, %s, …)`` lists with parallel sequential scans.

What a plan frees rests on the counts the inventory's triggers keep (``Blob.manifest_count``,
``Manifest.digest_repositories``): the same counts the set-wise policy engine compares, so the
two engines' freed bytes have one source (``planner.freed`` states the rule).
"""

import gc
import json
from collections import defaultdict
from contextlib import contextmanager
from itertools import islice

from django.db import connection, transaction

from hubmgr.inventory.catalog.queries import TableState, items
from hubmgr.inventory.models import Blob, IndexChild, Kind, Manifest, ManifestBlob, Tag
from hubmgr.registry import names
from hubmgr.registry.artifacts import MAX_DEPTH, Artifact

from .planner import Graph, Node
from .protection import Protection


def selection_digests(repo, digests=(), all_matching=False, search="", filter=""):
    """The digests a selection names: explicit ones, or every item a search and filter match."""
    if all_matching:
        state = TableState(search=search, filter=filter)
        return list(items(repo, state).values_list("digest", flat=True))
    return list(dict.fromkeys(d for d in digests if names.valid_digest(d)))


def _table(model):
    return connection.ops.quote_name(model._meta.db_table)


def values_subquery(values, kind):
    """A subquery over ``values`` (one column, ``value``) and its one parameter."""
    if connection.vendor == "postgresql":
        # As an array literal: psycopg's dump of a 100,000-item list took more memory than
        # the list.
        if kind == "text":
            values = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
        return f"SELECT unnest(%s::{kind}[]) AS value", "{" + ",".join(map(str, values)) + "}"
    return "SELECT value FROM json_each(%s)", json.dumps(values)
    # The queries below read "FROM (values) v CROSS JOIN table ... WHERE": SQLite takes a CROSS
    # JOIN's left side as the outer loop, so it walks the list and looks each value up, rather
    # than scanning the table once per value (it has no statistics on json_each: 50,000 ids
    # took minutes). PostgreSQL plans a CROSS JOIN with a WHERE as any join.


def _select(sql, *params):
    """Rows of ``sql``, its ``%s`` and ``{}`` filled from ``params`` in order: a value fills a
    ``%s``; a collection (ids, or text) fills a ``{}`` with a subquery over its values, sent as
    one parameter."""
    args, subqueries = [], []
    for param in params:
        if isinstance(param, (list, set, dict)):
            values = list(param)
            kind = "text" if values and isinstance(values[0], str) else "bigint"
            subquery, param = values_subquery(values, kind)
            subqueries.append(subquery)
        args.append(param)
    with connection.cursor() as cursor:
        cursor.execute(sql.format(*subqueries), args)
        while rows := cursor.fetchmany(5000):  # in chunks: a round trip per row is costly
            yield from rows


@contextmanager
def probing():
    """One transaction (one view of the inventory; a savepoint inside an outer one) in which
    PostgreSQL looks each listed value up in an index. Its cost model preferred hashing a
    whole table, a sequential scan of every repository's manifests that is slower than
    probing the index for each listed digest and grows with the registry, not with the
    selection. (The set-wise policy engine probes so for its statements that start from the
    going rows.) What was set before comes back afterwards; after an error, the rollback of
    the savepoint undoes the settings with the rest."""
    with transaction.atomic():
        if connection.vendor != "postgresql":
            yield
            return
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('enable_hashjoin'), "
                           "current_setting('enable_mergejoin'), "
                           "set_config('enable_hashjoin', 'off', true), "
                           "set_config('enable_mergejoin', 'off', true)")
            before = cursor.fetchone()[:2]
        yield
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('enable_hashjoin', %s, true), "
                           "set_config('enable_mergejoin', %s, true)", list(before))


@contextmanager
def collector_paused():
    """Python's cycle collector paused while a plan or a policy run makes its graph nodes,
    items and report: hundreds of thousands of objects, none in a cycle, each walked again by
    every collection of the oldest generation, for nothing: that walking was most of the
    run's time. Reference counting frees as usual."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_graph(repo, digests) -> tuple[Graph, list]:
    """A Graph around ``digests`` of ``repo``, and the selected keys."""
    digests = list(dict.fromkeys(digests))
    if not digests:  # (an empty list would be taken for ids)
        return Graph({}, {}), []
    with probing():
        graph = _load({repo.pk: repo.name},
                      "WHERE m.repository_id = %s AND m.digest = v.value", digests, repo.pk)
    return graph, [(repo.name, d) for d in digests]


def load_graphs(names, ids, tags=None) -> Graph:
    """One Graph around the manifests ``ids`` of several repositories of one registry (``names``
    maps each repository's id to its name), for planning each repository in turn: a plan only
    reaches its own repository's nodes (an index and its children share a repository), and
    the blob counts cover every repository's nodes at once, which is what a plan of one of
    them needs (another repository's reference keeps a blob, as a reference from outside
    does). Cleanup policies plan hundreds of repositories this way in a few queries.
    ``tags`` may give the tags of some of the manifests (by id), read with them already."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        return Graph({}, {})
    with probing():
        return _load(names, "WHERE m.id = v.value", ids, tags=tags or {})


def _load(names, where, *params, tags=None) -> Graph:
    """The Graph around the manifests that ``where`` (over ``m``, a manifest, and ``v.value``,
    one of the first of ``params``) selects; ``tags`` gives some of their tags already.

    The core, what a plan may delete: the selected manifests, their children at any depth,
    and what is attached to any of these (a signature, a referrer, a referrers list: rows of
    the same repository whose subject is its digest, not orphaned), with their children and
    what is attached to them in turn, MAX_DEPTH rounds at most. Around it, every index that
    lists a core manifest, with its children, which only keep things."""
    manifest_t, child_t, link_t = _table(Manifest), _table(IndexChild), _table(ManifestBlob)
    # The digest_repositories column: how many repositories of the registry hold this digest
    # (each keeps the manifest's own blob).
    columns = ", ".join(f"m.{c}" for c in (
        "id", "repository_id", "digest", "kind", "size", "manifest_size", "fetched",
        "digest_repositories", "subject", "is_orphan", "referrers_list", "artifact",
        "artifact_type", "tool"))
    # Nodes are made as rows arrive and completed in place (a plan may hold 100,000 of them:
    # no row tuples or lists kept beside them).
    nodes = {}  # id -> Node
    digest_refs = {}
    kinds = {Kind.IMAGE.value: Kind.IMAGE.value, Kind.INDEX.value: Kind.INDEX.value}

    def add(found):
        new = []
        for (manifest_id, repo_id, digest, kind, size, manifest_size, fetched, copies, subject,
             orphan, listed, artifact, artifact_type, tool) in found:
            if manifest_id not in nodes:
                node = nodes[manifest_id] = Node(
                    key=(names[repo_id], digest), kind=kinds.get(kind, kind), size=size,
                    manifest_size=manifest_size, fetched=bool(fetched))
                if subject and not orphan:  # an orphan's subject is not in the repository
                    node.subject = subject
                if artifact or listed:
                    node.label = Artifact(artifact or kind, artifact_type, tool, subject,
                                          bool(listed)).label
                    node.tool, node.referrers_list = tool, bool(listed)
                digest_refs[digest] = max(copies or 0, 1)
                new.append(manifest_id)
        return new

    def load_ids(ids):
        ids = {i for i in ids if i not in nodes}
        if ids:
            add(_select(f"SELECT {columns} FROM ({{}}) v CROSS JOIN {manifest_t} m "
                        "WHERE m.id = v.value", ids))

    selected_ids = add(_select(f"SELECT {columns} FROM ({{}}) v CROSS JOIN {manifest_t} m "
                               + where, *params))
    children = defaultdict(list)  # index id -> [child ids], in the index's order
    expanded = set()  # indexes whose children are loaded

    def load_children(index_ids):
        found = []
        if index_ids:
            expanded.update(index_ids)
            for index_id, child_id in _select(
                    f"SELECT c.index_id, c.child_id FROM ({{}}) v CROSS JOIN {child_t} c "
                    "WHERE c.index_id = v.value ORDER BY c.id", set(index_ids)):
                children[index_id].append(child_id)
                found.append(child_id)
            load_ids(found)
        return found

    def down(ids):
        """Load the children of the indexes among ``ids``, to any depth."""
        frontier = [i for i in ids if nodes[i].kind == Kind.INDEX and i not in expanded]
        while frontier:
            found = load_children(frontier)
            frontier = [i for i in dict.fromkeys(found) if nodes[i].kind == Kind.INDEX
                        and i not in expanded]

    def load_attached(ids):
        """Load what is attached to the manifests ``ids``; returns the new rows' ids. Looked
        up only for those the triggers mark (Manifest.has_attached). (The condition on subject
        is the m_subject index's own, which lets both databases use it.)"""
        before = len(nodes)
        add(_select(f"SELECT {columns} FROM ({{}}) v CROSS JOIN {manifest_t} s "
                    f"JOIN {manifest_t} m ON m.repository_id = s.repository_id "
                    "AND m.subject = s.digest WHERE s.id = v.value AND s.has_attached "
                    "AND NOT (m.subject = '') AND NOT m.is_orphan", ids))
        return list(islice(nodes, before, None))

    # Down: children of selected indexes, to any depth. Along: what is attached to all of
    # these, and down from that, round by round.
    down(selected_ids)
    frontier = list(nodes)
    for _ in range(MAX_DEPTH):
        if not frontier:
            break
        before = len(nodes)
        down(load_attached(frontier))
        frontier = list(islice(nodes, before, None))
    # Up: every index that references a loaded manifest, with all its children. Only the core
    # (loaded before this) can go: the indexes above are not selected, and so nor is what only
    # they reference.
    core = set(nodes)
    parents = {index_id for (index_id,) in _select(
        f"SELECT c.index_id FROM ({{}}) v CROSS JOIN {child_t} c WHERE c.child_id = v.value",
        core)} - expanded
    load_ids(parents)
    load_children(parents)
    # What a core artifact is attached to, where not loaded yet (an artifact that an index
    # going with another subject lists, say): a kept one's reason names it, with its tags.
    keys = {node.key for node in nodes.values()}
    unnamed = [i for i in core if nodes[i].subject
               and (nodes[i].repository, nodes[i].subject) not in keys]
    if unnamed:
        add(_select(f"SELECT {columns} FROM ({{}}) v CROSS JOIN {manifest_t} s "
                    f"JOIN {manifest_t} m ON m.repository_id = s.repository_id "
                    "AND m.digest = s.subject WHERE s.id = v.value", unnamed))
    for index_id, kids in children.items():
        nodes[index_id].children = tuple(nodes[c].key for c in kids)
    children.clear()
    attached = defaultdict(list)  # subject key -> keys of what is attached to it
    for node in nodes.values():
        if node.subject:
            attached[(node.repository, node.subject)].append(node.key)
    by_key = {node.key: node for node in nodes.values()}
    for key, found in attached.items():
        if key in by_key:
            by_key[key].attached = tuple(sorted(found))

    refs = {}  # blob id -> core manifests referencing it
    for manifest_id, blob_id in _select(
            f"SELECT l.manifest_id, l.blob_id FROM ({{}}) v CROSS JOIN {link_t} l "
            "WHERE l.manifest_id = v.value", core):
        node = nodes[manifest_id]
        node.blobs += (blob_id,)  # distinct: (manifest, blob) is unique
        refs[blob_id] = refs.get(blob_id, 0) + 1
    # A blob is freed when every reference to it is going: the triggers count them all. (Never
    # fewer than the core's own: a count behind the links would claim too much freed.)
    blob_sizes = {}
    for blob_id, size, count in _select(
            f"SELECT b.id, b.size, b.manifest_count FROM ({{}}) v CROSS JOIN {_table(Blob)} b "
            "WHERE b.id = v.value", refs):
        blob_sizes[blob_id] = size
        refs[blob_id] = max(refs[blob_id], count or 0)

    unknown = list(nodes)
    if tags:
        unknown = []
        for manifest_id, node in nodes.items():
            if manifest_id in tags:
                node.tags = tags[manifest_id]
            else:
                unknown.append(manifest_id)
    if unknown:
        for manifest_id, tag in _select(
                f"SELECT t.manifest_id, t.name FROM ({{}}) v CROSS JOIN {_table(Tag)} t "
                "WHERE t.manifest_id = v.value ORDER BY t.name", unknown):
            nodes[manifest_id].tags += (tag,)

    graph = Graph(by_key, blob_sizes, refs, digest_refs)
    protection = Protection.current()
    if protection:
        for node in nodes.values():
            if node.tags and (why := protection.protects(node.repository, node.tags)):
                graph.protected[node.key] = why
    return graph


def blob_digests(keys) -> dict:
    """The digest of each blob key of a Graph: a Graph from ``load_graph`` keys blobs by their
    id in the database; one built by hand (tests) by their digest, which is kept as it is."""
    ids = [k for k in keys if isinstance(k, int)]
    found = {k: k for k in keys if not isinstance(k, int)}
    if ids:
        found.update(_select(f"SELECT b.id, b.digest FROM ({{}}) v CROSS JOIN {_table(Blob)} b "
                             "WHERE b.id = v.value", ids))
    return found
