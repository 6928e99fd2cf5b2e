"""Storing validated rows: COPY on PostgreSQL, a plain bulk insert on the embedded SQLite default.

PostgreSQL, inside the caller's transaction:
1. fast path — binary COPY straight into the partitioned table, in a savepoint. New telemetry (the
   usual case) is stored at COPY speed, and every row of the batch is known to be new. Two workers
   copying the same keys at once wait for each other; if they deadlock, PostgreSQL fails one of them
   and that one takes the conflict path;
2. when the savepoint fails on an existing key (a replay, an overlapping batch, a concurrent writer of
   the same keys), COPY into a temporary table and `INSERT … ON CONFLICT DO NOTHING` from it, in key
   order so that concurrent writers lock keys in one order.
Both end with the latest-value side table upserted from the batch's newest row per (point, quantity).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import connection, transaction

from ingest.validation import Row

# Constant SQL fragments (never user input): the f-strings below only splice these in.
READING_COLUMNS = "point_id, quantity, ts, value, quality, batch_id"
READING_TYPES = ["int8", "int2", "timestamptz", "float8", "int2", "int8"]
LATEST_COLUMNS = "point_id, quantity, ts, value, quality"
LATEST_TYPES = ["int8", "int2", "timestamptz", "float8", "int2"]
LATEST_UPSERT = (
    "ON CONFLICT (point_id, quantity) DO UPDATE SET ts = excluded.ts, value = excluded.value, quality = excluded.quality "
    "WHERE excluded.ts > twin_latestreading.ts"
)


def partitions_ensure(rows: list[Row]) -> None:
    """Create the monthly partitions the rows fall into (PostgreSQL; a no-op elsewhere).

    Call outside the write transaction: creating a partition locks the parent table, and holding
    that lock for a whole batch would serialise the workers.
    """
    if connection.vendor != "postgresql" or not rows:
        return
    first, last = min(row[2] for row in rows), max(row[2] for row in rows)
    with connection.cursor() as cursor:
        for month in _months(first, last):
            cursor.execute("SELECT twin_reading_partition_ensure(%s)", [month])


def _months(first: datetime, last: datetime) -> Iterable[str]:
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        yield f"{year:04d}-{month:02d}-01"
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def readings_write(rows: list[Row], latest: list[Row], *, batch_id: int) -> int:
    """Store unique rows sorted by key and move the latest values forward; returns how many rows were new.

    Must run inside a transaction (the caller's): the rows, the latest values and the batch's status
    commit together or not at all.
    """
    if not rows:
        return 0
    if connection.vendor == "postgresql":
        inserted = _write_postgresql(rows, batch_id)
        _latest_postgresql(latest)
    else:
        inserted = _write_portable(rows, batch_id)
        _latest_portable(latest)
    return inserted


# --- PostgreSQL -----------------------------------------------------------------------------------------


def _copy(cursor, table: str, columns: str, types: list[str], rows: Iterable[tuple]) -> None:
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _write_postgresql(rows: list[Row], batch_id: int) -> int:
    from psycopg import errors

    with connection.cursor() as cursor:
        try:
            with transaction.atomic():
                _copy(cursor, "twin_reading", READING_COLUMNS, READING_TYPES, ((*row, batch_id) for row in rows))
            return len(rows)
        except (errors.UniqueViolation, errors.DeadlockDetected):
            pass  # some keys are stored already (or being stored by another worker): take the conflict path
        cursor.execute("CREATE TEMP TABLE ingest_incoming (LIKE twin_reading) ON COMMIT DROP")
        _copy(cursor, "ingest_incoming", READING_COLUMNS, READING_TYPES, ((*row, batch_id) for row in rows))
        cursor.execute(f"INSERT INTO twin_reading ({READING_COLUMNS}) SELECT {READING_COLUMNS} FROM ingest_incoming "  # noqa: S608
                       "ORDER BY point_id, quantity, ts ON CONFLICT DO NOTHING")
        inserted = cursor.rowcount
        cursor.execute("DROP TABLE ingest_incoming")
    return inserted


def _latest_postgresql(latest: list[Row]) -> None:
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE ingest_latest (LIKE twin_latestreading) ON COMMIT DROP")
        _copy(cursor, "ingest_latest", LATEST_COLUMNS, LATEST_TYPES, latest)
        cursor.execute(f"INSERT INTO twin_latestreading ({LATEST_COLUMNS}) SELECT {LATEST_COLUMNS} FROM ingest_latest "  # noqa: S608
                       f"ORDER BY point_id, quantity {LATEST_UPSERT}")
        cursor.execute("DROP TABLE ingest_latest")


# --- portable (SQLite, the embedded default) -----------------------------------------------------------


def _write_portable(rows: list[Row], batch_id: int) -> int:
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO twin_reading ({READING_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",  # noqa: S608
                           [(p, q, adapt(ts), v, quality, batch_id) for p, q, ts, v, quality in rows])
        return cursor.rowcount


def _latest_portable(latest: list[Row]) -> None:
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO twin_latestreading ({LATEST_COLUMNS}) VALUES (%s, %s, %s, %s, %s) {LATEST_UPSERT}",  # noqa: S608
                           [(p, q, adapt(ts), v, quality) for p, q, ts, v, quality in latest])


def partitions_ahead(months: int) -> list[str]:
    """Create the partitions of this month and the next `months` (PostgreSQL); returns their names."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT twin_reading_partition_ensure((now() + make_interval(months => m))::date) "
                       "FROM generate_series(0, %s) AS m", [months])
        return [name for (name,) in cursor.fetchall()]
