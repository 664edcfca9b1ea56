# The remove rule for orphaned artifacts (issue 22): null is off.

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('policies', '0003_schedule_from'),
    ]

    operations = [
        migrations.AddField(
            model_name='cleanuppolicy',
            name='remove_orphans_days',
            field=models.PositiveIntegerField(blank=True, help_text='Remove orphaned artifacts (signatures, attestations, SBOMs... whose subject is gone) older than this many days (last push seen, else first seen).', null=True, validators=[django.core.validators.MaxValueValidator(36500)]),
        ),
    ]
