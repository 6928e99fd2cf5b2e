"""Joins the two branches that both start at 0009: grid history (0010) and new element types (0011)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("twin", "0010_grid_history"),
        ("twin", "0011_grid_elements"),
    ]

    operations = []
