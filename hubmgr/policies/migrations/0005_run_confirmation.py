# "Run now" on the page in delete mode plans first and deletes only once a maintainer confirms
# (issue 23): the run says so, who answered and when, and two statuses for the wait and its end.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('policies', '0004_remove_orphans_days'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='policyrun',
            name='answered_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='policyrun',
            name='answered_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='policyrun',
            name='confirm_first',
            field=models.BooleanField(default=False),
        ),
        migrations.AlterField(
            model_name='policyrun',
            name='status',
            field=models.CharField(choices=[('running', 'Running'), ('done', 'Done'), ('braked', 'Done; the brake stopped some repositories'), ('failed', 'Failed'), ('awaiting', 'Awaiting confirmation'), ('unconfirmed', 'Not confirmed; nothing deleted')], default='running', max_length=12),
        ),
    ]
