"""Load the part of the inventory a deletion plan can touch, as a planner Graph."""

from collections import defaultdict

from hubmgr.inventory.models import Blob, IndexChild, Manifest, ManifestBlob, Tag
from hubmgr.inventory.queries import TableState, items

from .planner import Graph, Node

CHUNK = 900


def _chunks(values):
    values = list(values)
    for start in range(0, len(values), CHUNK):
        yield values[start:start + CHUNK]


def selection_digests(repo, digests=(), all_matching=False, search="", filter=""):
    """The digests a selection names: explicit ones, or every item a search and filter match."""
    if all_matching:
        state = TableState(search=search, filter=filter)
        return list(items(repo, state).values_list("digest", flat=True))
    return list(dict.fromkeys(d for d in digests if isinstance(d, str) and d))


def load_graph(repo, digests) -> tuple[Graph, list]:
    """A Graph around ``digests`` of ``repo``, and the selected keys."""
    registry = repo.registry
    rows = {}  # id -> (repository name, digest, kind, size, manifest_size, fetched)

    def load(filter_kwargs_list):
        new = []
        for kwargs in filter_kwargs_list:
            for row in Manifest.objects.filter(**kwargs).values_list(
                    "id", "repository__name", "digest", "kind", "size", "manifest_size",
                    "fetched"):
                if row[0] not in rows:
                    rows[row[0]] = row[1:]
                    new.append(row[0])
        return new

    selected_ids = load({"repository": repo, "digest__in": c} for c in _chunks(digests))
    children = defaultdict(list)  # index id -> [child ids]
    # Down: children of selected indexes, to any depth.
    frontier = [i for i in selected_ids if rows[i][2] == "index"]
    while frontier:
        found = []
        for chunk in _chunks(frontier):
            for index_id, child_id in IndexChild.objects.filter(index_id__in=chunk) \
                    .order_by("id").values_list("index_id", "child_id"):
                children[index_id].append(child_id)
                found.append(child_id)
        new = load({"id__in": c} for c in _chunks(set(found) - set(rows)))
        frontier = [i for i in set(found) if rows[i][2] == "index" and i not in children]
        frontier += [i for i in new if rows[i][2] == "index" and i not in children]
        frontier = list(dict.fromkeys(frontier))
    # Up: every index that references a loaded manifest, with all its children.
    core = list(rows)
    parents = set()
    for chunk in _chunks(core):
        parents.update(IndexChild.objects.filter(child_id__in=chunk)
                       .values_list("index_id", flat=True))
    parents -= set(children)
    load({"id__in": c} for c in _chunks(parents))
    for chunk in _chunks(parents):
        for index_id, child_id in IndexChild.objects.filter(index_id__in=chunk) \
                .order_by("id").values_list("index_id", "child_id"):
            children[index_id].append(child_id)
    load({"id__in": c} for c in _chunks({c for kids in children.values() for c in kids}
                                        - set(rows)))

    # Blobs of the core manifests, and every other manifest (any repository) sharing them.
    blobs = defaultdict(set)
    blob_ids = set()
    for chunk in _chunks(core):
        for manifest_id, blob_id in ManifestBlob.objects.filter(manifest_id__in=chunk) \
                .values_list("manifest_id", "blob_id"):
            blobs[manifest_id].add(blob_id)
            blob_ids.add(blob_id)
    sharers = set()
    core_set = set(core)
    for chunk in _chunks(blob_ids):
        for manifest_id, blob_id in ManifestBlob.objects.filter(blob_id__in=chunk) \
                .values_list("manifest_id", "blob_id"):
            if manifest_id not in core_set:
                sharers.add(manifest_id)
                blobs[manifest_id].add(blob_id)
    load({"id__in": c} for c in _chunks(sharers - set(rows)))
    # The same manifest digests in other repositories keep the manifest blob itself.
    core_digests = {rows[i][1] for i in core}
    load({"repository__registry": registry, "digest__in": c} for c in _chunks(core_digests))

    blob_digest, blob_sizes = {}, {}
    for chunk in _chunks(blob_ids):
        for blob_id, digest, size in Blob.objects.filter(id__in=chunk).values_list(
                "id", "digest", "size"):
            blob_digest[blob_id] = digest
            blob_sizes[digest] = size
    tags = defaultdict(list)
    for chunk in _chunks(rows):
        for manifest_id, name in Tag.objects.filter(manifest_id__in=chunk) \
                .order_by("name").values_list("manifest_id", "name"):
            tags[manifest_id].append(name)

    nodes = {}
    for manifest_id, (repo_name, digest, kind, size, manifest_size, fetched) in rows.items():
        key = (repo_name, digest)
        nodes[key] = Node(
            key=key, kind=kind, tags=tuple(tags.get(manifest_id, ())), size=size,
            manifest_size=manifest_size,
            blobs=frozenset(blob_digest[b] for b in blobs.get(manifest_id, ())
                            if b in blob_digest),
            children=tuple((rows[c][0], rows[c][1]) for c in children.get(manifest_id, ())
                           if c in rows),
            fetched=fetched)
    selected = [(repo.name, d) for d in digests]
    return Graph(nodes, blob_sizes), selected
