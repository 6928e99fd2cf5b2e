"""Household-protecting telemetry aggregates (`ingest.aggregates`) against real PostgreSQL.

Every result is compared with a reference computed here in plain Python from the readings as inserted, with bucket
boundaries enumerated independently (local midnights from zoneinfo, fixed UTC steps for hours and quarter hours),
and the embedded (SQLite) path, forced on the same data, must give the same answer as PostgreSQL. Values are
multiples of 1/4096 MW, so every sum is exact in any order and "the same" means equal, not close.
"""

from __future__ import annotations

import bisect
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection

from ingest import aggregates
from ingest.selectors import QueryTooLarge
from ingest.testing import metered_grid_create
from twin import models

pytestmark = pytest.mark.django_db

BERLIN = ZoneInfo("Europe/Berlin")
POWER = models.QUANTITIES["active_power"]
ENERGY = models.QUANTITIES["active_energy"]
QUARTER = timedelta(minutes=15)
# Two three-day periods around the DST changes of 2024 in Berlin: 31 March has 23 hours, 27 October 25.
PERIODS = [(datetime(2024, 3, 30, tzinfo=BERLIN), datetime(2024, 4, 2, tzinfo=BERLIN)),
           (datetime(2024, 10, 26, tzinfo=BERLIN), datetime(2024, 10, 29, tzinfo=BERLIN))]
SILENT_HOUR = datetime(2024, 3, 31, 10, tzinfo=BERLIN)  # two of feeder 0's six meters send nothing
INVALID_HOUR = datetime(2024, 10, 27, 14, tzinfo=BERLIN)  # two of feeder 1's six meters send only INVALID readings
INVALID_VALUE = 5.0  # far above every valid value: it would show in max, mean and sum if it leaked in


def power_mw(point_id: int, ts: datetime) -> float:
    """A household's active power, MW: a multiple of 1/4096 (exact sums) that varies by meter and quarter hour."""
    return ((point_id * 7 + int(ts.timestamp()) // 900) % 13 + 1) / 4096


@pytest.fixture
def metered(db) -> dict:
    """A Berlin grid of two feeders with six meters each, and quarter-hourly power and energy around both DST days.

    Readings run from each period's start to its end inclusive (so the energy of the last interval is there). In
    SILENT_HOUR two meters of feeder 0 are silent; in INVALID_HOUR two meters of feeder 1 report only INVALID values;
    one more INVALID reading sits in an otherwise normal hour of feeder 1.
    """
    owner = models.Participant.objects.create(iri="https://gridtwin.example/id/participant/dso", name="DSO")
    grid = metered_grid_create(owner, name="aggregates", feeders=2, meters_per_feeder=6)
    grid.time_zone = "Europe/Berlin"
    grid.save(update_fields=["time_zone"])
    feeders = [list(models.Meter.objects.filter(feeder__iri=f"{grid.iri}/feeder/{f}").order_by("id").values_list("id", flat=True))
               for f in range(2)]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # the monthly partitions of the readings table
            for month in ("2024-03-01", "2024-04-01", "2024-10-01"):
                cursor.execute("SELECT twin_reading_partition_ensure(%s)", [month])
    silent = set(feeders[0][:2])
    invalid = set(feeders[1][2:4])
    stray_invalid = (feeders[1][5], datetime(2024, 10, 26, 9, 30, tzinfo=BERLIN))
    rows = []
    for first, last in PERIODS:
        ts = first.astimezone(UTC)
        while ts <= last:
            hour = ts.astimezone(BERLIN).replace(minute=0)
            for pk in feeders[0] + feeders[1]:
                if pk in silent and hour == SILENT_HOUR:
                    continue
                bad = (pk in invalid and hour == INVALID_HOUR) or (pk, ts) == stray_invalid
                value = INVALID_VALUE if bad else power_mw(pk, ts)
                quality = models.Quality.INVALID if bad else models.Quality.GOOD
                rows.append(models.Reading(point_id=pk, quantity=POWER.code, ts=ts, value=value, quality=quality))
                rows.append(models.Reading(point_id=pk, quantity=ENERGY.code, ts=ts, value=value / 4, quality=quality))
            ts += QUARTER
    models.Reading.objects.bulk_create(rows, batch_size=5000)
    return {"feeders": feeders, "all": feeders[0] + feeders[1],
            "readings": [(r.point_id, r.quantity, r.ts, r.value, r.quality) for r in rows]}


def groups_of(metered: dict) -> dict[str, list[int]]:
    f0, f1 = metered["feeders"]
    return {"feeder/0": f0, "feeder/1": f1, "grid": f0 + f1, "four": f1[:4]}


def boundaries(start: datetime, end: datetime, resolution: str, zone: ZoneInfo) -> list[datetime]:
    """Bucket starts from start to past end, enumerated without the code under test: local midnights, or fixed
    UTC steps from a local hour start (exact for zones whose offsets are whole hours, or whole hours plus 30 min)."""
    if resolution == "day":
        day, starts = start.astimezone(zone).date(), []
        while True:
            starts.append(datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC))
            if starts[-1] > end:
                return starts
            day += timedelta(days=1)
    step = {"hour": timedelta(hours=1), "15min": QUARTER}[resolution]
    ts, starts = start.astimezone(UTC), []
    while ts <= end + step:
        starts.append(ts)
        ts += step
    return starts


def reference(readings, *, groups, spec, start, end, resolution, zone, k, per_point=False) -> list[dict]:
    """The expected answer, in plain Python: bucket by the enumerated boundaries (an energy stamped at a boundary
    closes the interval before it), drop INVALID, aggregate, suppress."""
    starts = boundaries(start, end, resolution, zone)
    cells: dict[tuple[str, datetime], list] = {}
    for point_id, quantity, ts, value, quality in readings:
        if quantity != spec.code or quality == models.Quality.INVALID:
            continue
        if spec.energy:
            if not start < ts <= end:
                continue
            bucket = starts[bisect.bisect_left(starts, ts) - 1]
        else:
            if not start <= ts < end:
                continue
            bucket = starts[bisect.bisect_right(starts, ts) - 1]
        for key, ids in groups.items():
            if point_id in ids:
                cells.setdefault((key, bucket), []).append((point_id, value))
    results = []
    for key, ids in groups.items():
        size = len(set(ids))
        if size < k:
            results.append({"group": key, "meters": size, "suppressed": True, "reason": "group_too_small", "buckets": [],
                            "suppressed_buckets": 0})
            continue
        buckets, hidden = [], 0
        for (group, bucket), values in sorted(cells.items()):
            if group != key:
                continue
            meters = len({pk for pk, _ in values})
            if meters < k:
                hidden += 1
                continue
            numbers = [v for _, v in values]
            row = {"ts": bucket.astimezone(zone), "mean": sum(numbers) / len(numbers), "min": min(numbers), "max": max(numbers),
                   "count": len(numbers)}
            if spec.energy:
                row["sum"] = sum(numbers)
            if not per_point:
                row["meters"] = meters
            buckets.append(row)
        results.append({"group": key, "meters": size, "suppressed": False, "reason": None, "buckets": buckets,
                        "suppressed_buckets": hidden})
    return results


def largest_difference(result: list[dict], expected: list[dict]) -> float:
    """The largest absolute difference of any aggregate between two answers of the same shape (buckets by ts)."""
    worst = 0.0
    for got, want in zip(result, expected, strict=True):
        assert [b["ts"] for b in got["buckets"]] == [b["ts"] for b in want["buckets"]]
        for a, b in zip(got["buckets"], want["buckets"], strict=True):
            for name in ("mean", "min", "max", "sum", "count", "meters"):
                if name in b:
                    worst = max(worst, abs(a[name] - b[name]))
    return worst


def exact(value):
    """`value` with every datetime as (UTC instant, UTC offset, zone name).

    Python compares two datetimes of the same zone by wall clock, ignoring fold, so 02:00 CEST == 02:00 CET on the
    night clocks go back, and one in the repeated hour never equals the same instant in another zone (PEP 495).
    Comparing this form compares the instants and their offsets.
    """
    if isinstance(value, datetime):
        return value.astimezone(UTC), value.utcoffset(), getattr(value.tzinfo, "key", str(value.tzinfo))
    if isinstance(value, dict):
        return {key: exact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [exact(item) for item in value]
    return value


def portable(monkeypatch) -> None:
    """Force the embedded path (raw rows aggregated in Python) on this database."""
    monkeypatch.setattr(aggregates, "_in_database", lambda: False)


def local_day(day: date) -> tuple[datetime, datetime]:
    return datetime(day.year, day.month, day.day, tzinfo=BERLIN), datetime(day.year, day.month, day.day, tzinfo=BERLIN) + timedelta(days=1)


@pytest.mark.parametrize("day, hours", [(date(2024, 3, 31), 23), (date(2024, 10, 27), 25), (date(2024, 3, 30), 24)])
@pytest.mark.parametrize("spec", [POWER, ENERGY])
def test_hourly_buckets_are_local_hours_on_dst_days(metered, day, hours, spec):
    start, end = local_day(day)
    groups = {"grid": metered["all"]}
    result = aggregates.group_aggregates(groups=groups, spec=spec, start=start, end=end, resolution="hour",
                                         time_zone="Europe/Berlin", min_group_size=5)
    buckets = result[0]["buckets"]
    assert len(buckets) == hours
    hour_starts = [(start.astimezone(UTC) + timedelta(hours=h)).astimezone(BERLIN) for h in range(hours)]
    assert exact([b["ts"] for b in buckets]) == exact(hour_starts)
    assert all(b["ts"].tzinfo.key == "Europe/Berlin" for b in buckets)
    if day == date(2024, 10, 27):  # the repeated local hour 02:00 is two buckets, CEST then CET
        assert [(b["ts"].hour, b["ts"].utcoffset()) for b in buckets[2:4]] == [(2, timedelta(hours=2)), (2, timedelta(hours=1))]
    assert exact(result) == exact(reference(metered["readings"], groups=groups, spec=spec, start=start, end=end, resolution="hour",
                                            zone=BERLIN, k=5))
    assert ("sum" in buckets[0]) is spec.energy


def test_daily_buckets_are_local_days_of_23_24_and_25_hours(metered):
    for (start, end), counts in zip(PERIODS, [[96, 92, 96], [96, 100, 96]], strict=True):
        result = aggregates.group_aggregates(groups={"grid": metered["all"]}, spec=POWER, start=start, end=end, resolution="day",
                                             time_zone="Europe/Berlin", min_group_size=5)
        buckets = result[0]["buckets"]
        midnights = [local_day(start.date() + timedelta(days=d))[0] for d in range(3)]
        assert exact([b["ts"] for b in buckets]) == exact(midnights)
        assert [b["ts"].hour for b in buckets] == [0, 0, 0]
        per_meter = [count * 12 for count in counts]
        if start.month == 3:
            per_meter[1] -= 2 * 4  # SILENT_HOUR: two meters, four quarters
        else:
            per_meter[0] -= 1  # the stray INVALID reading on 26 October
            per_meter[1] -= 2 * 4  # INVALID_HOUR
        assert [b["count"] for b in buckets] == per_meter
        assert [b["meters"] for b in buckets] == [12, 12, 12]


def test_energy_day_sums_take_each_interval_by_its_end(metered):
    start, end = PERIODS[0]
    pk = metered["feeders"][1][0]
    result = aggregates.point_readings(point_ids=[pk], spec=ENERGY, start=start, end=end, resolution="day", time_zone="Europe/Berlin")
    days = result[0]["readings"]
    # 00:15 … 24:00 of each local day: the reading stamped at midnight is the last quarter hour of the day before
    assert [d["count"] for d in days] == [96, 92, 96]
    first_day = [v for p, q, ts, v, _ in metered["readings"] if p == pk and q == ENERGY.code and start < ts <= start + timedelta(days=1)]
    assert days[0]["sum"] == sum(first_day)
    power = aggregates.point_readings(point_ids=[pk], spec=POWER, start=start, end=end, resolution="day", time_zone="Europe/Berlin")
    assert "sum" not in power[0]["readings"][0]


def test_small_group_is_suppressed_with_its_reason(metered):
    start, end = PERIODS[0]
    groups = groups_of(metered)
    result = aggregates.group_aggregates(groups=groups, spec=POWER, start=start, end=end, resolution="hour", time_zone="Europe/Berlin",
                                         min_group_size=5)
    four = result[3]
    assert four == {"group": "four", "meters": 4, "suppressed": True, "reason": "group_too_small", "buckets": [], "suppressed_buckets": 0}
    assert [r["suppressed"] for r in result] == [False, False, False, True]
    assert all(r["reason"] is None for r in result[:3])
    at_four = aggregates.group_aggregates(groups={"four": groups["four"]}, spec=POWER, start=start, end=end, resolution="hour",
                                          time_zone="Europe/Berlin", min_group_size=4)
    assert not at_four[0]["suppressed"] and len(at_four[0]["buckets"]) == 71


def test_repeated_meter_counts_once(metered):
    start, end = PERIODS[0]
    one_household = [metered["all"][0]] * 6
    result = aggregates.group_aggregates(groups={"padded": one_household}, spec=POWER, start=start, end=end, resolution="day",
                                         time_zone="Europe/Berlin", min_group_size=5)
    assert result[0]["meters"] == 1 and result[0]["suppressed"] and result[0]["buckets"] == []


def test_bucket_where_four_of_six_reported_is_suppressed_and_counted(metered):
    start, end = PERIODS[0]
    groups = groups_of(metered)
    result = {r["group"]: r for r in aggregates.group_aggregates(
        groups=groups, spec=POWER, start=start, end=end, resolution="hour", time_zone="Europe/Berlin", min_group_size=5)}
    feeder = result["feeder/0"]
    assert feeder["suppressed_buckets"] == 1
    assert SILENT_HOUR not in [b["ts"] for b in feeder["buckets"]]
    assert len(feeder["buckets"]) == 71 - 1
    grid_hour = next(b for b in result["grid"]["buckets"] if b["ts"] == SILENT_HOUR)  # 10 of 12 reported: shown
    assert grid_hour["meters"] == 10 and grid_hour["count"] == 40
    assert result["feeder/1"]["suppressed_buckets"] == 0
    # at k=4 the same hour is shown, with its four meters
    shown = aggregates.group_aggregates(groups={"feeder/0": groups["feeder/0"]}, spec=POWER, start=start, end=end, resolution="hour",
                                        time_zone="Europe/Berlin", min_group_size=4)
    hour = next(b for b in shown[0]["buckets"] if b["ts"] == SILENT_HOUR)
    assert hour["meters"] == 4 and shown[0]["suppressed_buckets"] == 0


def test_invalid_readings_are_excluded_from_values_and_from_reporting_meters(metered):
    start, end = PERIODS[1]
    groups = groups_of(metered)
    for spec in (POWER, ENERGY):
        result = {r["group"]: r for r in aggregates.group_aggregates(
            groups=groups, spec=spec, start=start, end=end, resolution="15min", time_zone="Europe/Berlin", min_group_size=5)}
        feeder = result["feeder/1"]
        assert feeder["suppressed_buckets"] == 4  # the four quarters of INVALID_HOUR: only four valid meters
        assert all(b["max"] < INVALID_VALUE / 4 for r in result.values() for b in r["buckets"])
        grid_quarter = next(b for b in result["grid"]["buckets"] if b["ts"] == INVALID_HOUR + (QUARTER if spec.energy else timedelta()))
        assert grid_quarter["meters"] == 10


@pytest.mark.parametrize("k", [1, 4, 5, 6, 7])
@pytest.mark.parametrize("resolution", ["15min", "hour", "day"])
@pytest.mark.parametrize("spec", [POWER, ENERGY])
def test_aggregates_equal_the_plain_python_reference(metered, monkeypatch, k, resolution, spec):
    groups = groups_of(metered)
    for start, end in PERIODS:
        kwargs = {"groups": groups, "spec": spec, "start": start, "end": end, "resolution": resolution}
        result = aggregates.group_aggregates(**kwargs, time_zone="Europe/Berlin", min_group_size=k)
        expected = reference(metered["readings"], **kwargs, zone=BERLIN, k=k)
        assert largest_difference(result, expected) == 0.0
        assert exact(result) == exact(expected)
        portable(monkeypatch)
        assert exact(aggregates.group_aggregates(**kwargs, time_zone="Europe/Berlin", min_group_size=k)) == exact(result)
        monkeypatch.undo()


@pytest.mark.parametrize("zone_name", ["Asia/Kolkata", "America/New_York", "UTC"])
def test_hours_are_local_hours_in_other_zones(metered, monkeypatch, zone_name):
    zone = ZoneInfo(zone_name)
    start, end = datetime(2024, 10, 26, tzinfo=zone), datetime(2024, 10, 28, tzinfo=zone)
    kwargs = {"groups": groups_of(metered), "spec": ENERGY, "start": start, "end": end}
    for resolution in ("hour", "day"):
        result = aggregates.group_aggregates(**kwargs, resolution=resolution, time_zone=zone_name, min_group_size=5)
        assert exact(result) == exact(reference(metered["readings"], **kwargs, resolution=resolution, zone=zone, k=5))
        if resolution == "hour" and zone_name == "Asia/Kolkata":  # +05:30: local hours start at half past UTC hours
            assert {b["ts"].astimezone(UTC).minute for b in result[2]["buckets"]} == {30}
        portable(monkeypatch)
        assert exact(aggregates.group_aggregates(**kwargs, resolution=resolution, time_zone=zone_name, min_group_size=5)) == exact(result)
        monkeypatch.undo()


@pytest.mark.parametrize("resolution", ["15min", "hour", "day"])
def test_point_readings_buckets_match_reference_and_portable_path(metered, monkeypatch, resolution):
    start, end = PERIODS[1]
    points = metered["feeders"][1][2:6]
    for spec in (POWER, ENERGY):
        kwargs = {"point_ids": points, "spec": spec, "start": start, "end": end, "resolution": resolution, "time_zone": "Europe/Berlin"}
        result = aggregates.point_readings(**kwargs)
        expected = reference(metered["readings"], groups={pk: [pk] for pk in points}, spec=spec, start=start, end=end,
                             resolution=resolution, zone=BERLIN, k=1, per_point=True)
        assert [r["point"] for r in result] == points
        assert exact([r["readings"] for r in result]) == exact([e["buckets"] for e in expected])
        portable(monkeypatch)
        assert exact(aggregates.point_readings(**kwargs)) == exact(result)
        monkeypatch.undo()


def test_point_readings_raw_are_the_readings_in_local_time(metered, monkeypatch):
    start, end = datetime(2024, 10, 27, 1, tzinfo=BERLIN), datetime(2024, 10, 27, 4, tzinfo=BERLIN)
    pk = metered["feeders"][1][3]
    result = aggregates.point_readings(point_ids=[pk], spec=POWER, start=start, end=end, resolution="raw", time_zone="Europe/Berlin")
    readings = result[0]["readings"]
    expected = sorted((ts, v) for p, q, ts, v, _ in metered["readings"] if p == pk and q == POWER.code and start <= ts < end)
    assert [(r["ts"].astimezone(UTC), r["value"]) for r in readings] == expected
    assert len(readings) == 4 * 4  # 01:00 … 04:00 local spans four real hours on the night clocks go back
    assert all(r["ts"].tzinfo.key == "Europe/Berlin" and r["quality"] == "good" for r in readings)
    invalid = aggregates.point_readings(point_ids=[pk], spec=POWER, start=INVALID_HOUR, end=INVALID_HOUR + timedelta(hours=1),
                                        resolution="raw", time_zone="Europe/Berlin")
    assert [r["quality"] for r in invalid[0]["readings"]] == ["invalid"] * 4  # raw is what the meter sent, flagged
    portable(monkeypatch)
    again = aggregates.point_readings(point_ids=[pk], spec=POWER, start=start, end=end, resolution="raw", time_zone="Europe/Berlin")
    assert exact(again) == exact(result)


@pytest.mark.parametrize("in_database", [True, False])
def test_row_cap_raises_query_too_large(metered, monkeypatch, settings, in_database):
    monkeypatch.setattr(aggregates, "_in_database", lambda: in_database)
    settings.GRIDTWIN_TELEMETRY_MAX_QUERY_ROWS = 71  # the hours of one group over the first period
    start, end = PERIODS[0]
    grid = {"grid": metered["all"]}
    assert len(aggregates.group_aggregates(groups=grid, spec=POWER, start=start, end=end, resolution="hour", time_zone="Europe/Berlin",
                                           min_group_size=5)[0]["buckets"]) == 71
    with pytest.raises(QueryTooLarge):
        aggregates.group_aggregates(groups=grid, spec=POWER, start=start, end=end, resolution="15min", time_zone="Europe/Berlin",
                                    min_group_size=5)
    with pytest.raises(QueryTooLarge):
        aggregates.group_aggregates(groups=groups_of(metered), spec=POWER, start=start, end=end, resolution="hour",
                                    time_zone="Europe/Berlin", min_group_size=1)
    for points, resolution in ((metered["all"][:2], "hour"), (metered["all"][:1], "raw")):
        with pytest.raises(QueryTooLarge):
            aggregates.point_readings(point_ids=points, spec=POWER, start=start, end=end, resolution=resolution, time_zone="Europe/Berlin")


def test_bad_questions_are_refused(metered):
    start, end = PERIODS[0]
    base = {"groups": {"grid": metered["all"]}, "spec": POWER, "start": start, "end": end, "resolution": "hour",
            "time_zone": "Europe/Berlin", "min_group_size": 5}
    for change in ({"resolution": "minute"}, {"time_zone": "Mars/Olympus"}, {"time_zone": "../etc/passwd"},
                   {"start": start.replace(tzinfo=None)}, {"end": start - timedelta(hours=1)}, {"min_group_size": 0}):
        with pytest.raises(ValueError):
            aggregates.group_aggregates(**{**base, **change})


@pytest.mark.parametrize("zone_name, start, end, resolution, expected", [
    # Lord Howe Island puts its clocks back by 30 minutes at 02:00: the local hour 01:00 is cut at the change
    ("Australia/Lord_Howe", "2024-04-06T13:00+00:00", "2024-04-06T16:45+00:00", "hour",
     ["00:00+11:00", "01:00+11:00", "01:30+10:30", "02:00+10:30", "03:00+10:30"]),
    # Brazil 2018: clocks jumped from 00:00 to 01:00, so 4 November began at 01:00
    ("America/Sao_Paulo", "2018-11-03T03:00+00:00", "2018-11-05T03:00+00:00", "day", ["00:00-03:00", "01:00-02:00", "00:00-02:00"]),
    # Cuba 2024: clocks went back from 01:00 to 00:00; the day began at the first midnight
    ("America/Havana", "2024-11-03T04:00+00:00", "2024-11-04T06:00+00:00", "day", ["00:00-04:00", "00:00-05:00"]),
    ("Asia/Kathmandu", "2024-11-03T03:15+00:00", "2024-11-03T04:45+00:00", "hour", ["09:00+05:45", "10:00+05:45"]),
])
def test_bucket_starts_in_zones_with_unusual_clock_changes(zone_name, start, end, resolution, expected):
    zone = ZoneInfo(zone_name)
    starts = aggregates.bucket_starts(datetime.fromisoformat(start), datetime.fromisoformat(end), resolution, zone)
    assert [at.astimezone(zone).isoformat()[11:16] + at.astimezone(zone).isoformat()[19:] for at in starts[:-1]] == expected
