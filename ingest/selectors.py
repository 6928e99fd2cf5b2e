"""Reads for ingest: which points a gateway may write, readings and their aggregates, latest values.

Readings belong to the participant whose gateway sent them (provenance, `Meter.telemetry_owner`, fixed by the
first batch stored for the meter), not to whoever the meter's `owner` field names now: the rule is
`twin.selectors.points_of`. A gateway writes only to its participant's points that are not retired
(`point_ids_for(..., writable=True)`); who may read which points is decided by the decision point, whose
restriction the read views hand in as a queryset of meters.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Avg, Count, Max, Min, QuerySet, Sum
from django.db.models.expressions import RawSQL

from ingest.writer import binary_cursor
from twin import models as twin
from twin.ids import parse_id
from twin.selectors import chunks, points_of

RESOLUTION_SECONDS = {"15min": 900, "hour": 3600, "day": 86400}
QUALITY_LABELS = dict(twin.Quality.choices)
BUCKET_ORIGIN = "2000-01-01 00:00:00+00"  # a Saturday midnight UTC: buckets start on the hour and on UTC midnight


class QueryTooLarge(ValueError):
    """A readings query would return more rows than GRIDTWIN_TELEMETRY_MAX_QUERY_ROWS."""


def point_ids_for(scope: list[int] | QuerySet[twin.Meter], keys: set[str], *, writable: bool = False) -> dict[str, int]:
    """Map point keys (meter IRIs, or ids as text) to the ids of the meters in scope: these participants' points
    (`scope` a list of participant ids, `twin.selectors.points_of`), or the meters a decision allows (`scope` a Meter queryset).
    With `writable`, only the points a gateway may write (not retired). One query per kind of key on PostgreSQL."""
    if isinstance(scope, QuerySet):
        meters = scope.filter(retired_at__isnull=True) if writable else scope
    else:
        meters = points_of(scope, writable=writable)
    numeric = [number for key in keys if (number := parse_id(key)) is not None]  # ids as text (twin.ids: the one rule)
    found: dict[str, int] = {}
    if connection.vendor == "postgresql":  # each kind of key as one array parameter instead of IN lists in chunks
        iris = sorted(keys - {str(n) for n in numeric})
        if numeric:  # as one array literal: psycopg would quote each of 10k ids in Python
            by_id = meters.filter(id__in=RawSQL("SELECT unnest(%s::int8[])", ["{" + ",".join(map(str, numeric)) + "}"]))
            found.update((str(pk), pk) for pk in by_id.values_list("id", flat=True))
        if iris:
            found.update(meters.filter(iri__in=RawSQL("SELECT unnest(%s::text[])", [iris])).values_list("iri", "id"))
        return found
    for part in chunks(sorted(keys - {str(n) for n in numeric})):
        found.update(meters.filter(iri__in=part).values_list("iri", "id"))
    for part in chunks(numeric):
        found.update((str(pk), pk) for pk in meters.filter(id__in=part).values_list("id", flat=True))
    return found


class TimeBucket(models.Func):
    """Start of the fixed-width UTC bucket a timestamp falls in (15 min, hour, day)."""

    output_field = models.DateTimeField()

    def __init__(self, expression, *, seconds: int):
        super().__init__(expression)
        self.seconds = int(seconds)

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        return f"date_bin('{self.seconds} seconds'::interval, {sql}, TIMESTAMPTZ '{BUCKET_ORIGIN}')", params

    def as_sql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        seconds = self.seconds
        return f"datetime((CAST(strftime('%%s', {sql}) AS INTEGER) / {seconds}) * {seconds}, 'unixepoch')", params


def readings_series(*, point_ids: list[int], spec: twin.QuantitySpec, start: datetime, end: datetime, resolution: str,
                    per_point: bool = True) -> list[dict]:
    """Readings of points for one quantity in [start, end): raw, or aggregated in the database per bucket.

    Aggregates give mean, min, max and count per bucket (and sum for energies); `per_point=False`
    aggregates over all the points together (e.g. a feeder's hourly mean). Raises QueryTooLarge.
    """
    limit = settings.GRIDTWIN_TELEMETRY_MAX_QUERY_ROWS
    readings = twin.Reading.objects.filter(point__in=point_ids, quantity=spec.code, ts__gte=start, ts__lt=end)
    if resolution == "raw":
        rows = list(readings.order_by("point_id", "ts").values_list("point_id", "ts", "value", "quality")[: limit + 1])
        _check_size(rows, limit)
        series: dict[int, list[dict]] = {pk: [] for pk in point_ids}
        for point_id, ts, value, quality in rows:
            series[point_id].append({"ts": ts, "value": value, "quality": QUALITY_LABELS[quality]})
        return [{"point": pk, "readings": values} for pk, values in series.items()]
    stats = {"mean": Avg("value"), "min": Min("value"), "max": Max("value"), "count": Count("value")}
    if spec.energy:
        stats["sum"] = Sum("value")
    group = ["point_id", "bucket"] if per_point else ["bucket"]
    buckets = readings.annotate(bucket=TimeBucket("ts", seconds=RESOLUTION_SECONDS[resolution])).values(*group)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # JIT compilation costs ~200 ms and saves nothing on these plans
                cursor.execute("SET LOCAL jit = off")
        if connection.vendor == "postgresql" and RESOLUTION_SECONDS[resolution] % 3600 == 0:
            rows = _rollup_buckets(point_ids, spec, start, end, RESOLUTION_SECONDS[resolution], per_point, limit)
        else:
            rows = list(buckets.annotate(**stats).order_by(*group)[: limit + 1])
    _check_size(rows, limit)
    if not per_point:
        return [{"points": point_ids, "readings": [_bucket(row) for row in rows]}]
    series = {pk: [] for pk in point_ids}
    for row in rows:
        series[row["point_id"]].append(_bucket(row))
    return [{"point": pk, "readings": values} for pk, values in series.items()]


def _rollup_buckets(point_ids: list[int], spec: twin.QuantitySpec, start: datetime, end: datetime, seconds: int, per_point: bool,
                    limit: int) -> list[dict]:
    """Hourly or daily aggregates from the hourly rollup for the clean whole hours of [start, end), and from the readings
    for the hours marked dirty and the partial hours at its edges (PostgreSQL). Exact at any moment; a quarter of the
    rows of 15-minute readings once the rollup is refreshed."""
    hour = timedelta(hours=1)
    origin = datetime.fromisoformat(BUCKET_ORIGIN)
    inner_start = origin - ((origin - start) // hour) * hour  # first hour start at or after start
    inner_end = max(origin + ((end - origin) // hour) * hour, inner_start)  # last hour end at or before end
    point_column = "point_id, " if per_point else ""
    group = "1, 2" if per_point else "1"
    energy_sum = ", sum(s) AS sum" if spec.energy else ""
    bucket = f"date_bin('{int(seconds)} seconds'::interval, b, TIMESTAMPTZ '{BUCKET_ORIGIN}')"
    with connection.cursor() as cursor:  # the few hours not rolled up yet, as a constant for the planner
        cursor.execute("SELECT DISTINCT hour FROM twin_readinghourdirty WHERE hour >= %s AND hour < %s", [inner_start, inner_end])
        dirty = [hour for (hour,) in cursor.fetchall()]
    sql = (
        f"SELECT {point_column}{bucket} AS bucket, sum(s) / sum(c) AS mean, min(lo) AS min, max(hi) AS max, sum(c) AS count"  # noqa: S608  # nosec B608  # int() bucket width and constant fragments; values bound as %(name)s
        f"{energy_sum} FROM ("
        "SELECT point_id, hour AS b, count AS c, sum AS s, min AS lo, max AS hi FROM twin_readinghourly "
        "WHERE point_id = ANY(%(points)s) AND quantity = %(quantity)s AND hour >= %(inner_start)s AND hour < %(inner_end)s "
        "AND NOT hour = ANY(%(dirty)s) "
        "UNION ALL SELECT r.point_id, r.ts, 1, r.value, r.value, r.value FROM unnest(%(dirty)s::timestamptz[]) AS d(hour) "
        "JOIN twin_reading r ON r.ts >= d.hour AND r.ts < d.hour + INTERVAL '1 hour' "
        "WHERE r.point_id = ANY(%(points)s) AND r.quantity = %(quantity)s "
        "UNION ALL SELECT point_id, ts, 1, value, value, value FROM twin_reading "
        "WHERE point_id = ANY(%(points)s) AND quantity = %(quantity)s "
        "AND (ts >= %(start)s AND ts < %(inner_start)s OR ts >= %(inner_end)s AND ts < %(end)s)"
        f") parts GROUP BY {group} ORDER BY {group} LIMIT %(limit)s"
    )
    params = {"points": list(point_ids), "quantity": spec.code, "start": start, "end": end, "inner_start": inner_start,
              "inner_end": inner_end, "dirty": dirty, "limit": limit + 1}
    with binary_cursor() as cursor:  # a year of hours is 8,760 timestamps: binary, not Django's pure-Python text loader
        cursor.execute(sql, params)
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _bucket(row: dict) -> dict:
    return {"ts": row["bucket"], **{k: row[k] for k in ("mean", "min", "max", "count", "sum") if k in row}}


def _check_size(rows: list, limit: int) -> None:
    if len(rows) > limit:
        raise QueryTooLarge(f"more than {limit} rows: ask for a coarser resolution or a shorter period")


def latest_readings(*, meters: QuerySet[twin.Meter], quantity: int | None = None) -> list[dict]:
    """The newest reading per (point, quantity) of the given meters, in one query on the latest-value table.

    On PostgreSQL a plain join of the meters (id, IRI) with the latest values, read with a bare cursor in binary:
    ORM rows cost more than the query itself at 10k points, and so do timestamps parsed from text (Django's
    loader of text timestamps is pure Python, ~4 µs each).
    """
    if connection.vendor == "postgresql":
        meter_sql, params = meters.order_by().values("id", "iri").query.sql_with_params()
        condition = "" if quantity is None else "WHERE l.quantity = %s"
        with binary_cursor() as cursor:
            cursor.execute(f"SELECT l.point_id, m.iri, l.quantity, l.ts, l.value, l.quality FROM twin_latestreading l "  # noqa: S608  # nosec B608  # the ORM's own compiled SQL, its params passed on; quantity bound
                           f"JOIN ({meter_sql}) m ON m.id = l.point_id {condition} ORDER BY l.point_id, l.quantity",
                           [*params, *([] if quantity is None else [quantity])])
            rows = cursor.fetchall()
    else:
        latest = twin.LatestReading.objects.filter(point__in=meters.values("id"))
        if quantity is not None:
            latest = latest.filter(quantity=quantity)
        rows = latest.order_by("point_id", "quantity").values_list("point_id", "point__iri", "quantity", "ts", "value", "quality")
    specs = twin.QUANTITY_BY_CODE
    return [
        {"point": point_id, "point_iri": iri, "quantity": specs[code].name, "unit": specs[code].unit, "ts": ts, "value": value,
         "quality": QUALITY_LABELS[quality]}
        for point_id, iri, code, ts, value, quality in rows
    ]
