"""Manifest.has_attached: whether a row of the same repository has named this manifest as its
subject (a signature, an attestation, a referrer), set by triggers whenever such a row is
written or the subject row arrives after it, and left set afterwards. A hint, never a count:
it is false only where nothing was ever attached, so the deletion planner and a policy's dry
run look up what is attached only for the rows it marks (m_subject), not for every row that
goes (on 1,000,000 manifests, 600,000 lookups of which 85,000 found something).

PostgreSQL marks a statement's inserted rows at once (transition table, one UPDATE per row
found, as migration 0010's counts); an UPDATE of a row's subject, digest or repository (the
sync's upsert writes subject) is marked row by row. SQLite marks row by row. The column is
added on SQLite with ALTER TABLE, as migration 0011's are (remaking the table would drop
migration 0010's triggers)."""

from django.db import migrations, models

M = "inventory_manifest"

# Mark the subject named by the row ``{row}``, and the row itself when something names it.
# (Every condition on subject is NOT (subject = ''), the m_subject index's own: SQLite uses a
# partial index only for a query stating its condition as written.)
_MARK_SUBJECT = (f"UPDATE {M} SET has_attached = {{true}} WHERE repository_id = "
                 "{row}.repository_id AND digest = {row}.subject AND NOT has_attached")
_NAMED = (f"EXISTS (SELECT 1 FROM {M} a WHERE a.repository_id = {{row}}.repository_id "
          "AND a.subject = {row}.digest AND NOT (a.subject = ''))")
_MARK_SELF = f"UPDATE {M} SET has_attached = {{true}} WHERE id = {{row}}.id AND NOT has_attached"

SQLITE = {  # name: its CREATE TRIGGER
    "attached_insert_subject": f"AFTER INSERT ON {M} WHEN NOT (NEW.subject = '') BEGIN "
    + _MARK_SUBJECT.format(row="NEW", true=1) + "; END",
    "attached_insert_self": f"AFTER INSERT ON {M} WHEN {_NAMED.format(row='NEW')} BEGIN "
    + _MARK_SELF.format(row="NEW", true=1) + "; END",
    "attached_update_subject": f"AFTER UPDATE OF subject, digest, repository_id ON {M} "
    "WHEN NOT (NEW.subject = '') BEGIN " + _MARK_SUBJECT.format(row="NEW", true=1) + "; END",
    "attached_update_self": f"AFTER UPDATE OF subject, digest, repository_id ON {M} "
    f"WHEN {_NAMED.format(row='NEW')} BEGIN " + _MARK_SELF.format(row="NEW", true=1)
    + "; END",
}

_FUNCTIONS = {
    "hubmgr_mark_attached_rows": (
        "FOR r IN SELECT DISTINCT repository_id, subject FROM new_rows "
        "WHERE NOT (subject = '') LOOP " + _MARK_SUBJECT.format(row="r", true="true")
        + "; END LOOP; FOR r IN SELECT n.id FROM new_rows n WHERE NOT n.has_attached AND "
        + _NAMED.format(row="n") + " LOOP " + _MARK_SELF.format(row="r", true="true")
        + "; END LOOP;"),
    "hubmgr_mark_attached_row": (
        "IF NOT (NEW.subject = '') THEN " + _MARK_SUBJECT.format(row="NEW", true="true")
        + "; END IF; IF " + _NAMED.format(row="NEW") + " THEN "
        + _MARK_SELF.format(row="NEW", true="true") + "; END IF;"),
}
POSTGRESQL = [
    *(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
      f"$$ DECLARE r record; BEGIN {body} RETURN NULL; END $$"
      for name, body in _FUNCTIONS.items()),
    f"CREATE TRIGGER attached_insert AFTER INSERT ON {M} REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION hubmgr_mark_attached_rows()",
    f"CREATE TRIGGER attached_update AFTER UPDATE OF subject, digest, repository_id ON {M} "
    "FOR EACH ROW WHEN (OLD.subject IS DISTINCT FROM NEW.subject "
    "OR OLD.digest IS DISTINCT FROM NEW.digest "
    "OR OLD.repository_id IS DISTINCT FROM NEW.repository_id) "
    "EXECUTE FUNCTION hubmgr_mark_attached_row()",
]
POSTGRESQL_DROP = [
    f"DROP TRIGGER IF EXISTS attached_insert ON {M}",
    f"DROP TRIGGER IF EXISTS attached_update ON {M}",
    *(f"DROP FUNCTION IF EXISTS {name}()" for name in _FUNCTIONS),
]

# What is already stored.
BACKFILL = (f"UPDATE {M} SET has_attached = {{true}} WHERE "
            + _NAMED.format(row=M) + " AND NOT has_attached")

FIELD = models.BooleanField(default=False, db_default=False)


def _field(apps):
    """FIELD as the Manifest model's column (see migration 0011's _named)."""
    field = FIELD.clone()
    field.set_attributes_from_name("has_attached")
    field.model = apps.get_model("inventory", "Manifest")
    return field


def add_column(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(f'ALTER TABLE {M} ADD COLUMN "has_attached" bool NOT NULL '
                              "DEFAULT 0", params=None)
    else:
        schema_editor.add_field(apps.get_model("inventory", "Manifest"), _field(apps))


def drop_column(apps, schema_editor):
    schema_editor.remove_field(apps.get_model("inventory", "Manifest"), _field(apps))


def create_triggers(apps, schema_editor):
    postgres = schema_editor.connection.vendor == "postgresql"
    statements = POSTGRESQL if postgres else [
        f"CREATE TRIGGER {name} {body}" for name, body in SQLITE.items()]
    for sql in [*statements, BACKFILL.format(true="true" if postgres else 1)]:
        schema_editor.execute(sql, params=None)


def drop_triggers(apps, schema_editor):
    for sql in POSTGRESQL_DROP if schema_editor.connection.vendor == "postgresql" else [
            f"DROP TRIGGER IF EXISTS {name}" for name in SQLITE]:
        schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0017_wide_sorts'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddField("manifest", "has_attached", FIELD)],
            database_operations=[migrations.RunPython(add_column, drop_column)],
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
