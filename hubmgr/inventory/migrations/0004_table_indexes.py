"""The table's indexes: one per sort, NULLS FIRST on PostgreSQL (models.SortIndex), and on
PostgreSQL a trigram index for the search. pg_trgm ships with PostgreSQL (Debian's
postgresql-contrib, the postgres image) and is a trusted extension since PostgreSQL 13, so a
database owner without superuser rights may create it."""

from django.db import migrations, models

import hubmgr.inventory.models

TRIGRAM_INDEX = "m_tags_trgm"


def create_search_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    # The table's search: tags_text ILIKE '%term%' over the top-level rows.
    schema_editor.execute(f"CREATE INDEX {TRIGRAM_INDEX} ON inventory_manifest "
                          "USING gin (tags_text gin_trgm_ops) WHERE is_top_level")


def drop_search_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {TRIGRAM_INDEX}")


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0003_repository_activity'),
    ]

    operations = [
        migrations.RemoveIndex(model_name='manifest', name='m_pushed'),
        migrations.RemoveIndex(model_name='manifest', name='m_pulled'),
        migrations.RemoveIndex(model_name='manifest', name='m_size'),
        migrations.AddIndex(
            model_name='manifest',
            index=hubmgr.inventory.models.SortIndex(
                condition=models.Q(('is_top_level', True)), fields=['repository', 'last_pushed'],
                name='m_sort_pushed'),
        ),
        migrations.AddIndex(
            model_name='manifest',
            index=hubmgr.inventory.models.SortIndex(
                condition=models.Q(('is_top_level', True)), fields=['repository', 'last_pulled'],
                name='m_sort_pulled'),
        ),
        migrations.AddIndex(
            model_name='manifest',
            index=hubmgr.inventory.models.SortIndex(
                condition=models.Q(('is_top_level', True)), fields=['repository', 'size'],
                name='m_sort_size'),
        ),
        migrations.RunPython(create_search_index, drop_search_index),
    ]
