"""Storing a snapshot's result rows (bus results, branch results, inputs) column-wise, straight from the solver's arrays.

PostgreSQL: one binary COPY per table, its stream laid out by numpy (`copy_binary`): 54k rows of the 10k-bus
SimBench grid in a fraction of a second, where a model instance per row and a conversion per value through
`bulk_create` took 8.5–9 s. Elsewhere (the embedded SQLite default): `bulk_create` of the same rows. Both paths
take the same `Column`s, so they store the same values: a NULL where the column's `null` mask says so, every
other value as given (the callers apply the rules of NaN and infinity, `nullable` and `zero_filled`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.db import connection, models

# PostgreSQL's binary COPY format: a header, then per row the field count (int16) and each field as its length
# (int32, −1 for NULL) and its big-endian value; a trailer of −1.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"
BINARY = {"double precision": ">f8", "bigint": ">i8", "integer": ">i4", "smallint": ">i2"}
BULK_BATCH = 5000


@dataclass(frozen=True)
class Column:
    """The values of one field for every row: a number array (NULL where `null` is true) or a list of strings."""

    field: str  # the model field's name
    values: np.ndarray | list[str]
    null: np.ndarray | None = None


def nullable(values: np.ndarray) -> np.ndarray:
    """The NULL mask of a nullable result: NaN and ±inf (an isolated bus, a branch out of service) are stored as NULL."""
    return ~np.isfinite(values)


def zero_filled(values: np.ndarray) -> np.ndarray:
    """A result that is never NULL: NaN as 0, ±inf as the largest finite float (numpy's `nan_to_num`)."""
    return np.nan_to_num(np.asarray(values, dtype=np.float64))


def rows_store(model: type[models.Model], columns: list[Column], *, method: str | None = None) -> int:
    """Insert the rows of `columns` into `model`'s table; `method` "copy" (PostgreSQL only) or "bulk", by default COPY where
    the database is PostgreSQL. Returns the number of rows."""
    count = _row_count(columns)
    if not count:
        return 0
    method = method or ("copy" if connection.vendor == "postgresql" else "bulk")
    if method == "copy":
        _copy(model, columns)
    else:
        _bulk(model, columns)
    return count


def _row_count(columns: list[Column]) -> int:
    counts = {len(c.values) for c in columns}
    if len(counts) > 1:
        raise ValueError(f"columns of different lengths: {sorted(counts)}")
    return counts.pop() if counts else 0


def _bulk(model: type[models.Model], columns: list[Column]) -> None:
    """`bulk_create` of the rows: Python values per column (None where NULL), one instance per row."""
    names = [model._meta.get_field(c.field).attname for c in columns]
    lists = []
    for c in columns:
        values = c.values if isinstance(c.values, list) else np.asarray(c.values).tolist()
        if c.null is not None and c.null.any():
            values = [None if null else v for v, null in zip(values, c.null.tolist(), strict=True)]
        lists.append(values)
    model.objects.bulk_create([model(**dict(zip(names, row, strict=True))) for row in zip(*lists, strict=True)],
                              batch_size=BULK_BATCH)


def _copy(model: type[models.Model], columns: list[Column]) -> None:
    fields = [model._meta.get_field(c.field) for c in columns]
    types = [field.db_type(connection) for field in fields]
    data = copy_binary(columns, types)
    names = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(data)


def copy_binary(columns: list[Column], types: list[str]) -> bytes:
    """The binary COPY stream of the rows: `types` are the columns' PostgreSQL types (numbers as in BINARY, or text types)."""
    count = _row_count(columns)
    lengths, payloads = [], []
    for column, db_type in zip(columns, types, strict=True):
        length, payload = _field_bytes(column, db_type, count)
        lengths.append(length)
        payloads.append(payload)
    sizes = [np.maximum(length, 0) for length in lengths]
    row_size = 2 + 4 * len(columns) + np.sum(sizes, axis=0)
    row_start = len(COPY_HEADER) + np.concatenate([[0], np.cumsum(row_size)[:-1]])
    stream = np.empty(len(COPY_HEADER) + int(row_size.sum()) + len(COPY_TRAILER), dtype=np.uint8)
    stream[: len(COPY_HEADER)] = np.frombuffer(COPY_HEADER, dtype=np.uint8)
    stream[-len(COPY_TRAILER):] = 0xFF
    _scatter(stream, row_start, np.broadcast_to(np.array([len(columns)], dtype=">i2").view(np.uint8), (count, 2)))
    offset = row_start + 2
    for length, size, payload in zip(lengths, sizes, payloads, strict=True):
        _scatter(stream, offset, length.astype(">i4").view(np.uint8).reshape(count, 4))
        offset = offset + 4
        if payload.size:  # the values, each at its row's offset (NULLs have none)
            before = np.cumsum(size) - size
            stream[np.repeat(offset - before, size) + np.arange(payload.size)] = payload
        offset = offset + size
    return stream.tobytes()


def _field_bytes(column: Column, db_type: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(length per row, −1 for NULL; the non-NULL values' bytes one after the other) of one column."""
    if db_type in BINARY:
        dtype = np.dtype(BINARY[db_type])
        values = np.asarray(column.values)
        keep = np.ones(count, dtype=bool) if column.null is None else ~np.asarray(column.null, dtype=bool)
        length = np.where(keep, dtype.itemsize, -1).astype(np.int64)
        return length, values[keep].astype(dtype).view(np.uint8)
    if not (db_type == "text" or db_type.startswith("varchar")):
        raise ValueError(f"no binary COPY for column {column.field!r} of type {db_type}")
    encoded = [text.encode() for text in column.values]
    length = np.fromiter(map(len, encoded), dtype=np.int64, count=count)
    if column.null is not None:
        length[np.asarray(column.null, dtype=bool)] = -1
        encoded = [b"" if null else e for e, null in zip(encoded, column.null.tolist(), strict=True)]
    return length, np.frombuffer(b"".join(encoded), dtype=np.uint8)


def _scatter(stream: np.ndarray, starts: np.ndarray, values: np.ndarray) -> None:
    """Write row k of `values` (rows × width bytes) at `stream[starts[k]:starts[k] + width]`."""
    width = values.shape[1]
    stream[starts[:, None] + np.arange(width)] = values
