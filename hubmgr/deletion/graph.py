"""Load the part of the inventory a deletion plan can touch, as a planner Graph.

The queries take long lists of ids (10,000 selected items and their children). They go through
the database cursor directly: the ORM spent most of a plan's time preparing each list value.
"""

from collections import defaultdict

from django.db import connection

from hubmgr.inventory.models import Blob, IndexChild, Kind, Manifest, ManifestBlob, Tag
from hubmgr.inventory.queries import TableState, items
from hubmgr.registry import names

from .planner import Graph, Node

# SQLite allows 32,766 parameters per statement, PostgreSQL 65,535.
CHUNK = 10_000


def selection_digests(repo, digests=(), all_matching=False, search="", filter=""):
    """The digests a selection names: explicit ones, or every item a search and filter match."""
    if all_matching:
        state = TableState(search=search, filter=filter)
        return list(items(repo, state).values_list("digest", flat=True))
    return list(dict.fromkeys(d for d in digests if names.valid_digest(d)))


def _table(model):
    return connection.ops.quote_name(model._meta.db_table)


def _select_in(sql, values, *fixed):
    """Run ``sql`` (with one ``IN ({})`` and optional leading %s params) over ``values`` in
    chunks, yielding result rows."""
    values = list(values)
    with connection.cursor() as cursor:
        for start in range(0, len(values), CHUNK):
            chunk = values[start:start + CHUNK]
            cursor.execute(sql.format(", ".join(["%s"] * len(chunk))), [*fixed, *chunk])
            yield from cursor.fetchall()


def load_graph(repo, digests) -> tuple[Graph, list]:
    """A Graph around ``digests`` of ``repo``, and the selected keys."""
    manifest_t, child_t = _table(Manifest), _table(IndexChild)
    columns = "id, digest, kind, size, manifest_size, fetched"
    rows = {}  # id -> (digest, kind, size, manifest_size, fetched); all in ``repo``

    def add(found):
        new = []
        for row in found:
            if row[0] not in rows:
                rows[row[0]] = row[1:]
                new.append(row[0])
        return new

    def load_ids(ids):
        return add(_select_in(f"SELECT {columns} FROM {manifest_t} WHERE id IN ({{}})",
                              set(ids) - set(rows)))

    selected_ids = add(_select_in(
        f"SELECT {columns} FROM {manifest_t} WHERE repository_id = %s AND digest IN ({{}})",
        digests, repo.pk))
    children = defaultdict(list)  # index id -> [child ids], in the index's order

    def load_children(index_ids):
        found = []
        for index_id, child_id in _select_in(
                f"SELECT index_id, child_id FROM {child_t} WHERE index_id IN ({{}}) ORDER BY id",
                index_ids):
            children[index_id].append(child_id)
            found.append(child_id)
        load_ids(found)
        return found

    # Down: children of selected indexes, to any depth.
    frontier = [i for i in selected_ids if rows[i][1] == Kind.INDEX]
    while frontier:
        found = load_children(frontier)
        frontier = [i for i in dict.fromkeys(found) if rows[i][1] == Kind.INDEX
                    and i not in children]
    # Up: every index that references a loaded manifest, with all its children.
    core = list(rows)
    parents = {index_id for (index_id,) in _select_in(
        f"SELECT index_id FROM {child_t} WHERE child_id IN ({{}})", core)} - set(children)
    load_ids(parents)
    load_children(parents)

    # Blobs of the core manifests, and how many manifests (any repository) reference each.
    blobs = defaultdict(set)
    for manifest_id, blob_id in _select_in(
            f"SELECT manifest_id, blob_id FROM {_table(ManifestBlob)} WHERE manifest_id IN ({{}})",
            core):
        blobs[manifest_id].add(blob_id)
    blob_ids = set().union(*blobs.values()) if blobs else set()
    blob_digest, blob_sizes = {}, {}
    for blob_id, digest, size in _select_in(
            f"SELECT id, digest, size FROM {_table(Blob)} WHERE id IN ({{}})", blob_ids):
        blob_digest[blob_id] = digest
        blob_sizes[digest] = size
    blob_refs = {blob_digest[blob_id]: refs for blob_id, refs in _select_in(
        f"SELECT blob_id, COUNT(*) FROM {_table(ManifestBlob)} WHERE blob_id IN ({{}}) "
        "GROUP BY blob_id", blob_ids)}
    # A digest is unique within a repository; rows with it elsewhere keep the manifest's blob.
    digest_refs = {row[0]: 1 for row in rows.values()}
    for (digest,) in _select_in(
            f"SELECT m.digest FROM {manifest_t} m JOIN {_table(type(repo))} r "
            f"ON r.id = m.repository_id WHERE r.registry_id = %s AND m.repository_id <> %s "
            f"AND m.digest IN ({{}})", digest_refs, repo.registry_id, repo.pk):
        digest_refs[digest] += 1

    tags = defaultdict(list)
    for manifest_id, name in _select_in(
            f"SELECT manifest_id, name FROM {_table(Tag)} WHERE manifest_id IN ({{}}) "
            "ORDER BY name", rows):
        tags[manifest_id].append(name)

    nodes = {}
    name = repo.name
    for manifest_id, (digest, kind, size, manifest_size, fetched) in rows.items():
        key = (name, digest)
        nodes[key] = Node(
            key=key, kind=kind, tags=tuple(tags.get(manifest_id, ())), size=size,
            manifest_size=manifest_size,
            blobs=frozenset(blob_digest[b] for b in blobs.get(manifest_id, ())),
            children=tuple((name, rows[c][0]) for c in children.get(manifest_id, ())),
            fetched=bool(fetched))
    selected = [(name, d) for d in digests]
    return Graph(nodes, blob_sizes, blob_refs, digest_refs), selected
