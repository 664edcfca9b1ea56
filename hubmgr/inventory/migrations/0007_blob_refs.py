# A deletion plan asks, per blob, whether a manifest outside the plan references it: an index on
# (blob, manifest) answers from the index alone. It replaces the index on blob alone; only that
# index is dropped (an AlterField would also drop and re-validate the foreign key).

import django.db.models.deletion
from django.db import migrations, models

OLD_INDEX = "inventory_manifestblob_blob_id_97ad8cd7"


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0006_sync_fan_out'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='manifestblob',
            index=models.Index(fields=['blob', 'manifest'], name='mblob_blob'),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='manifestblob',
                    name='blob',
                    field=models.ForeignKey(db_index=False,
                                            on_delete=django.db.models.deletion.CASCADE,
                                            related_name='manifest_links', to='inventory.blob'),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{OLD_INDEX}"',
                    f'CREATE INDEX "{OLD_INDEX}" ON "inventory_manifestblob" ("blob_id")'),
            ],
        ),
    ]
