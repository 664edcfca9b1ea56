"""Reference counts that database triggers keep, so a policy's dry run tells what a plan frees
by a comparison instead of a search per blob and per manifest:
- Blob.manifest_count: how many manifests link to the blob (ManifestBlob rows);
- Manifest.digest_repositories: how many repositories of the registry hold the digest.

Triggers, not application code, so that every write counts: a sync's bulk inserts, Django's
cascades, a raw DELETE. PostgreSQL counts a statement's rows at once (transition tables);
SQLite row by row. A later migration that makes SQLite remake one of these tables (it does for
most AlterFields) drops its triggers and must create them again: tests/test_reference_counts.py
fails if it does not."""

from django.db import migrations, models

M, R, B, L = ("inventory_manifest", "inventory_repository", "inventory_blob",
              "inventory_manifestblob")

# The repositories of the registry holding a manifest's digest, for the manifest row ``m``.
COUNT_COPIES = (f"SELECT COUNT(*) FROM {M} o JOIN {R} ro ON ro.id = o.repository_id "
                f"WHERE o.digest = {{m}}.digest AND ro.registry_id = "
                f"(SELECT registry_id FROM {R} WHERE id = {{m}}.repository_id)")

SQLITE = {  # name: its CREATE TRIGGER
    "blob_count_insert": f"AFTER INSERT ON {L} BEGIN "
    f"UPDATE {B} SET manifest_count = manifest_count + 1 WHERE id = NEW.blob_id; END",
    "blob_count_delete": f"AFTER DELETE ON {L} BEGIN "
    f"UPDATE {B} SET manifest_count = manifest_count - 1 WHERE id = OLD.blob_id; END",
    "blob_count_update": f"AFTER UPDATE OF blob_id ON {L} "
    f"WHEN OLD.blob_id <> NEW.blob_id BEGIN "
    f"UPDATE {B} SET manifest_count = manifest_count - 1 WHERE id = OLD.blob_id; "
    f"UPDATE {B} SET manifest_count = manifest_count + 1 WHERE id = NEW.blob_id; END",
    # A digest held by one row only (nearly always) keeps its default of 1: one index probe.
    **{f"digest_count_{name}": f"AFTER {event} ON {M} "
       f"WHEN EXISTS (SELECT 1 FROM {M} d WHERE d.digest = {row}.digest AND d.id <> {row}.id) "
       f"BEGIN UPDATE {M} SET digest_repositories = ({COUNT_COPIES.format(m=M)}) "
       f"WHERE digest = {row}.digest; END"
       for name, event, row in (("insert", "INSERT", "NEW"), ("delete", "DELETE", "OLD"),
                                ("update_old", "UPDATE OF digest, repository_id", "OLD"),
                                ("update_new", "UPDATE OF digest, repository_id", "NEW"))},
}

# PostgreSQL: an insert or a delete counts its statement's rows at once (transition tables; a
# trigger with them has a single event), one indexed UPDATE per blob or digest: a single
# UPDATE ... FROM the transition table was planned as a scan of the whole table, since a
# transition table has no statistics. An UPDATE that moves a link or a manifest (hubmgr
# makes none) is counted row by row: a statement-level UPDATE trigger would also fire for
# every other UPDATE of the table, its own included.
_LINKS = (f"FOR r IN SELECT blob_id, COUNT(*) AS n FROM {{rows}} GROUP BY blob_id LOOP "
          f"UPDATE {B} SET manifest_count = manifest_count {{sign}} r.n WHERE id = r.blob_id; "
          "END LOOP;")
# A digest held by one row only (nearly always) needs no recount: one index probe.
_DIGESTS = (f"FOR r IN SELECT DISTINCT digest FROM {{rows}} LOOP "
            f"IF EXISTS (SELECT 1 FROM {M} WHERE digest = r.digest OFFSET {{others}}) THEN "
            f"UPDATE {M} SET digest_repositories = ({COUNT_COPIES.format(m=M)}) "
            f"WHERE digest = r.digest; END IF; END LOOP;")
_FUNCTIONS = {
    "hubmgr_count_added_links": _LINKS.format(rows="new_rows", sign="+"),
    "hubmgr_count_removed_links": _LINKS.format(rows="old_rows", sign="-"),
    "hubmgr_count_moved_link": (
        f"UPDATE {B} SET manifest_count = manifest_count - 1 WHERE id = OLD.blob_id; "
        f"UPDATE {B} SET manifest_count = manifest_count + 1 WHERE id = NEW.blob_id;"),
    # Added: a recount where another row has the digest; removed: where any row still has it.
    "hubmgr_count_added_digests": _DIGESTS.format(rows="new_rows", others=1),
    "hubmgr_count_removed_digests": _DIGESTS.format(rows="old_rows", others=0),
    "hubmgr_count_moved_digest": (
        f"UPDATE {M} SET digest_repositories = ({COUNT_COPIES.format(m=M)}) "
        "WHERE digest IN (OLD.digest, NEW.digest);"),
}
_TRIGGERS = (  # name, table, event, how, function
    ("blob_count_insert", L, "INSERT", "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
     "hubmgr_count_added_links"),
    ("blob_count_delete", L, "DELETE", "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT",
     "hubmgr_count_removed_links"),
    ("blob_count_update", L, "UPDATE OF blob_id",
     "FOR EACH ROW WHEN (OLD.blob_id IS DISTINCT FROM NEW.blob_id)", "hubmgr_count_moved_link"),
    ("digest_count_insert", M, "INSERT",
     "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT", "hubmgr_count_added_digests"),
    ("digest_count_delete", M, "DELETE",
     "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT", "hubmgr_count_removed_digests"),
    ("digest_count_update", M, "UPDATE OF digest, repository_id",
     "FOR EACH ROW WHEN (OLD.digest IS DISTINCT FROM NEW.digest "
     "OR OLD.repository_id IS DISTINCT FROM NEW.repository_id)", "hubmgr_count_moved_digest"),
)
POSTGRESQL = [
    *(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
      f"$$ DECLARE r record; BEGIN {body} RETURN NULL; END $$"
      for name, body in _FUNCTIONS.items()),
    *(f"CREATE TRIGGER {name} AFTER {event} ON {table} {how} EXECUTE FUNCTION {function}()"
      for name, table, event, how, function in _TRIGGERS),
]
POSTGRESQL_DROP = [
    *(f"DROP TRIGGER IF EXISTS {name} ON {table}" for name, table, *_ in _TRIGGERS),
    *(f"DROP FUNCTION IF EXISTS {name}()" for name in _FUNCTIONS),
]

# The counts of what is already stored.
BACKFILL = [
    f"UPDATE {B} SET manifest_count = (SELECT COUNT(*) FROM {L} l WHERE l.blob_id = {B}.id) "
    f"WHERE EXISTS (SELECT 1 FROM {L} l WHERE l.blob_id = {B}.id)",
    f"UPDATE {M} SET digest_repositories = ({COUNT_COPIES.format(m=M)}) WHERE EXISTS "
    f"(SELECT 1 FROM {M} d WHERE d.digest = {M}.digest AND d.id <> {M}.id)",
]


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for sql in BACKFILL + (POSTGRESQL if vendor == "postgresql" else [
            f"CREATE TRIGGER {name} {body}" for name, body in SQLITE.items()]):
        schema_editor.execute(sql, params=None)


def drop_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for sql in POSTGRESQL_DROP if vendor == "postgresql" else [
            f"DROP TRIGGER IF EXISTS {name}" for name in SQLITE]:
        schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0009_storage_snapshots'),
    ]

    operations = [
        migrations.AddField(
            model_name='blob',
            name='manifest_count',
            field=models.IntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name='manifest',
            name='digest_repositories',
            field=models.IntegerField(db_default=1, default=1),
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
