"""Tabular ratio tap changers, non-linear and tabular phase tap changers on two-winding transformers, static VAR
compensators (issue 11). The ratio tap changer fields moved into an abstract mixin: no schema change from that."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('twin', '0012_merge_history_elements'),
    ]

    operations = [
        migrations.AddField(
            model_name='transformer',
            name='phase_step_percent',
            field=models.FloatField(blank=True, help_text='Symmetrical / asymmetrical: voltage step, % per step.', null=True),
        ),
        migrations.AddField(
            model_name='transformer',
            name='phase_tap_kind',
            field=models.CharField(choices=[('linear', 'Linear'), ('symmetrical', 'Symmetrical'), ('asymmetrical', 'Asymmetrical'), ('tabular', 'Tabular')], default='linear', max_length=12),
        ),
        migrations.AddField(
            model_name='transformer',
            name='phase_tap_table',
            field=models.JSONField(blank=True, default=list, help_text='Tabular: angle_degree, ratio, r_percent, x_percent per step.'),
        ),
        migrations.AddField(
            model_name='transformer',
            name='phase_winding_angle_degree',
            field=models.FloatField(blank=True, help_text='Asymmetrical: winding connection angle, degrees.', null=True),
        ),
        migrations.AddField(
            model_name='transformer',
            name='tap_table',
            field=models.JSONField(blank=True, default=list, help_text='Tabular ratio tap changer: ratio, r_percent, x_percent per step.'),
        ),
        migrations.CreateModel(
            name='StaticVarCompensator',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('iri', models.CharField(max_length=500, unique=True)),
                ('name', models.CharField(blank=True, max_length=200)),
                ('retired_at', models.DateTimeField(blank=True, editable=False, help_text='Set when a write removed a row that readings, results or other kept rows refer to: retired, never deleted.', null=True)),
                ('in_service', models.BooleanField(default=True)),
                ('part_iris', models.JSONField(blank=True, default=dict)),
                ('capacitive_rating_ohm', models.FloatField(help_text='Reactance at the largest capacitive output, ohm (> 0, cim:capacitiveRating).')),
                ('inductive_rating_ohm', models.FloatField(help_text='Reactance at the largest inductive output, ohm (< 0, cim:inductiveRating).')),
                ('control_mode', models.CharField(choices=[('voltage', 'Voltage'), ('reactive_power', 'Reactive power')], default='voltage', max_length=14)),
                ('control_enabled', models.BooleanField(default=True)),
                ('vm_target_kv', models.FloatField(blank=True, help_text='Voltage setpoint, kV (cim:StaticVarCompensator.voltageSetPoint).', null=True)),
                ('q_mvar', models.FloatField(default=0.0, help_text='Reactive power absorbed when not holding a voltage, Mvar (load sign).')),
                ('bus', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='static_var_compensators', to='twin.bus')),
                ('feeder', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='%(class)ss', to='twin.feeder')),
                ('grid', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='%(class)ss', to='twin.grid')),
                ('owner', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='%(class)ss', to='twin.participant')),
            ],
            options={
                'verbose_name': 'static VAR compensator',
                'ordering': ['id'],
                'abstract': False,
            },
        ),
    ]
