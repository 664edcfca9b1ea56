"""What each manifest is (hubmgr.registry.artifacts) and what it belongs to, layers the
registry does not store, and which way of reading a row holds (read_version).

Rows stored before keep their figures and are read again by the next sync (read_version 0).
A buildx attestation marked before (is_attestation) stays one until then.

On SQLite the columns are added with ALTER TABLE ADD COLUMN and a constant default,
not as Django adds a non-null column there (by remaking the table): remaking a table of a
million rows nine times takes minutes, drops the triggers of 0010, and remaking the
repository table fails on them. PostgreSQL adds them
as Django does."""

from functools import partial

from django.db import migrations, models

ARTIFACT_CHOICES = [("signature", "Signature"), ("attestation", "Attestation"),
                    ("sbom", "SBOM"), ("chart", "Helm chart"), ("artifact", "Artifact")]
FIELDS = {  # (model, name): (field, SQLite column definition)
    ("manifest", "artifact"): (
        models.CharField(blank=True, choices=ARTIFACT_CHOICES, max_length=12, default="",
                         db_default=""),
        "varchar(12) NOT NULL DEFAULT ''"),
    ("manifest", "artifact_type"): (
        models.CharField(blank=True, max_length=255, default="", db_default=""),
        "varchar(255) NOT NULL DEFAULT ''"),
    ("manifest", "tool"): (
        models.CharField(blank=True, max_length=12, default="", db_default=""),
        "varchar(12) NOT NULL DEFAULT ''"),
    ("manifest", "subject"): (
        models.CharField(blank=True, max_length=140, default="", db_default=""),
        "varchar(140) NOT NULL DEFAULT ''"),
    ("manifest", "referrers_list"): (
        models.BooleanField(default=False, db_default=False), "bool NOT NULL DEFAULT 0"),
    ("manifest", "predicates"): (
        models.CharField(blank=True, max_length=500, default="", db_default=""),
        "varchar(500) NOT NULL DEFAULT ''"),
    ("manifest", "is_orphan"): (
        models.BooleanField(default=False, db_default=False), "bool NOT NULL DEFAULT 0"),
    ("manifest", "foreign_size"): (
        models.BigIntegerField(default=0, db_default=0), "bigint NOT NULL DEFAULT 0"),
    ("manifest", "read_version"): (
        models.PositiveSmallIntegerField(default=0, db_default=0),
        'smallint unsigned NOT NULL DEFAULT 0 CHECK ("read_version" >= 0)'),
    ("repository", "orphan_count"): (
        models.PositiveIntegerField(default=0, db_default=0),
        'integer unsigned NOT NULL DEFAULT 0 CHECK ("orphan_count" >= 0)'),
}
# Removed, once its rows are marked as attestations.
ATTESTATION = {("manifest", "is_attestation"): (models.BooleanField(default=False),
                                               "bool NOT NULL DEFAULT 0")}


def _add(fields, apps, schema_editor):
    for (model_name, name), (field, sqlite) in fields.items():
        model = apps.get_model("inventory", model_name)
        if schema_editor.connection.vendor == "sqlite":
            schema_editor.execute(f'ALTER TABLE {model._meta.db_table} ADD COLUMN "{name}" '
                                  f'{sqlite}', params=None)
        else:
            schema_editor.add_field(model, _named(field, name, model))


def _drop(fields, apps, schema_editor):
    for (model_name, name), (field, _) in fields.items():
        model = apps.get_model("inventory", model_name)
        schema_editor.remove_field(model, _named(field, name, model))


def _named(field, name, model):
    """The field as ``model``'s column ``name``: the schema editor reads its model (for a
    db_default, PostgreSQL's add_field compiles it through a query on field.model)."""
    field = field.clone()
    field.set_attributes_from_name(name)
    field.model = model
    return field


def keep_attestations(apps, schema_editor):
    apps.get_model("inventory", "Manifest").objects.filter(is_attestation=True).update(
        artifact="attestation", tool="buildx")


def _state(fields, operation):
    return [operation(model_name=model, name=name, **({"field": field} if operation is
                                                       migrations.AddField else {}))
            for (model, name), (field, _) in fields.items()]


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0010_reference_counts'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=_state(FIELDS, migrations.AddField),
            database_operations=[migrations.RunPython(partial(_add, FIELDS),
                                                      partial(_drop, FIELDS))],
        ),
        migrations.RunPython(keep_attestations, migrations.RunPython.noop),
        migrations.SeparateDatabaseAndState(
            state_operations=_state(ATTESTATION, migrations.RemoveField),
            database_operations=[migrations.RunPython(partial(_drop, ATTESTATION),
                                                      partial(_add, ATTESTATION))],
        ),
        migrations.AddIndex(
            model_name='manifest',
            index=models.Index(condition=models.Q(('subject', ''), _negated=True),
                               fields=['repository', 'subject'], name='m_subject'),
        ),
    ]
