# An attached artifact's job item names its subject: it is deleted once that is, and kept when
# that was kept.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('deletion', '0005_reclaim'),
    ]

    operations = [
        migrations.AddField(
            model_name='deletionitem',
            name='subject',
            field=models.CharField(blank=True, db_default='', default='', max_length=140),
        ),
    ]
