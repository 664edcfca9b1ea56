from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0004_table_indexes'),
    ]

    operations = [
        migrations.AddField(
            model_name='tag',
            name='event_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name='QueuedEnvelope',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name='ID')),
                ('received_at', models.DateTimeField(auto_now_add=True)),
                ('body', models.BinaryField()),
                ('events', models.PositiveIntegerField(default=0)),
                ('error', models.TextField(blank=True)),
            ],
            options={'verbose_name': 'queued notification'},
        ),
    ]
