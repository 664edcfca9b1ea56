from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0013_blob_shared'),
    ]

    operations = [
        migrations.AddField(
            model_name='registry',
            name='inventory_changed_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='registry',
            name='snapshot_started_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
