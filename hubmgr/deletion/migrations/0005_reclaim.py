# Pending reclaim: what each deletion job frees, and when the garbage collector freed it.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('deletion', '0004_preview_snapshots'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ReclaimBlob',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('digest', models.CharField(max_length=140)),
                ('size', models.BigIntegerField(default=0)),
                ('manifest', models.BooleanField(default=False)),
            ],
        ),
        migrations.AddField(
            model_name='deletionjob',
            name='freed_bytes',
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='deletionjob',
            name='reclaim_checked_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='deletionjob',
            name='reclaim_error',
            field=models.CharField(blank=True, max_length=500),
        ),
        # Jobs that exist already recorded nothing of what they free: "untracked". New jobs
        # start "open".
        migrations.AddField(
            model_name='deletionjob',
            name='reclaim_state',
            field=models.CharField(choices=[('open', 'Open'), ('nothing', 'Nothing'), ('pending', 'Pending'), ('reclaimed', 'Reclaimed'), ('untracked', 'Untracked')], default='untracked', max_length=10),
        ),
        migrations.AlterField(
            model_name='deletionjob',
            name='reclaim_state',
            field=models.CharField(choices=[('open', 'Open'), ('nothing', 'Nothing'), ('pending', 'Pending'), ('reclaimed', 'Reclaimed'), ('untracked', 'Untracked')], default='open', max_length=10),
        ),
        migrations.AddField(
            model_name='deletionjob',
            name='reclaimed_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='deletionjob',
            name='reclaimed_bytes',
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddIndex(
            model_name='deletionjob',
            index=models.Index(fields=['reclaim_state', 'finished_at'], name='job_reclaim'),
        ),
        migrations.AddField(
            model_name='reclaimblob',
            name='job',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='reclaim_blobs', to='deletion.deletionjob'),
        ),
        migrations.AddConstraint(
            model_name='reclaimblob',
            constraint=models.UniqueConstraint(fields=('job', 'digest'), name='reclaim_unique'),
        ),
    ]
