"""Telemetry aggregates that protect households: provider-defined groups, local-time buckets, k-anonymity.

The sharing views call these readers with what a decision allows: the groups (built by the provider from the
agreement, never picked by the consumer), the finest resolution and the minimum group size k. `ingest` never
imports `sharing`; everything arrives as plain arguments.

Buckets are in the grid's local time (an IANA zone): a day is a local calendar day (23 or 25 hours on the days
daylight saving time starts or ends), an hour a local hour and a quarter hour a local quarter hour. The bucket
starts of a window are computed once, in Python with zoneinfo (`bucket_starts`), and both paths put a reading into
a bucket by searching that sorted list (`width_bucket` in PostgreSQL, `bisect` in Python). So the rules of the zone
come from one tz database, the PostgreSQL and the embedded (SQLite) paths cannot disagree about a bucket, and the
database does one binary search per reading instead of time-zone arithmetic (a day of hourly buckets over 1,000
meters: 52 ms instead of 75 ms with `AT TIME ZONE` and `date_bin` per reading, measured side by side):

- day: the first instant of each local date (on a night that skips or repeats local midnight, the earliest one).
- hour, 15 min: every instant at which the local wall clock shows a whole hour (quarter hour), plus every change of
  the zone's UTC offset. On the night clocks go back, the local 02:00-03:00 happens twice (CEST, then CET): two
  buckets, so the day has 25 hours and nothing is merged; on the night they go forward 02:00-03:00 does not exist
  and the day has 23. Zones with offsets of whole hours have UTC hours; Asia/Kolkata's hours start at half past.

Energies are interval energies stamped at the END of their interval (see `twin.models.QuantitySpec`): a reading at
00:00 is the energy of 23:45-00:00 and belongs to the previous day. So for energies a reading is bucketed by the
instant just before its timestamp and the window [start, end) selects the intervals inside it, i.e. readings with
start < ts <= end; sums are then the energy of each bucket. Other quantities are instantaneous: start <= ts < end.
Readings flagged INVALID never enter an aggregate (neither the values nor the count of reporting meters).

Suppression: a group of fewer than k meters gets no buckets at all, and a bucket in which fewer than k distinct
meters reported is dropped and counted, so a bucket where one household of a k-group is silent cannot be compared
with one where it reported. What this does not do: protect against differencing two groups the provider chose to
overlap (a grid group minus its feeder groups); build disjoint groups, or groups that differ by at least k meters.
And a bucket's min and max are one household's value each (not said whose): drop them where that is too much.

Returned timestamps are aware datetimes in the grid's zone. Python compares two datetimes of one zone by wall clock
(02:00 CEST == 02:00 CET) and never finds one in the repeated hour equal to the same instant in another zone
(PEP 495): compare `ts.astimezone(UTC)`, or the ISO form, which carries the offset.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from ingest.selectors import QUALITY_LABELS, QueryTooLarge
from ingest.writer import Int8Array, TimestamptzArray, binary_array, binary_cursor
from twin import models as twin
from twin.selectors import chunks

RESOLUTIONS = ("15min", "hour", "day")
BUCKET_MINUTES = {"15min": 15, "hour": 60}
MICROSECOND = timedelta(microseconds=1)  # PostgreSQL's resolution: ts - 1 µs is the last instant of an energy's interval
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # timestamptz in binary: microseconds since then


@dataclass(frozen=True)
class Window:
    """The validated question: quantity, time window [start, end) in UTC, resolution, local zone and its bucket starts
    (UTC, ascending; the last one closes the last bucket)."""

    spec: twin.QuantitySpec
    start: datetime
    end: datetime
    resolution: str
    zone: ZoneInfo
    starts: tuple[datetime, ...] = ()


@dataclass
class BucketStats:
    """Aggregates of one (group, bucket): mean, min and max in the quantity's canonical unit, readings, meters, sum."""

    mean: float
    min: float
    max: float
    count: int
    meters: int
    sum: float


def group_aggregates(*, groups: dict[str, list[int]], spec: twin.QuantitySpec, start: datetime, end: datetime, resolution: str,
                     time_zone: str, min_group_size: int) -> list[dict]:
    """Mean, min, max, count, reporting meters (and sum for energies) per provider-defined group and local-time bucket,
    with groups and buckets of fewer than `min_group_size` meters suppressed.

    `groups` maps a provider's group key (a feeder IRI, the grid IRI …) to its meter ids; `resolution` is "15min",
    "hour" or "day"; buckets are local to `time_zone` (IANA name) and their `ts` is the bucket start, aware, in that
    zone. Values are in the canonical unit of `spec` (e.g. MW, MWh). One result per group, in the order given:
    `{"group", "meters", "suppressed", "reason": "group_too_small" | None, "buckets": [{"ts", "mean", "min", "max",
    "count", "meters", ("sum")}], "suppressed_buckets"}`. Aggregated in the database on PostgreSQL (one query), in
    Python on the embedded SQLite. Raises QueryTooLarge beyond GRIDTWIN_TELEMETRY_MAX_QUERY_ROWS (group, bucket) rows,
    ValueError on a bad window, resolution, zone or k.
    """
    window = _window(spec, start, end, resolution, time_zone)
    if min_group_size < 1:
        raise ValueError("min_group_size must be at least 1")
    sizes = {key: len(set(ids)) for key, ids in groups.items()}  # a repeated id is one household, not two
    # Too small a group is never queried: not even whether its meters reported leaves the database.
    queried = {index: sorted({int(pk) for pk in ids}) for index, (key, ids) in enumerate(groups.items())
               if sizes[key] >= min_group_size}
    stats = _bucket_stats(queried, window)
    results = []
    for index, key in enumerate(groups):
        if index not in queried:
            results.append({"group": key, "meters": sizes[key], "suppressed": True, "reason": "group_too_small", "buckets": [],
                            "suppressed_buckets": 0})
            continue
        buckets, hidden = [], 0
        for bucket_key, row in stats.get(index, []):
            if row.meters < min_group_size:
                hidden += 1
                continue
            buckets.append({"ts": _bucket_start(bucket_key, window), **_values(row, spec), "meters": row.meters})
        results.append({"group": key, "meters": sizes[key], "suppressed": False, "reason": None, "buckets": buckets,
                        "suppressed_buckets": hidden})
    return results


def point_readings(*, point_ids: list[int], spec: twin.QuantitySpec, start: datetime, end: datetime, resolution: str,
                   time_zone: str) -> list[dict]:
    """Per-meter series for agreements that grant per-meter data: the readings themselves, or local-time buckets.

    `resolution` "raw" gives every reading (INVALID ones too, with their quality label: raw is what the meter sent)
    as `{"ts", "value", "quality"}`; "15min", "hour" or "day" give per-point buckets as in `group_aggregates`
    (`{"ts", "mean", "min", "max", "count", ("sum")}`, INVALID excluded) without suppression, since the agreement
    grants the single meter. Timestamps are aware, in `time_zone`; values in the canonical unit of `spec`. One
    `{"point": id, "readings": [...]}` per distinct id, in the order given. Raises QueryTooLarge beyond
    GRIDTWIN_TELEMETRY_MAX_QUERY_ROWS rows, ValueError on a bad window, resolution or zone.
    """
    points = list(dict.fromkeys(int(pk) for pk in point_ids))
    if resolution == "raw":
        window = _window(spec, start, end, "day", time_zone, buckets=False)
        rows = _raw_postgresql(points, window) if _in_database() else _raw_portable(points, window)
        series: dict[int, list[dict]] = {pk: [] for pk in points}
        for point_id, ts, value, quality in rows:
            series[point_id].append({"ts": ts.astimezone(window.zone), "value": value, "quality": QUALITY_LABELS[quality]})
        return [{"point": pk, "readings": values} for pk, values in series.items()]
    window = _window(spec, start, end, resolution, time_zone)
    stats = _bucket_stats({index: [pk] for index, pk in enumerate(points)}, window)
    return [{"point": pk, "readings": [{"ts": _bucket_start(key, window), **_values(row, spec)} for key, row in stats.get(index, [])]}
            for index, pk in enumerate(points)]


# --- shared: the question and its buckets --------------------------------------------------------------------------


def _window(spec: twin.QuantitySpec, start: datetime, end: datetime, resolution: str, time_zone: str, *,
            buckets: bool = True) -> Window:
    """Validate the question (aware datetimes: a naive one names no instant; a known resolution; an IANA zone) and
    lay out its buckets. Raises QueryTooLarge when one series alone would have more buckets than the row cap."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(RESOLUTIONS)}")
    for moment in (start, end):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("start and end must be timezone-aware")
    if end < start:
        raise ValueError("end must not be before start")
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {time_zone!r}") from error
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if not buckets or start == end:
        return Window(spec, start, end, resolution, zone)
    limit = settings.GRIDTWIN_TELEMETRY_MAX_QUERY_ROWS
    width = timedelta(days=1) if resolution == "day" else timedelta(minutes=BUCKET_MINUTES[resolution])
    if (end - start) / width > limit + 2:  # before laying out millions of buckets
        raise _too_large(limit)
    starts = bucket_starts(start, end, resolution, zone)
    if len(starts) - 1 > limit:
        raise _too_large(limit)
    return Window(spec, start, end, resolution, zone, tuple(starts))


def bucket_starts(start: datetime, end: datetime, resolution: str, zone: ZoneInfo) -> list[datetime]:
    """The starts (UTC, ascending) of the local-time buckets that cover [start, end], and the end of the last one.

    Day: the first instant of each local date. Hour, 15 min: each instant at which the wall clock of `zone` shows a
    whole hour (quarter hour), and each change of the zone's UTC offset (so no bucket spans a clock change; in zones
    that shift by whole hours these coincide).
    """
    if resolution == "day":
        first, last = start.astimezone(zone).date(), (end - MICROSECOND).astimezone(zone).date()
        days = [first + timedelta(days=n) for n in range((last - first).days + 2)]
        return sorted({datetime.combine(day, time(), tzinfo=zone).astimezone(UTC) for day in days})
    width = BUCKET_MINUTES[resolution] * 60_000_000  # µs; divides a day, so wall-clock multiples are local whole hours
    begin, stop = start - timedelta(minutes=BUCKET_MINUTES[resolution]), end + timedelta(minutes=BUCKET_MINUTES[resolution])
    found = set()
    for number, (first, last, offset) in enumerate(_offset_spans(begin, stop, zone)):
        if number:
            found.add(_micros(first))  # a change of offset starts a bucket
        shift = offset // MICROSECOND
        wall = _micros(first) + shift
        found.update(range(-(-wall // width) * width - shift, _micros(last), width))
    starts = sorted(found)
    low = bisect.bisect_right(starts, _micros(start)) - 1
    high = bisect.bisect_left(starts, _micros(end))
    return [PG_EPOCH + timedelta(microseconds=at) for at in starts[low : high + 1]]


def _micros(moment: datetime) -> int:
    """Microseconds since 2000-01-01 UTC, PostgreSQL's binary timestamptz."""
    return (moment - PG_EPOCH) // MICROSECOND


def _offset_spans(begin: datetime, stop: datetime, zone: ZoneInfo) -> list[tuple[datetime, datetime, timedelta]]:
    """[begin, stop) cut where `zone` changes its UTC offset, as (first, last, offset) spans.

    The offset is sampled every hour and each change found by bisection to the second (tz database changes fall on
    whole seconds); two changes within one hour that cancel out would be missed, and the tz database has none.
    """
    spans, first = [], begin
    offset = begin.astimezone(zone).utcoffset()
    at = begin
    while at < stop:
        following = min(at + timedelta(hours=1), stop)
        if following.astimezone(zone).utcoffset() != offset:
            change = _offset_change(at, following, zone, offset)
            spans.append((first, change, offset))
            first, offset = change, change.astimezone(zone).utcoffset()
        at = following
    spans.append((first, stop, offset))
    return spans


def _offset_change(after: datetime, before: datetime, zone: ZoneInfo, offset: timedelta) -> datetime:
    """The first instant in (after, before] at which `zone` has left `offset` (bisection over whole seconds)."""
    low, high = after, before  # low keeps the offset, high has left it
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    change = high.replace(microsecond=0)
    return change if change > low else high


def _bucket_index(ts: datetime, window: Window) -> int:
    """The bucket of a reading as PostgreSQL's `width_bucket` numbers it (1 = the first), by its timestamp or, for an
    interval energy, by the last instant of its interval."""
    return bisect.bisect_right(window.starts, ts - MICROSECOND if window.spec.energy else ts)


def _bucket_start(index: int, window: Window) -> datetime:
    """The start of a bucket, aware in the grid's zone."""
    return window.starts[index - 1].astimezone(window.zone)


def _values(row: BucketStats, spec: twin.QuantitySpec) -> dict:
    values = {"mean": row.mean, "min": row.min, "max": row.max, "count": row.count}
    if spec.energy:
        values["sum"] = row.sum
    return values


def _in_database() -> bool:
    """Whether aggregation runs in the database (PostgreSQL) or in Python (the embedded SQLite demo)."""
    return connection.vendor == "postgresql"


def _bucket_stats(groups: dict[int, list[int]], window: Window) -> dict[int, list[tuple[int, BucketStats]]]:
    """Per group index, its (bucket index, stats) in bucket order, over the valid readings of the groups' points."""
    if not groups or window.start == window.end:
        return {}
    limit = settings.GRIDTWIN_TELEMETRY_MAX_QUERY_ROWS
    rows = _stats_postgresql(groups, window, limit) if _in_database() else _stats_portable(groups, window, limit)
    if len(rows) > limit:
        raise _too_large(limit)
    by_group: dict[int, list[tuple[int, BucketStats]]] = {}
    for index, key, stats in rows:
        by_group.setdefault(index, []).append((key, stats))
    return by_group


# --- PostgreSQL: one query, binary in and out ---------------------------------------------------------------------


def _bucket_sql(window: Window) -> str:
    """The SQL of `_bucket_index` over `r.ts`, against the bucket starts passed as %(starts)s (constant text)."""
    moment = "r.ts - INTERVAL '1 microsecond'" if window.spec.energy else "r.ts"
    return f"width_bucket({moment}, %(starts)s::timestamptz[])"


def _window_sql(window: Window) -> str:
    return "r.ts > %(start)s AND r.ts <= %(end)s" if window.spec.energy else "r.ts >= %(start)s AND r.ts < %(end)s"


def _stats_postgresql(groups: dict[int, list[int]], window: Window, limit: int) -> list[tuple[int, int, BucketStats]]:
    """One grouped query over twin_reading, `point_id = ANY` on the readings so each monthly partition is read by its
    key index. The point → group mapping goes in as two binary arrays joined with unnest (a point may be in several
    groups); when every group is one meter of its own (per-meter series) the readings are grouped by point directly,
    which spares the join and the sort that counting distinct meters needs (about 2× faster for 1,000 meters)."""
    members = [(pk, index) for index, ids in groups.items() for pk in ids]
    points = sorted({pk for pk, _ in members})
    per_point = len(points) == len(members) and all(len(ids) == 1 for ids in groups.values())
    if per_point:
        head, join, meters = "r.point_id", "", "1"
    else:
        head, meters = "g.grp", "count(DISTINCT r.point_id)"
        join = "JOIN unnest(%(points)s::int8[], %(groups)s::int8[]) AS g(point_id, grp) ON g.point_id = r.point_id "
    sql = (
        f"SELECT {head}, {_bucket_sql(window)} AS bucket, avg(r.value), min(r.value), max(r.value), count(*), {meters}, "  # noqa: S608  # nosec B608  # fragments are this module's constant text; values bound as %(name)s
        f"sum(r.value) FROM twin_reading r {join}"
        f"WHERE r.point_id = ANY(%(all_points)s) AND r.quantity = %(quantity)s AND {_window_sql(window)} AND r.quality <> %(invalid)s "
        "GROUP BY 1, 2 ORDER BY 1, 2 LIMIT %(limit)s"
    )
    params = {"all_points": binary_array(Int8Array, np.array(points, dtype=np.int64)),
              "starts": binary_array(TimestamptzArray, np.array([_micros(at) for at in window.starts], dtype=np.int64)),
              "quantity": window.spec.code, "start": window.start, "end": window.end,
              "invalid": int(twin.Quality.INVALID), "limit": limit + 1}
    if not per_point:
        params["points"] = binary_array(Int8Array, np.array([pk for pk, _ in members], dtype=np.int64))
        params["groups"] = binary_array(Int8Array, np.array([index for _, index in members], dtype=np.int64))
    with transaction.atomic():
        with connection.cursor() as cursor:  # JIT compilation costs ~200 ms and saves nothing on these plans
            cursor.execute("SET LOCAL jit = off")
        with binary_cursor() as cursor:  # thousands of timestamps: binary, not Django's pure-Python text loader
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    group_of = {pk: index for pk, index in members} if per_point else None
    return [(group_of[head] if per_point else head, bucket, BucketStats(mean, low, high, count, meters, total))
            for head, bucket, mean, low, high, count, meters, total in rows]


def _raw_postgresql(points: list[int], window: Window) -> list[tuple]:
    """The readings of the points in the window, ordered by point and time, read in binary; capped."""
    limit = settings.GRIDTWIN_TELEMETRY_MAX_QUERY_ROWS
    sql = (f"SELECT r.point_id, r.ts, r.value, r.quality FROM twin_reading r WHERE r.point_id = ANY(%(points)s) "  # noqa: S608  # nosec B608  # _window_sql is constant text; values bound as %(name)s
           f"AND r.quantity = %(quantity)s AND {_window_sql(window)} ORDER BY r.point_id, r.ts LIMIT %(limit)s")
    params = {"points": binary_array(Int8Array, np.array(points, dtype=np.int64)), "quantity": window.spec.code,
              "start": window.start, "end": window.end, "limit": limit + 1}
    with binary_cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    _check_raw(rows, limit)
    return rows


# --- portable (SQLite, the embedded demo): raw rows, aggregated in Python ----------------------------------------


def _readings_portable(points: list[int], window: Window, *, valid_only: bool):
    """The readings of the points in the window through the ORM, streamed, in chunks of ids within SQLite's limits."""
    bounds = ({"ts__gt": window.start, "ts__lte": window.end} if window.spec.energy
              else {"ts__gte": window.start, "ts__lt": window.end})
    for part in chunks(points):
        readings = twin.Reading.objects.filter(point_id__in=part, quantity=window.spec.code, **bounds)
        if valid_only:
            readings = readings.exclude(quality=twin.Quality.INVALID)
        yield from readings.order_by("point_id", "ts").values_list("point_id", "ts", "value", "quality").iterator()


def _stats_portable(groups: dict[int, list[int]], window: Window, limit: int) -> list[tuple[int, int, BucketStats]]:
    """The same rows as `_stats_postgresql`, from the raw readings: memory grows with the buckets, not the readings."""
    member_of: dict[int, list[int]] = {}
    for index, ids in groups.items():
        for pk in ids:
            member_of.setdefault(pk, []).append(index)
    acc: dict[tuple[int, int], list] = {}  # [sum, min, max, count, set of points]
    for point_id, ts, value, _quality in _readings_portable(sorted(member_of), window, valid_only=True):
        key = _bucket_index(ts, window)
        for index in member_of[point_id]:
            cell = acc.get((index, key))
            if cell is None:
                if len(acc) > limit:
                    raise _too_large(limit)
                acc[(index, key)] = [value, value, value, 1, {point_id}]
            else:
                cell[0] += value
                cell[1], cell[2] = min(cell[1], value), max(cell[2], value)
                cell[3] += 1
                cell[4].add(point_id)
    return [(index, key, BucketStats(total / count, low, high, count, len(meters), total))
            for (index, key), (total, low, high, count, meters) in sorted(acc.items())]


def _raw_portable(points: list[int], window: Window) -> list[tuple]:
    limit = settings.GRIDTWIN_TELEMETRY_MAX_QUERY_ROWS
    rows = []
    for row in _readings_portable(points, window, valid_only=False):
        rows.append(row)
        if len(rows) > limit:
            break
    _check_raw(rows, limit)
    return rows


def _too_large(limit: int) -> QueryTooLarge:
    return QueryTooLarge(f"more than {limit} rows: ask for a coarser resolution, a shorter period or fewer groups")


def _check_raw(rows: list, limit: int) -> None:
    if len(rows) > limit:
        raise QueryTooLarge(f"more than {limit} readings: ask for an aggregate resolution or a shorter period")
