"""The deletion plan over inventories in the database: what load_graph reads from the tables
must give the reclaim a registry's garbage collector would give, blobs being shared across
repositories and with manifests outside the plan."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubmgr.deletion.graph import load_graph
from hubmgr.deletion.planner import plan
from hubmgr.inventory.models import Blob, IndexChild, Manifest, ManifestBlob, Repository, Tag
from hubmgr.inventory.registries import default_registry

from tests.support.factories import digest

pytestmark = pytest.mark.django_db

REPOS = ("a", "b", "c")


@st.composite
def inventories(draw):
    """Manifests of three repositories over a few blobs: images (some the same digest in two
    repositories, so the same content), indexes of earlier manifests, tags; and a selection
    in repository "a"."""
    blobs = {f"layer{n}": draw(st.integers(1, 10_000)) for n in range(draw(st.integers(1, 7)))}
    # The content of each image digest: its blobs and its own size, wherever it is pushed.
    contents = [(frozenset(draw(st.lists(st.sampled_from(sorted(blobs)), max_size=3))),
                 draw(st.integers(1, 500))) for _ in range(draw(st.integers(1, 8)))]
    manifests = {}  # (repo, name) -> ("image", content index) | ("index", [child names])
    tags = {}
    for repo in REPOS:
        names = []
        for n in range(draw(st.integers(0, 8))):
            if names and draw(st.integers(0, 3)) == 0:
                name = f"{repo}-index{n}"
                kids = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
                manifests[(repo, name)] = ("index", kids)
            else:
                content = draw(st.integers(0, len(contents) - 1))
                name = f"image{content}"
                if (repo, name) in manifests:
                    continue
                manifests[(repo, name)] = ("image", content)
            names.append(name)
            if draw(st.integers(0, 2)) == 0:
                tags[(repo, name)] = f"t{n}"
    in_a = sorted(name for repo, name in manifests if repo == "a") + ["never-seen"]
    selected = draw(st.lists(st.sampled_from(in_a), max_size=len(in_a), unique=True))
    return blobs, contents, manifests, tags, selected


def store(blobs, contents, manifests, tags):
    registry = default_registry()
    blob_ids = {name: Blob.objects.create(registry=registry, digest=digest(name), size=size).pk
                for name, size in blobs.items()}
    repos = {name: Repository.objects.create(registry=registry, name=f"inv/{name}")
             for name in REPOS}
    ids = {}
    for (repo, name), (kind, value) in manifests.items():
        size = contents[value][1] if kind == "image" else 50 + len(value)
        m = Manifest.objects.create(repository=repos[repo], digest=digest(name), kind=kind,
                                    fetched=True, manifest_size=size)
        ids[(repo, name)] = m.pk
        if kind == "image":
            ManifestBlob.objects.bulk_create([ManifestBlob(manifest_id=m.pk, blob_id=blob_ids[b])
                                              for b in contents[value][0]])
        else:
            IndexChild.objects.bulk_create([IndexChild(index_id=m.pk, child_id=ids[(repo, c)])
                                            for c in value])
        if (repo, name) in tags:
            Tag.objects.create(repository=repos[repo], name=tags[(repo, name)], manifest_id=m.pk)
    return repos


def gc_freed(deleted_ids):
    """Brute force over the tables: the bytes a mark-and-sweep over the manifests that remain
    (in every repository) would not mark."""
    stored, marked = {}, set()
    for pk, manifest_digest, size in Manifest.objects.values_list("id", "digest",
                                                                  "manifest_size"):
        stored[manifest_digest] = size
        if pk not in deleted_ids:
            marked.add(manifest_digest)
    for manifest_id, blob_digest, size in ManifestBlob.objects.values_list(
            "manifest_id", "blob__digest", "blob__size"):
        stored[blob_digest] = size
        if manifest_id not in deleted_ids:
            marked.add(blob_digest)
    return sum(size for d, size in stored.items() if d not in marked)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inventories())
def test_reclaim_equals_a_brute_force_garbage_collection_of_the_tables(case):
    blobs, contents, manifests, tags, selected = case
    with transaction.atomic():  # each example starts from empty tables
        repos = store(blobs, contents, manifests, tags)
        graph, keys = load_graph(repos["a"], [digest(name) for name in selected])
        p = plan(graph, keys)
        deleted = set(Manifest.objects.filter(
            repository=repos["a"], digest__in=[node.digest for node, _ in p.going])
            .values_list("id", flat=True))
        assert len(deleted) == len(p.going)
        assert p.reclaim_bytes == gc_freed(deleted)
        transaction.set_rollback(True)


def test_a_layer_that_a_manifest_outside_the_plan_uses_is_not_counted():
    """Shared with an image of another repository, and with the other child of an index the
    plan keeps (loaded, but its layers are not)."""
    case = ({"base": 1000, "own": 30, "sib": 7},
            [(frozenset({"own", "sib"}), 5), (frozenset({"base"}), 6), (frozenset({"base"}), 8),
             (frozenset({"sib"}), 9), (frozenset({"base"}), 4)],
            {("a", "image0"): ("image", 0), ("a", "image2"): ("image", 2),
             ("a", "image3"): ("image", 3), ("a", "image4"): ("image", 4),
             ("a", "j"): ("index", ["image0", "image2"]),
             ("a", "i"): ("index", ["image2", "image3"]), ("b", "image1"): ("image", 1)},
            {("a", "j"): "j", ("a", "i"): "i"})
    repos = store(*case)
    p = plan(*load_graph(repos["a"], [digest("j")]))
    assert [n.digest for n, _ in p.going] == [digest("j"), digest("image0")]
    assert p.kept == [(("inv/a", digest("image2")), "also referenced by index "
                       f"{digest('i')[:19]} (i)")]
    assert p.reclaim_bytes == 30 + 5 + 52  # own, image0, j; not sib: image3 stays
    p = plan(*load_graph(repos["a"], [digest("image4")]))
    assert p.reclaim_bytes == 4  # not base: image2 here and image1 in b use it


def test_the_plan_loads_in_a_fixed_number_of_queries():
    blobs = {f"l{n}": n + 1 for n in range(20)}
    contents = [(frozenset({f"l{n}", "l0"}), 9) for n in range(20)]
    manifests = {("a", f"image{n}"): ("image", n) for n in range(20)}
    manifests[("a", "index")] = ("index", ["image1", "image2"])
    repos = store(blobs, contents, manifests, {})
    counts = []
    for names in (["image3"], [f"image{n}" for n in range(20)] + ["index"]):
        with CaptureQueriesContext(connection) as ctx:
            plan(*load_graph(repos["a"], [digest(n) for n in names]))
        counts.append(len(ctx.captured_queries))
    # (One query more than before artifacts: what is attached to the core, one round; and one
    # for the protected-tag rules in force.)
    assert counts[0] <= counts[1] <= 12


def test_digests_that_are_not_digests_are_kept_as_unknown_without_an_error():
    repos = store({"l": 1}, [(frozenset({"l"}), 3)], {("a", "image0"): ("image", 0)}, {})
    odd = ['sha256:a,b', 'x"y', "{}", "back\\slash", " ", "", digest("image0")]
    p = plan(*load_graph(repos["a"], odd))
    assert [n.digest for n, _ in p.going] == [digest("image0")]
    assert {key[1] for key, _ in p.kept} == set(odd[:-1])


@pytest.mark.postgres  # PostgreSQL planner settings
def test_the_load_leaves_the_planner_settings_of_an_outer_transaction_as_they_were():
    """load_graph turns hash and merge joins off for its own queries (index probes per listed
    value), and JIT is off for every connection; a caller's transaction keeps the defaults."""
    repos = store({"l": 1}, [(frozenset({"l"}), 3)], {("a", "image0"): ("image", 0)}, {})

    def show(name):
        with connection.cursor() as cursor:
            cursor.execute(f"SHOW {name}")
            return cursor.fetchone()[0]

    with transaction.atomic():
        assert plan(*load_graph(repos["a"], [digest("image0")])).going
        assert (show("enable_hashjoin"), show("enable_mergejoin")) == ("on", "on")
        # What a caller set itself comes back too (a policy's dry run turns merge joins off).
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_mergejoin = off")
        assert plan(*load_graph(repos["a"], [digest("image0")])).going
        assert (show("enable_hashjoin"), show("enable_mergejoin")) == ("on", "off")
    assert show("jit") == "off"


def artifact(repo, seed, subject, kind="signature", tags=(), listed=(), size=40):
    """An artifact row of ``repo`` belonging to ``subject`` (a digest), with a blob of its
    own; with ``listed`` (rows), an index listing them (a referrers list)."""
    m = Manifest.objects.create(repository=repo, digest=digest(seed), fetched=True,
                                kind="index" if listed else "image", manifest_size=size,
                                artifact="" if listed else kind, referrers_list=bool(listed),
                                subject=subject, tool="cosign" if kind == "signature" else "")
    if listed:
        IndexChild.objects.bulk_create([IndexChild(index=m, child=c) for c in listed])
    else:
        blob = Blob.objects.create(registry=repo.registry, digest=digest(f"blob-{seed}"),
                                   size=size)
        ManifestBlob.objects.create(manifest=m, blob=blob)
    for tag in tags:
        Tag.objects.create(repository=repo, name=tag, manifest=m)
    return m


def test_the_graph_holds_what_is_attached_to_the_selection_at_every_depth():
    """A signature, an attestation and its own signature, a referrers list and its entry
    attached to a selected image; an orphan's signature; another repository's look-alike."""
    from hubmgr.inventory.catalog.store import refresh

    repos = store({"l": 10}, [(frozenset({"l"}), 9)], {("a", "image0"): ("image", 0),
                                                       ("b", "image0"): ("image", 0)}, {})
    repo, subject = repos["a"], digest("image0")
    sig = artifact(repo, "sig", subject, tags=["sha256-x.sig"])
    att = artifact(repo, "att", subject, kind="attestation")
    att_sig = artifact(repo, "att-sig", att.digest)
    entry = artifact(repo, "entry", subject)
    listing = artifact(repo, "list", subject, listed=[entry])
    orphan = artifact(repo, "orphan", digest("gone"), kind="sbom")
    orphan_sig = artifact(repo, "orphan-sig", orphan.digest)
    artifact(repos["b"], "b-sig", subject)  # the same subject digest, another repository
    refresh(repo)
    refresh(repos["b"])
    assert Manifest.objects.get(pk=orphan.pk).is_orphan

    graph, keys = load_graph(repo, [subject])
    key = ("inv/a", subject)
    assert graph.nodes[key].attached == tuple(sorted(
        ("inv/a", m.digest) for m in (sig, att, entry, listing)))
    assert graph.nodes[("inv/a", att.digest)].attached == (("inv/a", att_sig.digest),)
    assert graph.nodes[("inv/a", listing.digest)].children == (("inv/a", entry.digest),)
    assert graph.nodes[("inv/a", listing.digest)].label == "Referrers list"
    assert graph.nodes[("inv/a", sig.digest)].label == "Signature"
    assert graph.nodes[("inv/a", sig.digest)].tool == "cosign"
    assert ("inv/b", digest("b-sig")) not in graph.nodes
    p = plan(graph, keys)
    assert {n.digest for n, _ in p.going} == {subject, sig.digest, att.digest, att_sig.digest,
                                              entry.digest, listing.digest}
    # Each row with its blob; not image0 nor l: repository b holds them too.
    assert p.reclaim_bytes == 4 * (40 + 40) + 40

    graph, keys = load_graph(repo, [orphan.digest])
    assert graph.nodes[("inv/a", orphan.digest)].subject == ""  # its subject is gone
    p = plan(graph, keys)
    assert [(n.digest, r) for n, r in p.going] == [(orphan.digest, "selected"),
                                                   (orphan_sig.digest, "attached")]


def test_a_job_waits_only_on_items_before_it():
    """An attached artifact waits for its subject, a child for its index; where hostile input
    makes the two loop (index x lists y and is attached to y), neither waits for a later
    item, so the job cannot stall."""
    from hubmgr.deletion.actions import plan_data
    from hubmgr.deletion.jobs import create_job
    from hubmgr.deletion.planner import Graph, Node

    x, y, s = digest("x"), digest("y"), digest("s")
    nodes = [Node(("r", x), "index", ("sha256-y",), children=(("r", y),)),
             Node(("r", y), "image", attached=(("r", x),)),
             Node(("r", s), "image", subject=y)]
    nodes[1].attached += (("r", s),)
    p = plan(Graph({n.key: n for n in nodes}, {}), [("r", y)])
    data = plan_data(p)
    assert [(i["digest"], i["parents"], i.get("subject")) for i in data["items"]] == [
        (x, [], y), (y, [x], None), (s, [], y)]
    job = create_job(Repository.objects.create(registry=default_registry(), name="r"), data)
    assert list(job.items.values_list("digest", "reason", "parents", "subject")) == [
        (x, "attached", [], ""), (y, "selected", [x], ""), (s, "attached", [], y)]
