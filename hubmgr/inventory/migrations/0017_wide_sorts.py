"""The registry-wide table's indexes (/images, catalog/wide.py): one per sort over every
repository's top-level rows (models.WideSortIndex: on PostgreSQL NULLS FIRST, with every column
a filter reads included), and on PostgreSQL a trigram index on platform for its platform
filter, which matches an image's platform or one of those an index lists ("linux/amd64,
linux/arm64"): a LIKE '%...%' that no B-tree serves. SQLite has no trigram index; it reads the
sort index's rows instead (at 100,000 manifests, the size SQLite is held to, that is fast
enough: docs/benchmarks.md)."""

from django.db import migrations, models

import hubmgr.inventory.models

PLATFORM_INDEX = "m_wide_platform_trgm"


def create_platform_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")  # (migration 0004's)
    schema_editor.execute(f"CREATE INDEX {PLATFORM_INDEX} ON inventory_manifest "
                          "USING gin (platform gin_trgm_ops) WHERE is_top_level")


def drop_platform_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {PLATFORM_INDEX}")


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0016_sole_bytes'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='manifest',
            index=hubmgr.inventory.models.WideSortIndex(
                condition=models.Q(('is_top_level', True)), fields=['last_pushed'],
                name='m_wide_pushed'),
        ),
        migrations.AddIndex(
            model_name='manifest',
            index=hubmgr.inventory.models.WideSortIndex(
                condition=models.Q(('is_top_level', True)), fields=['last_pulled'],
                name='m_wide_pulled'),
        ),
        migrations.AddIndex(
            model_name='manifest',
            index=hubmgr.inventory.models.WideSortIndex(
                condition=models.Q(('is_top_level', True)), fields=['size'], name='m_wide_size'),
        ),
        migrations.RunPython(create_platform_index, drop_platform_index),
    ]
