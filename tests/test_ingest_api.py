"""Telemetry over HTTP: batches accepted once durable, validated by the worker's service, bad input kept with reasons.

The worker's entry point (`telemetry_batch_process`, what the Celery task calls) is run in the test
process here; tests/test_ingest_worker.py runs the same batches through a real worker process.
"""

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.urls import URLPattern, URLResolver
from rest_framework.test import APIClient

from ingest import services
from ingest.api import urls as ingest_urls
from ingest.testing import metered_grid_create, power_readings, readings_csv, readings_json, readings_senml
from twin import models
from twin.models.telemetry import DirtyHour, HourlyReading

pytestmark = pytest.mark.django_db

BATCHES = "/api/v1/telemetry/batches"
START = datetime(2024, 5, 1, tzinfo=UTC)


def gateway_client(participant, name: str) -> APIClient:
    _, key = services.telemetry_source_issue(participant=participant, name=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Gateway {key}")
    return client


@pytest.fixture
def grid(utility) -> models.Grid:
    return metered_grid_create(utility, name="lv", feeders=2, meters_per_feeder=3)


@pytest.fixture
def points(grid) -> list[int]:
    return list(models.Meter.objects.filter(grid=grid).order_by("id").values_list("id", flat=True))


@pytest.fixture
def gateway(utility) -> APIClient:
    return gateway_client(utility, "gw-utility")


@pytest.fixture
def other_gateway(other_utility) -> APIClient:
    return gateway_client(other_utility, "gw-other")


def post(client, body: bytes, content_type: str = "application/json", **headers):
    return client.post(BATCHES, data=body, content_type=content_type, **headers)


def process(response) -> dict:
    """Run the worker's service on an accepted batch and return the batch as the API shows it."""
    assert response.status_code == 202, response.content[:500]
    services.telemetry_batch_process(batch_id=response.json()["id"])
    return response


def stored() -> set[tuple]:
    return set(models.Reading.objects.values_list("point_id", "quantity", "ts", "value"))


def test_batch_is_answered_202_once_durable_and_stored_in_canonical_units(gateway, operator, points):
    readings = [
        {"point": points[0], "quantity": "active_power", "ts": "2024-05-01T12:00:00Z", "value": 4200, "unit": "W"},
        {"point": points[1], "quantity": "active_power", "ts": "2024-05-01T12:00:00+02:00", "value": 3.5, "unit": "kW"},
        {"point": points[2], "quantity": "voltage", "ts": "2024-05-01T12:00:00Z", "value": 231.0, "unit": "V"},
        {"point": points[3], "quantity": "active_energy", "ts": "2024-05-01T12:00:00Z", "value": 1.25, "unit": "kWh"},
    ]
    response = post(gateway, readings_json(readings))

    assert response.status_code == 202
    batch = models.TelemetryBatch.objects.get(pk=response.json()["id"])
    assert bytes(batch.body) == readings_json(readings) and batch.status == "queued"
    assert response["Location"].endswith(f"{BATCHES}/{batch.pk}")
    services.telemetry_batch_process(batch_id=batch.pk)

    detail = operator.get(response["Location"]).json()
    assert detail["status"] == "succeeded"
    assert detail["counts"] == {"received": 4, "accepted": 4, "duplicate": 0, "rejected": 0}
    values = {(r.point_id, r.quantity): (r.ts, r.value) for r in models.Reading.objects.all()}
    assert values[(points[0], 1)] == (datetime(2024, 5, 1, 12, tzinfo=UTC), pytest.approx(0.0042))
    assert values[(points[1], 1)] == (datetime(2024, 5, 1, 10, tzinfo=UTC), pytest.approx(0.0035))
    assert values[(points[2], 6)][1] == pytest.approx(0.231)
    assert values[(points[3], 4)][1] == pytest.approx(0.00125)


@pytest.mark.parametrize(("encode", "content_type"), [(readings_csv, "text/csv"), (readings_senml, "application/senml+json")])
def test_csv_and_senml_store_what_json_stores(gateway, points, encode, content_type):
    readings = power_readings(points, START, 4)
    process(post(gateway, readings_json(readings)))
    from_json = stored()
    models.Reading.objects.all().delete()

    process(post(gateway, encode(readings), content_type))

    assert stored() == from_json and len(from_json) == len(readings)


def test_meter_iris_name_points_as_well_as_ids(gateway, grid, points):
    iri = models.Meter.objects.get(pk=points[0]).iri
    process(post(gateway, readings_json([{"point": iri, "quantity": "current", "ts": "2024-05-01T00:00:00Z", "value": 12, "unit": "A"}])))
    assert models.Reading.objects.get().point_id == points[0]


def test_half_good_half_bad_batch_stores_the_good_half_and_keeps_the_bad_half_with_reasons(gateway, operator, points, other_utility):
    foreign = metered_grid_create(other_utility, name="foreign", feeders=1, meters_per_feeder=1).meters.get().pk
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    good = power_readings(points[:2], START, 2)
    bad_and_expected = [
        ({"point": 999999, "quantity": "active_power", "ts": "2024-05-01T00:00:00Z", "value": 1, "unit": "kW"}, "unknown_point"),
        ({"point": foreign, "quantity": "active_power", "ts": "2024-05-01T00:00:00Z", "value": 1, "unit": "kW"}, "unknown_point"),
        ({"point": points[0], "quantity": "wind_speed", "ts": "2024-05-01T00:00:00Z", "value": 1, "unit": "m/s"}, "unknown_quantity"),
        ({"point": points[0], "quantity": "voltage", "ts": "2024-05-01T00:00:00Z", "value": 230, "unit": "kW"}, "unit_mismatch"),
        ({"point": points[0], "quantity": "active_power", "ts": "2024-05-01T00:00:00Z", "value": math.nan, "unit": "kW"}, "not_a_number"),
        ({"point": points[0], "quantity": "active_power", "ts": "2024-05-01T00:00:00Z", "value": "Infinity", "unit": "kW"},
         "not_a_number"),
        ({"point": points[0], "quantity": "active_power", "ts": "2024-05-01T00:00:00Z", "value": "abc", "unit": "kW"}, "not_a_number"),
        ({"point": points[0], "quantity": "state_of_charge", "ts": "2024-05-01T00:00:00Z", "value": 140, "unit": "%"}, "out_of_range"),
        ({"point": points[0], "quantity": "active_power", "ts": "2024-05-01T00:00:00", "value": 1, "unit": "kW"},
         "timestamp_without_zone"),
        ({"point": points[0], "quantity": "active_power", "ts": "yesterday", "value": 1, "unit": "kW"}, "timestamp_invalid"),
        ({"point": points[0], "quantity": "active_power", "ts": future, "value": 1, "unit": "kW"}, "timestamp_in_future"),
        ({"point": points[0], "quantity": "active_power", "ts": "1970-01-01T00:00:00Z", "value": 1, "unit": "kW"}, "timestamp_too_old"),
        ({"point": points[0], "quantity": "active_power", "value": 1, "unit": "kW"}, "missing_field"),
        ({"point": points[0], "quantity": "active_power", "ts": "2024-05-01T00:00:00Z", "value": 1, "unit": "kW", "quality": "great"},
         "invalid_quality"),
        ("not a reading", "malformed_reading"),
        ({"point": points[5], "quantity": "active_power", "ts": "2024-05-01T00:00:00Z", "value": 1, "unit": "kW"},
         "conflicting_duplicate"),
        ({"point": points[5], "quantity": "active_power", "ts": "2024-05-01T00:00:00Z", "value": 2, "unit": "kW"},
         "conflicting_duplicate"),
    ]
    repeated = dict(good[0])  # the same reading twice in one batch: stored once, counted as a duplicate
    # json.dumps writes the NaN literal, as many JSON writers do (it is not JSON; one reading, not the batch, pays for it)
    body = json.dumps({"readings": [*good, repeated, *(reading for reading, _ in bad_and_expected)]}).encode()

    response = process(post(gateway, body))

    detail = operator.get(response["Location"]).json()
    assert detail["counts"] == {"received": 22, "accepted": 4, "duplicate": 1, "rejected": 17}
    assert stored() == {(r["point"], 1, datetime.fromisoformat(r["ts"]), r["value"] / 1000) for r in good}
    rejected = operator.get(detail["rejected_url"], {"limit": 50}).json()
    assert rejected["count"] == 17
    expected = [(5 + i, reason) for i, (_, reason) in enumerate(bad_and_expected)]
    assert [(r["position"], r["reason"]) for r in rejected["results"]] == expected
    assert rejected["results"][4]["reading"]["value"] == "nan"
    assert all(r["message"] for r in rejected["results"])


def test_readings_of_the_usual_shape_are_judged_alike_and_kept_as_sent(gateway, operator, grid, points):
    """Every reading an object with the five fields and a number: the typed decoder's path, with the general path's verdicts."""
    iri = models.Meter.objects.get(pk=points[1]).iri
    stamp = "2024-05-01T00:00:00Z"
    good = [{"point": points[0], "quantity": "active_power", "ts": stamp, "value": 4200, "unit": "W"},
            {"point": iri, "quantity": "active_power", "ts": stamp, "value": 4.5, "unit": "kW", "quality": "estimated", "note": "kept"}]
    bad_and_expected = [
        ({"point": 10**20, "quantity": "active_power", "ts": stamp, "value": 1, "unit": "kW"}, "unknown_point"),
        ({"point": "no-such-meter", "quantity": "active_power", "ts": stamp, "value": 1, "unit": "kW"}, "unknown_point"),
        ({"point": points[2], "quantity": "voltage", "ts": stamp, "value": 230, "unit": "kW"}, "unit_mismatch"),
        ({"point": points[2], "quantity": "state_of_charge", "ts": stamp, "value": 140, "unit": "%"}, "out_of_range"),
        ({"point": points[2], "quantity": "active_power", "ts": "2024-05-01T00:00:00", "value": 1, "unit": "kW"},
         "timestamp_without_zone"),
        ({"point": points[2], "quantity": "active_power", "ts": stamp, "value": 1, "unit": "kW", "quality": "great"}, "invalid_quality"),
    ]
    sent = [*good, *(reading for reading, _ in bad_and_expected)]

    response = process(post(gateway, json.dumps(sent).encode()))  # a bare list of readings

    detail = operator.get(response["Location"]).json()
    assert detail["counts"] == {"received": 8, "accepted": 2, "duplicate": 0, "rejected": 6}
    assert stored() == {(points[0], 1, START, 0.0042), (points[1], 1, START, 0.0045)}
    rejected = operator.get(detail["rejected_url"]).json()["results"]
    assert [(r["position"], r["reason"]) for r in rejected] == [(2 + i, reason) for i, (_, reason) in enumerate(bad_and_expected)]
    assert [r["reading"] for r in rejected] == sent[2:]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b'{"readings": [{"point": 1,', "application/json", 400, "malformed_json"),
        (b'{"points": []}', "application/json", 400, "malformed_json"),
        (b"", "application/json", 400, "empty_body"),
        (b'{"readings": []}', "application/json", 400, "empty_body"),
        (b'[{"point": 1, "quantity": "active_power", "ts": "2024-05-01T00:00:00Z", "value": 1, "unit": "k\xff"}]', "application/json",
         400, "malformed_json"),  # well-formed but for one byte that is not UTF-8
        (b'{"readings": [' + b"[" * 5000 + b"]" * 5000 + b"]}", "application/json", 400, "malformed_json"),
        (b"point,ts,value\n1,2024-05-01T00:00:00Z,3\n", "text/csv", 400, "malformed_csv"),
        (b'point,quantity,ts,value,unit\n1,active_power,"2024-05-01T00:00:00Z,3,kW\n', "text/csv", 400, "malformed_csv"),
        (b"\xff\xfe\x00p", "text/csv", 400, "malformed_csv"),
        (b'{"n": "x"}', "application/senml+json", 400, "malformed_senml"),
        (b"<readings/>", "application/xml", 415, "unsupported_media_type"),
    ],
)
def test_unreadable_bodies_are_refused_with_a_reason_and_store_nothing(gateway, body, content_type, status, reason):
    response = post(gateway, body, content_type)
    assert response.status_code == status, response.content
    assert response.json()["reason"] == reason
    assert models.TelemetryBatch.objects.count() == 0


@override_settings(GRIDTWIN_TELEMETRY_MAX_BATCH_BYTES=1024 * 1024)
def test_oversized_bodies_are_413(gateway, points):
    declared = post(gateway, b"[]", CONTENT_LENGTH=str(200 * 1024 * 1024))  # a 200 MB upload is refused by its header
    assert declared.status_code == 413 and declared.json()["reason"] == "too_large"
    actual = post(gateway, readings_json(power_readings(points, START, 2000)))  # ~1.3 MB, whatever the header says
    assert actual.status_code == 413 and actual.json()["reason"] == "too_large"
    assert models.TelemetryBatch.objects.count() == 0


@override_settings(GRIDTWIN_TELEMETRY_MAX_READINGS=10)
def test_too_many_readings_is_413(gateway, points):
    response = post(gateway, readings_json(power_readings(points, START, 2)))
    assert response.status_code == 413 and response.json()["reason"] == "too_many_readings"


def test_idempotency_key_makes_a_retried_upload_a_no_op(gateway, points):
    body = readings_json(power_readings(points, START, 2))
    first = post(gateway, body, HTTP_IDEMPOTENCY_KEY="upload-17")
    retry = post(gateway, body, HTTP_IDEMPOTENCY_KEY="upload-17")
    assert retry.status_code == 202
    assert retry.json()["id"] == first.json()["id"] and retry["Idempotent-Replayed"] == "true"
    assert models.TelemetryBatch.objects.count() == 1

    other_body = post(gateway, readings_json(power_readings(points, START, 3)), HTTP_IDEMPOTENCY_KEY="upload-17")
    assert other_body.status_code == 422 and other_body.json()["reason"] == "idempotency_key_reused"


def test_the_same_batch_twice_and_shuffled_gives_the_same_state(gateway, operator, points):
    readings = power_readings(points, START, 8)
    first = operator.get(process(post(gateway, readings_json(readings)))["Location"]).json()
    state = stored()
    again = operator.get(process(post(gateway, readings_json(readings[::-1])))["Location"]).json()
    overlapping = operator.get(process(post(gateway, readings_json(power_readings(points, START + timedelta(hours=1), 8))))["Location"])

    assert first["counts"]["accepted"] == len(readings) == len(state)
    assert again["counts"] == {"received": len(readings), "accepted": 0, "duplicate": len(readings), "rejected": 0}
    assert overlapping.json()["counts"]["accepted"] == 4 * len(points)
    assert stored() >= state and len(stored()) == 12 * len(points)


def test_task_is_published_only_after_the_batch_commits(gateway, points, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = post(gateway, readings_json(power_readings(points, START, 1)))
        assert models.TelemetryBatch.objects.get().status == "queued"
    assert response.status_code == 202
    assert len(callbacks) == 1  # the publish waits for the commit; nothing was processed inside the request
    assert models.Reading.objects.count() == 0


def test_redeliveries_are_bounded_then_the_batch_is_dead_lettered(gateway, points, settings):
    batch_id = post(gateway, readings_json(power_readings(points, START, 1))).json()["id"]
    models.TelemetryBatch.objects.filter(pk=batch_id).update(status="running", attempts=settings.GRIDTWIN_TELEMETRY_MAX_ATTEMPTS)

    services.telemetry_batch_process(batch_id=batch_id)  # one delivery more than allowed

    batch = models.TelemetryBatch.objects.get(pk=batch_id)
    assert batch.status == "dead" and "gave up after" in batch.error
    assert models.Reading.objects.count() == 0
    assert services.telemetry_batches_requeue(include_dead=True) == 1  # a steward can send it round again
    assert models.TelemetryBatch.objects.get(pk=batch_id).status == "queued"


def test_a_finished_batch_delivered_again_is_left_alone(gateway, points):
    response = process(post(gateway, readings_json(power_readings(points, START, 1))))
    assert services.telemetry_batch_process(batch_id=response.json()["id"]) is None
    assert models.TelemetryBatch.objects.get().attempts == 1


def test_readings_in_a_month_without_a_partition_get_one(gateway, points):
    process(post(gateway, readings_json(power_readings(points[:1], datetime(2003, 2, 1, tzinfo=UTC), 1))))
    assert models.Reading.objects.count() == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('twin_reading_y2003m02') IS NOT NULL")
        assert cursor.fetchone()[0]


# --- queries ------------------------------------------------------------------------------------------


def test_readings_raw_and_aggregated_in_the_database(gateway, operator, points):
    process(post(gateway, readings_json(power_readings(points[:2], START, 8))))  # two hours of quarter-hours
    energy = [{"point": points[0], "quantity": "active_energy", "ts": (START + k * timedelta(minutes=15)).isoformat(), "value": 250,
               "unit": "Wh"} for k in range(8)]
    process(post(gateway, readings_json(energy)))
    window = {"start": START.isoformat(), "end": (START + timedelta(hours=2)).isoformat()}

    raw = operator.get("/api/v1/telemetry/readings", {"point": points[0], "quantity": "active_power", **window}).json()
    assert raw["unit"] == "MW" and raw["unit_iri"] == "http://qudt.org/vocab/unit/MegaW"
    assert [r["value"] for r in raw["series"][0]["readings"]] == [pytest.approx((points[0] % 97 + k / 4) / 1000) for k in range(8)]

    hourly = operator.get("/api/v1/telemetry/readings", {"point": points, "quantity": "active_power", "resolution": "hour",
                                                         **window}).json()
    first_hour = hourly["series"][0]["readings"][0]
    base = points[0] % 97
    assert first_hour["mean"] == pytest.approx((base + 0.375) / 1000) and first_hour["count"] == 4
    assert (first_hour["min"], first_hour["max"]) == (pytest.approx(base / 1000), pytest.approx((base + 0.75) / 1000))
    assert [s["point"] for s in hourly["series"]] == points and hourly["series"][2]["readings"] == []

    daily_energy = operator.get("/api/v1/telemetry/readings", {"point": points[0], "quantity": "active_energy", "resolution": "day",
                                                               **window}).json()
    assert daily_energy["series"][0]["readings"][0]["sum"] == pytest.approx(0.002)

    feeder = models.Meter.objects.get(pk=points[0]).feeder_id
    combined = operator.get("/api/v1/telemetry/readings", {"feeder": feeder, "quantity": "active_power", "resolution": "15min",
                                                           "group": "all", **window}).json()
    assert len(combined["series"]) == 1 and len(combined["series"][0]["readings"]) == 8
    assert combined["series"][0]["readings"][0]["count"] == 2


def plain_hourly(points: list[int], start: datetime, end: datetime) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00'), avg(value), min(value), max(value), "
                       "count(*) FROM twin_reading WHERE point_id = ANY(%s) AND quantity = 1 AND ts >= %s AND ts < %s "
                       "GROUP BY 1 ORDER BY 1", [points, start, end])
        return cursor.fetchall()


def test_hourly_rollup_agrees_with_the_readings_through_overlaps_refresh_late_data_and_rebuild(gateway, operator, points):
    # Batches that overlap (the conflict path adds only the rows it stored), a replay, and windows off the hour.
    process(post(gateway, readings_json(power_readings(points, START, 6))))
    process(post(gateway, readings_json(power_readings(points, START + timedelta(minutes=45), 9))))
    process(post(gateway, readings_json(power_readings(points, START, 6)), HTTP_IDEMPOTENCY_KEY="other-copy"))
    late = power_readings(points[:2], START + timedelta(hours=5), 2)
    process(post(gateway, readings_json(late)))
    windows = [(START, START + timedelta(hours=6)), (START + timedelta(minutes=20), START + timedelta(hours=2, minutes=40))]

    def check() -> None:
        for start, end in windows:
            body = operator.get("/api/v1/telemetry/readings", {"point": points, "quantity": "active_power", "resolution": "hour",
                                                               "group": "all", "start": start.isoformat(), "end": end.isoformat()}).json()
            served = [(datetime.fromisoformat(r["ts"].replace("Z", "+00:00")), r["mean"], r["min"], r["max"], r["count"])
                      for r in body["series"][0]["readings"]]
            expected = plain_hourly(points, start, end)
            assert [(row[0], row[4]) for row in served] == [(row[0], row[4]) for row in expected]
            assert [row[1:4] for row in served] == [pytest.approx(row[1:4]) for row in expected]

    check()  # every hour is dirty: all from the readings
    assert DirtyHour.objects.exists() and not HourlyReading.objects.exists()
    assert services.reading_rollups_refresh(settled_s=-60) == 4  # hours 0, 1, 2 and 5; every finished batch is settled
    assert not DirtyHour.objects.exists() and HourlyReading.objects.exists()
    check()
    process(post(gateway, readings_json(power_readings(points[:3], START + timedelta(hours=1, minutes=5), 1))))  # late: dirty again
    assert DirtyHour.objects.count() == 1
    check()
    HourlyReading.objects.all().delete()
    services.reading_rollups_rebuild(start=START, end=START + timedelta(days=1))
    check()


def test_latest_value_per_point_follows_the_newest_reading(gateway, operator, grid, points):
    process(post(gateway, readings_json(power_readings(points, START, 4))))
    process(post(gateway, readings_json(power_readings(points, START - timedelta(days=1), 2))))  # late, older data

    feeder = models.Meter.objects.get(pk=points[0]).feeder_id
    latest = operator.get("/api/v1/telemetry/latest", {"feeder": feeder}).json()["latest"]
    on_feeder = list(models.Meter.objects.filter(feeder_id=feeder).order_by("id").values_list("id", flat=True))
    assert [row["point"] for row in latest] == on_feeder
    newest = START + 3 * timedelta(minutes=15)
    assert all(datetime.fromisoformat(row["ts"].replace("Z", "+00:00")) == newest for row in latest)
    assert latest[0]["value"] == pytest.approx((points[0] % 97 + 0.75) / 1000) and latest[0]["unit"] == "MW"
    assert len(operator.get("/api/v1/telemetry/latest", {"grid": grid.pk}).json()["latest"]) == len(points)


def test_a_query_too_large_must_ask_for_less(gateway, operator, points, settings):
    process(post(gateway, readings_json(power_readings(points, START, 4))))
    settings.GRIDTWIN_TELEMETRY_MAX_QUERY_ROWS = 5
    response = operator.get("/api/v1/telemetry/readings", {"point": points, "quantity": "active_power", "start": START.isoformat(),
                                                           "end": (START + timedelta(days=1)).isoformat()})
    assert response.status_code == 400 and response.json()["reason"] == "too_many_rows"


# --- who may do what ------------------------------------------------------------------------------------


def endpoint_names(patterns, prefix="") -> set[str]:
    names = set()
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            names |= endpoint_names(pattern.url_patterns)
        elif isinstance(pattern, URLPattern) and pattern.name:
            names.add(pattern.name)
    return names


def endpoint_matrix(batch_id: int, point: int, feeder: int) -> dict[str, tuple[str, str, dict]]:
    """Every route of the telemetry API with a request that the utility's personas may make."""
    window = {"start": START.isoformat(), "end": (START + timedelta(days=1)).isoformat()}
    return {
        "telemetry-batch-list": ("post", BATCHES, {}),
        "telemetry-batch-detail": ("get", f"{BATCHES}/{batch_id}", {}),
        "telemetry-batch-rejected": ("get", f"{BATCHES}/{batch_id}/rejected", {}),
        "telemetry-readings": ("get", "/api/v1/telemetry/readings", {"point": point, "quantity": "active_power", **window}),
        "telemetry-latest": ("get", "/api/v1/telemetry/latest", {"feeder": feeder}),
        "telemetry-quantities": ("get", "/api/v1/telemetry/quantities", {}),
    }


def test_every_endpoint_is_in_the_matrix_and_needs_credentials(gateway, anonymous, points):
    batch_id = process(post(gateway, readings_json(power_readings(points, START, 1)))).json()["id"]
    matrix = endpoint_matrix(batch_id, points[0], models.Meter.objects.get(pk=points[0]).feeder_id)
    assert endpoint_names(ingest_urls.urlpatterns) == set(matrix)
    for method, url, params in matrix.values():
        response = anonymous.post(url, data=b"[]", content_type="application/json") if method == "post" else anonymous.get(url, params)
        assert response.status_code == 401, url
        assert response.json()["reason"] == "not_authenticated"


GATEWAY_READS = {"telemetry-batch-detail", "telemetry-batch-rejected", "telemetry-quantities"}


def test_the_owning_participant_reads_everything_and_outsiders_get_404(gateway, operator, other_operator, other_gateway, points):
    batch_id = process(post(gateway, readings_json(power_readings(points, START, 1)))).json()["id"]
    matrix = endpoint_matrix(batch_id, points[0], models.Meter.objects.get(pk=points[0]).feeder_id)
    for name, (method, url, params) in matrix.items():
        if method == "get":
            assert operator.get(url, params).status_code == 200, name
            # a gateway key follows its own batches; it reads no telemetry (not even its participant's)
            assert gateway.get(url, params).status_code == (200 if name in GATEWAY_READS else 403), name
            if name != "telemetry-quantities":
                assert other_operator.get(url, params).status_code == 404, name
                assert other_gateway.get(url, params).status_code == (404 if name in GATEWAY_READS else 403), name


def test_only_gateways_upload_and_only_to_their_own_participants_points(operator, other_gateway, points):
    body = readings_json(power_readings(points, START, 1))
    refused = post(operator, body)
    assert refused.status_code == 403 and refused.json()["reason"] == "not_permitted"

    foreign = process(post(other_gateway, body)).json()["id"]
    batch = models.TelemetryBatch.objects.get(pk=foreign)
    assert (batch.accepted_count, batch.rejected_count) == (0, len(points))
    assert set(batch.rejected_readings.values_list("reason", flat=True)) == {"unknown_point"}
    assert models.Reading.objects.count() == 0


def test_a_revoked_or_wrong_key_is_401(gateway, utility, points):
    for source in models.TelemetrySource.objects.all():
        source.credential.revoke()
    assert post(gateway, readings_json(power_readings(points, START, 1))).status_code == 401
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Gateway gtk_not-a-key")
    response = post(wrong, b"[]")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"


def test_the_requeue_waits_from_the_last_publish_and_for_a_gone_worker(gateway, points, settings):
    """A long but healthy backlog is not published again (each copy would count a delivery towards the dead letter);
    a batch whose message was lost, or whose worker died, is."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        pytest.skip("needs a broker: an eager publish would process the batch at once")
    now = datetime.now(UTC)
    ids = [post(gateway, readings_json(power_readings(points, START + timedelta(days=k), 1))).json()["id"] for k in range(4)]
    backlog, lost, running, gone = ids
    long_ago = now - timedelta(hours=2)
    models.TelemetryBatch.objects.filter(pk__in=ids).update(received_at=long_ago)
    models.TelemetryBatch.objects.filter(pk=backlog).update(published_at=now - timedelta(minutes=5))
    models.TelemetryBatch.objects.filter(pk=lost).update(published_at=long_ago)
    models.TelemetryBatch.objects.filter(pk=running).update(status="running", attempts=1, started_at=now - timedelta(minutes=5))
    models.TelemetryBatch.objects.filter(pk=gone).update(status="running", attempts=1, started_at=long_ago)

    assert services.telemetry_batches_requeue() == 2
    republished = models.TelemetryBatch.objects.filter(published_at__gt=now - timedelta(seconds=30))
    assert set(republished.values_list("pk", flat=True)) == {lost, gone}
    assert models.TelemetryBatch.objects.get(pk=backlog).attempts == 0


def test_a_full_backlog_sheds_uploads_at_the_edge_with_retry_after(gateway, points, settings):
    settings.GRIDTWIN_INGEST_MAX_QUEUED_BATCHES = 2
    settings.GRIDTWIN_INGEST_RETRY_AFTER_S = 30
    settings.CELERY_TASK_ALWAYS_EAGER = False  # the batches stay queued, as behind busy workers
    first = [post(gateway, readings_json(power_readings(points, START + timedelta(days=k), 1))) for k in range(2)]
    assert [r.status_code for r in first] == [202, 202]

    shed = post(gateway, readings_json(power_readings(points, START + timedelta(days=5), 1)), HTTP_IDEMPOTENCY_KEY="later")
    assert shed.status_code == 503 and shed.json()["reason"] == "overloaded" and shed["Retry-After"] == "30"
    assert models.TelemetryBatch.objects.count() == 2  # nothing stored for the shed upload

    models.TelemetryBatch.objects.filter(pk=first[0].json()["id"]).update(status="succeeded")
    again = post(gateway, readings_json(power_readings(points, START + timedelta(days=5), 1)), HTTP_IDEMPOTENCY_KEY="later")
    assert again.status_code == 202
