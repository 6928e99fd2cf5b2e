"""Storing validated rows: COPY on PostgreSQL, a plain bulk insert on the embedded SQLite default.

PostgreSQL, inside the caller's transaction:
1. fast path — binary COPY straight into the partitioned table, in a savepoint. New telemetry (the
   usual case) is stored at COPY speed, and every row of the batch is known to be new. Two workers
   copying the same keys at once wait for each other; if they deadlock, PostgreSQL fails one of them
   and that one takes the conflict path;
2. when the savepoint fails on an existing key (a replay, an overlapping batch, a concurrent writer of
   the same keys), COPY into a temporary table and `INSERT … ON CONFLICT DO NOTHING` from it, in key
   order so that concurrent writers lock keys in one order.
Both mark the UTC hours the batch added rows to (the hourly rollup is recomputed off the write path, see
`rollups_refresh`) and end with the latest-value side table upserted from the batch's newest row per
(point, quantity). Every table is written in key order.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import numpy as np
import psycopg
from django.db import ProgrammingError, connection, transaction
from psycopg.adapt import Dumper

from ingest.validation import ValidatedBatch

# Constant SQL fragments (never user input): the f-strings below only splice these in.
READING_COLUMNS = "point_id, quantity, ts, value, quality, batch_id"
LATEST_COLUMNS = "point_id, quantity, ts, value, quality"
LATEST_UPSERT = (
    "ON CONFLICT (point_id, quantity) DO UPDATE SET ts = excluded.ts, value = excluded.value, quality = excluded.quality "
    "WHERE excluded.ts > twin_latestreading.ts"
)
ROLLUP_COLUMNS = "point_id, quantity, hour, count, sum, min, max"
ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
HOUR_US = 3_600_000_000
# PostgreSQL's binary COPY format: a header, then per row the field count and each field as (length, big-endian
# value); numpy lays out a whole batch in one go (psycopg's write_row spends ~1 µs per row in Python).
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"
READING_RECORD = np.dtype([("fields", ">i2"), ("point_len", ">i4"), ("point_id", ">i8"), ("quantity_len", ">i4"),
                           ("quantity", ">i2"), ("ts_len", ">i4"), ("ts", ">i8"), ("value_len", ">i4"), ("value", ">f8"),
                           ("quality_len", ">i4"), ("quality", ">i2"), ("batch_len", ">i4"), ("batch_id", ">i8")])
FIELD_SIZES = {"point_len": 8, "quantity_len": 2, "ts_len": 8, "value_len": 8, "quality_len": 2, "batch_len": 8}


def copy_binary_readings(point_id, quantity, ts, value, quality, batch_id: int | None) -> bytes:
    """The COPY BINARY stream of readings (columns READING_COLUMNS; ts in microseconds since 2000-01-01 UTC)."""
    records = np.empty(len(point_id), dtype=READING_RECORD)
    records["fields"] = 6
    for name, size in FIELD_SIZES.items():
        records[name] = size
    records["point_id"], records["quantity"], records["ts"] = point_id, quantity, ts
    records["value"], records["quality"] = value, quality
    if batch_id is None:
        records["batch_len"], records["batch_id"] = -1, 0
        # a NULL field is its length -1 and no bytes: drop the 8 value bytes of batch_id
        data = records.tobytes()
        return COPY_HEADER + _drop_tail(data, len(point_id), READING_RECORD.itemsize, 8) + COPY_TRAILER
    records["batch_id"] = batch_id
    return COPY_HEADER + records.tobytes() + COPY_TRAILER


class BinaryArray(bytes):
    """A one-dimensional array parameter without NULLs, already in PostgreSQL's binary form (`binary_array`)."""

    oid = 0  # the array type's
    element_oid = 0
    element = ""  # numpy's big-endian spelling of one element


class Int8Array(BinaryArray):
    oid, element_oid, element = 1016, 20, ">i8"


class Int2Array(BinaryArray):
    oid, element_oid, element = 1005, 21, ">i2"


class Float8Array(BinaryArray):
    oid, element_oid, element = 1022, 701, ">f8"


class TimestamptzArray(BinaryArray):
    """Microseconds since 2000-01-01 UTC, as PostgreSQL stores timestamptz."""

    oid, element_oid, element = 1185, 1184, ">i8"


class BinaryArrayDumper(Dumper):
    format = psycopg.pq.Format.BINARY

    def __init__(self, cls: type, context=None):
        super().__init__(cls, context)
        self.oid = cls.oid

    def dump(self, obj: BinaryArray) -> bytes:
        return obj


def binary_array(kind: type[BinaryArray], values: np.ndarray) -> BinaryArray:
    """`values` as an array parameter of `kind`, laid out by numpy: psycopg spells a list of 10k numbers as text in
    Python (~1 µs each) and the server parses it back; this is one copy each way."""
    records = np.empty(len(values), dtype=[("length", ">i4"), ("value", kind.element)])
    records["length"] = np.dtype(kind.element).itemsize
    records["value"] = values
    header = np.array([1, 0, kind.element_oid, len(values), 1], dtype=">i4")  # ndim, has NULLs, element type, length, lower bound
    return kind(header.tobytes() + records.tobytes())


def binary_cursor() -> psycopg.Cursor:
    """A psycopg cursor with server-side binding on Django's connection (in its transaction), binary results, and
    `BinaryArray` parameters.

    Django binds parameters client-side, which spells a 10 MB body as 20 MB of hex inside the SQL text and
    reads it back the same way; a binary parameter and a binary result move the bytes as they are (≈3× faster).
    """
    connection.ensure_connection()
    cursor = psycopg.Cursor(connection.connection)
    cursor.format = psycopg.pq.Format.BINARY
    for kind in (Int8Array, Int2Array, Float8Array, TimestamptzArray):
        cursor.adapters.register_dumper(kind, BinaryArrayDumper)
    return cursor


def _drop_tail(data: bytes, rows: int, itemsize: int, tail: int) -> bytes:
    view = np.frombuffer(data, dtype=np.uint8).reshape(rows, itemsize)
    return view[:, : itemsize - tail].tobytes()


def partitions_ensure(validated: ValidatedBatch) -> None:
    """Create the monthly partitions the rows fall into (PostgreSQL; a no-op elsewhere).

    Call outside the write transaction: creating a partition locks the parent table, and holding
    that lock for a whole batch would serialise the workers.

    Two workers with the first batches of a new month race: the SQL function checks again under its lock, but its
    catalog lookup can miss the partition the other one has just committed, and CREATE TABLE then fails with
    "already exists". The partition exists, which is all that was asked: that error is taken as done (it sank the
    batch as `dead` before, its readings lost after the 202).
    """
    span = validated.ts_range()
    if connection.vendor != "postgresql" or span is None:
        return
    with connection.cursor() as cursor:
        for month in _months(*span):
            try:
                with transaction.atomic():
                    cursor.execute("SELECT twin_reading_partition_ensure(%s)", [month])
            except ProgrammingError as exc:
                if not isinstance(exc.__cause__, psycopg.errors.DuplicateTable):
                    raise


def _months(first: datetime, last: datetime) -> Iterable[str]:
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        yield f"{year:04d}-{month:02d}-01"
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def readings_write(validated: ValidatedBatch, *, batch_id: int) -> int:
    """Store the unique rows (sorted by key) and move the latest values forward; returns how many rows were new.

    Must run inside a transaction (the caller's): the rows, the latest values and the batch's status
    commit together or not at all.
    """
    if not len(validated):
        return 0
    if connection.vendor == "postgresql":
        inserted = _write_postgresql(validated, batch_id)
        _latest_postgresql(validated.latest())
    else:
        inserted = _write_portable(validated.rows, batch_id)
        _latest_portable(validated.latest().rows)
    return inserted


# --- PostgreSQL -----------------------------------------------------------------------------------------


def _copy(cursor, table: str, data: bytes) -> None:
    with cursor.copy(f"COPY {table} ({READING_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(data)


def _write_postgresql(validated: ValidatedBatch, batch_id: int) -> int:
    from psycopg import errors

    data = copy_binary_readings(validated.point_id, validated.quantity, validated.ts, validated.value, validated.quality, batch_id)
    with connection.cursor() as cursor:
        try:
            with transaction.atomic():
                _copy(cursor, "twin_reading", data)
        except (errors.UniqueViolation, errors.DeadlockDetected):
            pass  # some keys are stored already (or being stored by another worker): take the conflict path
        else:
            hours = np.unique(validated.ts - validated.ts % HOUR_US)
            cursor.execute(f"INSERT INTO twin_readinghourdirty (hour, batch) SELECT {ORIGIN} + h * INTERVAL '1 microsecond', %s "  # noqa: S608  # nosec B608  # ORIGIN is a module constant; batch id and hours bound
                           "FROM unnest(%s::int8[]) AS h", [batch_id, hours.tolist()])
            return len(validated)
        cursor.execute("CREATE TEMP TABLE ingest_incoming (LIKE twin_reading) ON COMMIT DROP")
        _copy(cursor, "ingest_incoming", data)
        # Only the rows this statement stored go into the rollup; the count of those is the answer.
        cursor.execute(
            f"WITH new AS (INSERT INTO twin_reading ({READING_COLUMNS}) SELECT {READING_COLUMNS} FROM ingest_incoming "  # noqa: S608  # nosec B608  # column lists and ORIGIN are module constants; batch id bound
            "ORDER BY point_id, quantity, ts ON CONFLICT DO NOTHING RETURNING point_id, quantity, ts, value), "
            f"marks AS (INSERT INTO twin_readinghourdirty (hour, batch) SELECT DISTINCT date_bin('1 hour', ts, {ORIGIN}), %s FROM new) "
            "SELECT count(*) FROM new", [batch_id])
        inserted = cursor.fetchone()[0]
        cursor.execute("DROP TABLE ingest_incoming")
    return inserted


def rollups_refresh(settled_before: datetime) -> int:
    """Recompute the hourly rollup of the hours marked by batches finished before `settled_before`, from the
    readings, and drop those marks; returns the hours recomputed.

    A mark is written with its batch's rows, so the rows of a settled batch are visible here. Rows of batches
    still in flight may be half in a recomputed hour: their own marks keep the hour dirty (queries read it from
    the readings) until a later run recomputes it again. Concurrent runs skip each other (advisory lock).
    """
    if connection.vendor != "postgresql":
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(hashtext('twin_readinghourly_refresh'))")
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute(
            "DELETE FROM twin_readinghourdirty d USING twin_telemetrybatch b WHERE b.id = d.batch AND b.finished_at < %s "
            "RETURNING d.hour", [settled_before])
        hours = sorted({hour for (hour,) in cursor.fetchall()})
        if hours:
            cursor.execute("DELETE FROM twin_readinghourly WHERE hour = ANY(%s)", [hours])
            cursor.execute(
                f"INSERT INTO twin_readinghourly ({ROLLUP_COLUMNS}) SELECT r.point_id, r.quantity, h.hour, count(*), sum(r.value), "  # noqa: S608  # nosec B608  # ROLLUP_COLUMNS is a module constant; hours bound
                "min(r.value), max(r.value) FROM unnest(%s::timestamptz[]) AS h(hour) "
                "JOIN twin_reading r ON r.ts >= h.hour AND r.ts < h.hour + INTERVAL '1 hour' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", [hours])
        return len(hours)


def _latest_postgresql(latest: ValidatedBatch) -> None:
    """One statement: the newest row per (point, quantity) as binary arrays, upserted in key order."""
    with binary_cursor() as cursor:
        cursor.execute(
            f"INSERT INTO twin_latestreading ({LATEST_COLUMNS}) SELECT * FROM unnest(%b, %b, %b, %b, %b) "  # noqa: S608  # nosec B608  # LATEST_* are module constants; arrays bound
            f"AS u(p, q, t, v, k) ORDER BY p, q {LATEST_UPSERT}",
            [binary_array(Int8Array, latest.point_id), binary_array(Int2Array, latest.quantity),
             binary_array(TimestamptzArray, latest.ts), binary_array(Float8Array, latest.value),
             binary_array(Int2Array, latest.quality)])


# --- portable (SQLite, the embedded default) -----------------------------------------------------------


def _write_portable(rows: list, batch_id: int) -> int:
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO twin_reading ({READING_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",  # noqa: S608  # nosec B608  # READING_COLUMNS is a module constant; rows bound
                           [(p, q, adapt(ts), v, quality, batch_id) for p, q, ts, v, quality in rows])
        return cursor.rowcount


def _latest_portable(latest: list) -> None:
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO twin_latestreading ({LATEST_COLUMNS}) VALUES (%s, %s, %s, %s, %s) {LATEST_UPSERT}",  # noqa: S608  # nosec B608  # LATEST_* are module constants; rows bound
                           [(p, q, adapt(ts), v, quality) for p, q, ts, v, quality in latest])


def rollups_rebuild(start: datetime, end: datetime) -> int:
    """Recompute the hourly rollup of the hours that overlap [start, end) from the readings (PostgreSQL); returns the rows."""
    if connection.vendor != "postgresql":
        return 0
    first_hour = f"date_bin('1 hour', %(start)s::timestamptz, {ORIGIN})"
    with transaction.atomic(), connection.cursor() as cursor:
        bounds = {"start": start, "end": end}
        cursor.execute(f"DELETE FROM twin_readinghourly WHERE hour >= {first_hour} AND hour < %(end)s", bounds)  # noqa: S608  # nosec B608  # first_hour is built from ORIGIN (constant); bounds bound
        cursor.execute(
            f"INSERT INTO twin_readinghourly ({ROLLUP_COLUMNS}) SELECT point_id, quantity, "  # noqa: S608  # nosec B608  # columns and ORIGIN are module constants; bounds bound
            f"date_bin('1 hour', ts, {ORIGIN}), count(*), sum(value), min(value), max(value) "
            f"FROM twin_reading WHERE ts >= {first_hour} AND ts < %(end)s + INTERVAL '1 hour' "
            f"AND date_bin('1 hour', ts, {ORIGIN}) < %(end)s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", bounds)
        return cursor.rowcount


def partitions_ahead(months: int) -> list[str]:
    """Create the partitions of this month and the next `months` (PostgreSQL); returns their names."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT twin_reading_partition_ensure((now() + make_interval(months => m))::date) "
                       "FROM generate_series(0, %s) AS m", [months])
        return [name for (name,) in cursor.fetchall()]
