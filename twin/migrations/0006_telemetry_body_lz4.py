"""Telemetry batch bodies compressed with LZ4 instead of pglz (PostgreSQL built with LZ4; a no-op elsewhere).

A 100k-reading JSON body (9.5 MB) shrinks 11× either way, but pglz spends ~90 ms of server CPU on it and LZ4
~25 ms, while the web process waits for that write before answering 202. Only values stored from now on
change; a server without LZ4 keeps pglz.
"""

from django.db import migrations

COMPRESSION = """
DO $$
BEGIN
    ALTER TABLE twin_telemetrybatch ALTER COLUMN body SET COMPRESSION {method};
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this PostgreSQL has no {method} compression; telemetry bodies keep the default';
END $$;
"""


def compression(method: str):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(COMPRESSION.format(method=method), params=None)

    return apply


class Migration(migrations.Migration):
    dependencies = [("twin", "0005_binary_storage_external")]

    operations = [migrations.RunPython(compression("lz4"), compression("default"))]
