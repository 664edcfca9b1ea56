"""The reference counts that database triggers keep (inventory migrations 0010 and 0016):
Blob.manifest_count, Manifest.digest_repositories and Manifest.sole_bytes stay equal to a count
made from scratch through every kind of write, and the migrations' backfills count what was
stored before."""

import importlib
from collections import Counter

import pytest
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from hubmgr.inventory.models import Blob, Manifest, ManifestBlob, Registry, Repository
from hubmgr.inventory.registries import default_registry

from tests.support.factories import digest

# Four repositories, the first three in one registry and the last in another.
REPOS = ((0, "team/a"), (0, "team/b"), (0, "team/c"), (1, "elsewhere/a"))
SEEDS = 4  # digests shared at will across repositories
BLOBS = 4  # per registry


def recounted():
    """({blob id: manifests linking to it}, {manifest id: repositories of its registry
    holding its digest}, {manifest id: bytes of the blobs it alone links to}), counted from
    scratch."""
    pairs = list(ManifestBlob.objects.values_list("manifest_id", "blob_id"))
    links = Counter(blob for _, blob in pairs)
    sizes = dict(Blob.objects.values_list("pk", "size"))
    rows = list(Manifest.objects.values_list("pk", "digest", "repository__registry_id"))
    copies = Counter((d, registry) for _, d, registry in rows)
    sole = Counter()
    for manifest_id, blob in pairs:
        sole[manifest_id] += sizes[blob] if links[blob] == 1 else 0
    return ({pk: links[pk] for pk in sizes},
            {pk: copies[(d, registry)] for pk, d, registry in rows},
            {pk: sole[pk] for pk, *_ in rows})


def unmarked():
    """Manifests that a row of their repository names as its subject, but whose
    has_attached hint is not set (the hint may stay set after the rows naming it go)."""
    named = set(Manifest.objects.exclude(subject="").values_list("repository_id", "subject"))
    return [(repo, d) for repo, d, marked in Manifest.objects.values_list(
        "repository_id", "digest", "has_attached") if (repo, d) in named and not marked]


def stored():
    return (dict(Blob.objects.values_list("pk", "manifest_count")),
            dict(Manifest.objects.values_list("pk", "digest_repositories")),
            dict(Manifest.objects.values_list("pk", "sole_bytes")))


def inventory():
    registries = [default_registry(), Registry.objects.create(name="other", url="http://x")]
    repos = [Repository.objects.create(registry=registries[r], name=name) for r, name in REPOS]
    blobs = {(r.pk, n): Blob.objects.create(registry=r, digest=digest(f"layer{n}"), size=10 + n)
             for r in registries for n in range(BLOBS)}
    return repos, blobs


def manifest(repo, seed):
    return Manifest.objects.filter(repository=repo, digest=digest(seed)).first()


repo_i, seed, blob_n = st.integers(0, len(REPOS) - 1), st.integers(0, SEEDS - 1), \
    st.integers(0, BLOBS - 1)
operations = st.lists(st.one_of(
    st.tuples(st.just("push"), st.lists(st.tuples(repo_i, seed), max_size=4),
              st.lists(blob_n, max_size=3, unique=True)),
    st.tuples(st.just("link"), repo_i, seed, blob_n),
    st.tuples(st.just("unlink"), repo_i, seed, blob_n),
    st.tuples(st.just("relink"), repo_i, seed, blob_n),
    st.tuples(st.just("delete"), st.lists(st.tuples(repo_i, seed), max_size=3)),
    st.tuples(st.just("delete_repository"), repo_i),
    st.tuples(st.just("stale_save"), repo_i, seed, repo_i),
    st.tuples(st.just("attach"), repo_i, seed, seed),
    st.tuples(st.just("name"), repo_i, seed, seed),
), max_size=14)


def apply(op, repos, blobs):
    kind, *args = op
    alive = set(Repository.objects.values_list("pk", flat=True))
    if kind == "push":  # one bulk insert of manifests (some already there), then their links
        pairs, layers = [(r, s) for r, s in args[0] if repos[r].pk in alive], args[1]
        Manifest.objects.bulk_create(
            [Manifest(repository=repos[r], digest=digest(s)) for r, s in pairs],
            ignore_conflicts=True)
        ManifestBlob.objects.bulk_create(
            [ManifestBlob(manifest=m, blob=blobs[(repos[r].registry_id, n)])
             for r, s in pairs if (m := manifest(repos[r], s)) for n in layers],
            ignore_conflicts=True)
    elif kind in ("link", "unlink", "relink"):
        r, s, n = args
        m, blob = manifest(repos[r], s), blobs[(repos[r].registry_id, n)]
        if m is None:
            return
        links = ManifestBlob.objects.filter(manifest=m)
        if kind == "link":
            ManifestBlob.objects.bulk_create([ManifestBlob(manifest=m, blob=blob)],
                                             ignore_conflicts=True)
        elif kind == "unlink":
            with connection.cursor() as cursor:  # (a raw DELETE counts too)
                cursor.execute(f"DELETE FROM {ManifestBlob._meta.db_table} "
                               "WHERE manifest_id = %s AND blob_id = %s", [m.pk, blob.pk])
        elif (link := links.first()) and not links.filter(blob=blob).exists():
            links.filter(pk=link.pk).update(blob=blob)  # an UPDATE moves a link
    elif kind == "attach":  # an artifact naming a subject, upserted as a sync writes rows
        r, s, subject = args
        if repos[r].pk in alive:
            Manifest.objects.bulk_create(
                [Manifest(repository=repos[r], digest=digest(f"art{s}"),
                          subject=digest(subject))],
                update_conflicts=True, unique_fields=["repository", "digest"],
                update_fields=["subject"])
    elif kind == "name":  # a row learns its subject later, as store.py marks one
        r, s, subject = args
        Manifest.objects.filter(repository=repos[r], digest=digest(s)).update(
            subject=digest(subject))
    elif kind == "delete":  # Django's cascade takes the links along
        for r, s in args[0]:
            Manifest.objects.filter(repository=repos[r], digest=digest(s)).delete()
    elif kind == "delete_repository":
        Repository.objects.filter(pk=repos[args[0]].pk).delete()
    elif kind == "stale_save":  # a loaded row saved after a trigger changed its count
        r, s, other = args
        m = manifest(repos[r], s)
        if m is not None and repos[other].pk != repos[r].pk and repos[other].pk in alive:
            Manifest.objects.bulk_create([Manifest(repository=repos[other], digest=m.digest)],
                                         ignore_conflicts=True)
            m.last_pulled = timezone.now()
            m.save()
            blob = Blob.objects.get(pk=blobs[(repos[r].registry_id, 0)].pk)
            ManifestBlob.objects.bulk_create([ManifestBlob(manifest=m, blob=blob)],
                                             ignore_conflicts=True)
            blob.size += 1
            blob.save()


@pytest.mark.slow
@pytest.mark.django_db
@hsettings(max_examples=80, deadline=None,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(operations)
def test_the_counts_stay_what_a_count_from_scratch_gives(ops):
    with transaction.atomic():
        repos, blobs = inventory()
        for op in ops:
            apply(op, repos, blobs)
            assert stored() == recounted(), op
            assert unmarked() == [], op
        transaction.set_rollback(True)


@pytest.mark.django_db
def test_a_digest_in_two_repositories_of_a_registry_counts_two_and_one_in_another():
    repos, blobs = inventory()
    apply(("push", [(0, 1), (1, 1), (3, 1)], [0, 1]), repos, blobs)
    assert sorted(Manifest.objects.values_list("repository__name", "digest_repositories")) == [
        ("elsewhere/a", 1), ("team/a", 2), ("team/b", 2)]
    layer = blobs[(repos[0].registry_id, 0)]
    assert Blob.objects.get(pk=layer.pk).manifest_count == 2
    assert Manifest.objects.get(repository=repos[0]).sole_bytes == 0  # shared with team/b
    Repository.objects.filter(name="team/b").delete()
    assert Manifest.objects.get(repository=repos[0]).digest_repositories == 1
    assert Blob.objects.get(pk=layer.pk).manifest_count == 1
    # team/a's manifest alone links both layers now (sizes 10 and 11).
    assert Manifest.objects.get(repository=repos[0]).sole_bytes == 21


@pytest.mark.django_db
def test_the_migration_counts_what_was_stored_before_it():
    repos, blobs = inventory()
    apply(("push", [(0, 1), (1, 1), (2, 2), (3, 1)], [0, 2]), repos, blobs)
    expected = recounted()
    # As the rows stood when the columns were added: every count at its default.
    Blob.objects.update(manifest_count=0)
    with connection.cursor() as cursor:  # (an UPDATE of these columns fires no trigger)
        cursor.execute(f"UPDATE {Manifest._meta.db_table} SET digest_repositories = 1, "
                       "sole_bytes = 0")
    counts = importlib.import_module("hubmgr.inventory.migrations.0010_reference_counts")
    sole = importlib.import_module("hubmgr.inventory.migrations.0016_sole_bytes")
    with connection.cursor() as cursor:
        for sql in [*counts.BACKFILL, sole.BACKFILL]:
            cursor.execute(sql)
    assert stored() == expected


@pytest.mark.django_db
def test_the_attached_hint_is_set_whichever_row_comes_first_and_by_the_backfill():
    repos, _ = inventory()
    for op in (("push", [(0, 1), (1, 1), (1, 2)], []),  # subjects first, then what names them
               ("attach", 0, 1, 1), ("name", 1, 2, 1),
               ("attach", 2, 3, 2), ("push", [(2, 2)], []),  # the artifact first
               ("push", [(3, 3)], []), ("attach", 3, 0, 0)):  # names nothing there
        apply(op, repos, {})
    marked = set(Manifest.objects.filter(has_attached=True).values_list(
        "repository__name", "digest"))
    assert marked == {("team/a", digest(1)), ("team/b", digest(1)), ("team/c", digest(2))}
    Manifest.objects.update(subject="")  # (an UPDATE of subject marks nothing once empty)
    assert Manifest.objects.filter(has_attached=True).count() == 3  # a hint stays set
    Manifest.objects.filter(repository=repos[1], digest=digest(2)).update(
        subject=digest(1))
    with connection.cursor() as cursor:  # as the rows stood when the column was added
        cursor.execute(f"UPDATE {Manifest._meta.db_table} SET has_attached = "
                       + ("false" if connection.vendor == "postgresql" else "0"))
    migration = importlib.import_module("hubmgr.inventory.migrations.0018_has_attached")
    with connection.cursor() as cursor:
        cursor.execute(migration.BACKFILL.format(
            true="true" if connection.vendor == "postgresql" else 1))
    assert list(Manifest.objects.filter(has_attached=True).values_list(
        "repository__name", "digest")) == [("team/b", digest(1))]
