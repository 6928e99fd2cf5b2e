"""Large binary columns stored out of line without compression (PostgreSQL).

PostgreSQL tries pglz on every TOASTed value by default. The chunks of a time-series run are float32
arrays that pglz cannot shrink, yet the attempt costs the server ~4× the write itself (a 1.2 MB chunk:
45 ms against 11 ms here), on the cores that the workers need. `STORAGE EXTERNAL` keeps them out of line
and uncompressed. A no-op on other databases.
"""

from django.db import migrations

COLUMNS = [("twin_timeserieschunk", "arrays")]


def storage(mode: str):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for table, column in COLUMNS:
            schema_editor.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE {mode}")

    return apply


class Migration(migrations.Migration):
    dependencies = [("twin", "0004_telemetry_hourly")]

    operations = [migrations.RunPython(storage("EXTERNAL"), storage("EXTENDED"))]
