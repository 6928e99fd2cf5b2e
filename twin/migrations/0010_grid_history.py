"""History of grids: `retired_at` on every grid part (retire, never delete, what results or readings refer to), results
that keep their buses (RESTRICT), `GridVersion`, runs pinned to the version they solve; every existing grid's content
recorded as its current version, and the runs that solved that version pinned to it."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def record_current_versions(apps, schema_editor):
    """Every grid's content now as its version `Grid.version`; runs that recorded that number pinned to it."""
    from twin.history import Author, grid_version_record

    runs = apps.get_model("twin", "LoadFlowRun")
    for grid in apps.get_model("twin", "Grid").objects.all():
        version = grid_version_record(grid=grid, author=Author(via="migration"), apps=apps)
        if version is not None:
            runs.objects.filter(grid_id=grid.pk, grid_version=version.number).update(version_id=version.pk)


class Migration(migrations.Migration):

    dependencies = [
        ('twin', '0009_batch_published_at'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='basevoltage',
            name='retired_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='Set when a write removed a row that readings, results or other kept rows refer to: retired, never deleted.', null=True),
        ),
        migrations.AddField(
            model_name='bus',
            name='retired_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='Set when a write removed a row that readings, results or other kept rows refer to: retired, never deleted.', null=True),
        ),
        migrations.AddField(
            model_name='evcharger',
            name='retired_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='Set when a write removed a row that readings, results or other kept rows refer to: retired, never deleted.', null=True),
        ),
        migrations.AddField(
            model_name='externalgrid',
            name='retired_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='Set when a write removed a row that readings, results or other kept rows refer to: retired, never deleted.', null=True),
        ),
        migrations.AddField(
            model_name='feeder',
            name='retired_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='Set when a write removed a row that readings, results or other kept rows refer to: retired, never deleted.', null=True),
        ),
        migrations.AddField(
            model_name='line',
            name='retired_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='Set when a write removed a row that readings, results or other kept rows refer to: retired, never deleted.', null=True),
        ),
        migrations.AddField(
            model_name='load',
            name='retired_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='Set when a write removed a row that readings, results or other kept rows refer to: retired, never deleted.', null=True),
        ),
        migrations.AddField(
            model_name='staticgenerator',
            name='retired_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='Set when a write removed a row that readings, results or other kept rows refer to: retired, never deleted.', null=True),
        ),
        migrations.AddField(
            model_name='storage',
            name='retired_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='Set when a write removed a row that readings, results or other kept rows refer to: retired, never deleted.', null=True),
        ),
        migrations.AddField(
            model_name='switch',
            name='retired_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='Set when a write removed a row that readings, results or other kept rows refer to: retired, never deleted.', null=True),
        ),
        migrations.AddField(
            model_name='transformer',
            name='retired_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='Set when a write removed a row that readings, results or other kept rows refer to: retired, never deleted.', null=True),
        ),
        migrations.AlterField(
            model_name='busresult',
            name='bus',
            field=models.ForeignKey(on_delete=django.db.models.deletion.RESTRICT, related_name='+', to='twin.bus'),
        ),
        migrations.AlterField(
            model_name='hostingcapacityresult',
            name='bus',
            field=models.ForeignKey(on_delete=django.db.models.deletion.RESTRICT, related_name='+', to='twin.bus'),
        ),
        migrations.AlterField(
            model_name='meter',
            name='retired_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='Set when a write removed a row that readings, results or other kept rows refer to: retired, never deleted.', null=True),
        ),
        migrations.CreateModel(
            name='GridVersion',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('number', models.PositiveIntegerField()),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('created_by_credential', models.CharField(blank=True, help_text='The credential the write came with (its label).', max_length=200)),
                ('via', models.CharField(help_text='Which path wrote it: upload, changes, admin, import, replay, migration, …', max_length=20)),
                ('content_hash', models.CharField(help_text='SHA-256 of the canonical content (hex).', max_length=64)),
                ('summary', models.JSONField(blank=True, default=dict)),
                ('snapshot', models.BinaryField(help_text='zlib-compressed canonical JSON of the content.')),
                ('created_by_participant', models.ForeignKey(blank=True, help_text='Provenance: the participant the write acted for.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='twin.participant')),
                ('created_by_user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('grid', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='versions', to='twin.grid')),
            ],
            options={
                'ordering': ['grid', 'number'],
            },
        ),
        migrations.AddField(
            model_name='loadflowrun',
            name='version',
            field=models.ForeignKey(blank=True, help_text='The pinned grid version the run solves (its number is `grid_version`).', null=True, on_delete=django.db.models.deletion.RESTRICT, related_name='runs', to='twin.gridversion'),
        ),
        migrations.AddConstraint(
            model_name='gridversion',
            constraint=models.UniqueConstraint(fields=('grid', 'number'), name='grid_version_unique'),
        ),
        migrations.RunPython(record_current_versions, migrations.RunPython.noop),
    ]
