"""Hostile values inside well-formed input: non-finite numbers in a grid model, and telemetry readings that must be
rejected one by one after the batch was accepted (NUL, unpaired surrogates, huge integers, repeated keys, late workers)."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from rdflib import Graph, Literal
from rdflib.namespace import SH, XSD

from ingest import services
from ingest.testing import metered_grid_create, readings_csv, readings_json
from ontology.namespaces import CIM
from ontology.validation import SHAPES_PATH, validate_graph
from tests.test_ingest_api import gateway_client, post
from twin import models

pytestmark = pytest.mark.django_db

GTS = "https://w3id.org/gridtwin/shapes#"
NON_FINITE = ['"NaN"^^xsd:double', '"INF"^^xsd:double', '"-INF"^^xsd:double', '"inf"^^xsd:double', '"1e400"^^xsd:double',
              "1" + "0" * 400, '"NaN"^^xsd:float', "1e308", "-2e15"]


# --- non-finite numbers in a grid model ------------------------------------------------------------------------


def with_load_p(lv_turtle: bytes, literal: str) -> bytes:
    text = lv_turtle.decode()
    found = re.search(r"cim:EnergyConsumer\.p [^ ;]+", text)
    text = text.replace(found.group(0), f"cim:EnergyConsumer.p {literal}", 1)
    return ("@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .\n" + text).encode()


@pytest.mark.parametrize("literal", NON_FINITE)
def test_a_non_finite_or_absurd_number_is_refused_and_the_loads_stay_readable(operator, lv_turtle, literal):
    response = operator.post("/api/v1/models/", data=with_load_p(lv_turtle, literal), content_type="text/turtle")

    assert response.status_code == 422, response.content[:500]
    assert response.json()["reason"] == "shacl_violation"
    assert any(v["path"] == str(CIM["EnergyConsumer.p"]) and "not a finite number" in v["message"] for v in response.json()["violations"])
    assert models.Grid.objects.count() == 0
    assert operator.get("/api/v1/loads/").status_code == 200


def test_every_floating_point_property_of_every_shape_is_covered(lv_graph):
    """One constraint for all properties: it targets every class a shape targets, and catches NaN wherever it sits."""
    shapes = Graph().parse(SHAPES_PATH)
    finite = set(shapes.objects(shapes.namespace_manager.expand_curie("gts:FiniteNumbersShape"), SH.targetClass))
    assert finite == set(shapes.objects(None, SH.targetClass))
    doubles = sorted({(subject, predicate) for subject, predicate, obj in lv_graph
                      if isinstance(obj, Literal) and obj.datatype == XSD.double})
    assert len({p for _, p in doubles}) >= 10
    broken = Graph() + lv_graph
    for subject, predicate in doubles:
        broken.set((subject, predicate, Literal("NaN", datatype=XSD.double)))
    found = {(v.focus_node, v.path) for v in validate_graph(broken).violations if v.source_shape == GTS + "FiniteNumbersShape"}
    assert found == {(str(s), str(p)) for s, p in doubles}


def test_pyshacl_reads_the_finite_numbers_rule_as_the_engine_does(small_graph):
    import pyshacl

    broken = Graph() + small_graph
    load = sorted(broken.subjects(CIM["EnergyConsumer.p"], None))[0]
    broken.set((load, CIM["EnergyConsumer.p"], Literal("INF", datatype=XSD.double)))
    _, results, _ = pyshacl.validate(broken, shacl_graph=Graph().parse(SHAPES_PATH), inference="none", advanced=True)
    reference = {(str(results.value(result, SH.focusNode)), str(results.value(result, SH.resultPath)))
                 for result in results.subjects(SH.sourceShape, None)}
    ours = {(v.focus_node, v.path) for v in validate_graph(broken).violations}
    assert reference == ours == {(str(load), str(CIM["EnergyConsumer.p"]))}


def test_the_twin_never_stores_a_non_finite_number(utility):
    grid = models.Grid.objects.create(iri="urn:g", name="g", owner=utility, source="test")
    with pytest.raises(ValueError, match="non-finite"), transaction.atomic():
        models.BaseVoltage.objects.create(iri="urn:v", grid=grid, name="v", nominal_voltage_kv=float("nan"))
    with pytest.raises(ValueError, match="non-finite"), transaction.atomic():
        models.BaseVoltage.objects.bulk_create([models.BaseVoltage(iri="urn:w", grid=grid, name="w", nominal_voltage_kv=float("inf"))])
    assert not models.BaseVoltage.objects.exists()


@pytest.fixture(scope="module")
def lv_graph(lv_turtle) -> Graph:
    return Graph().parse(data=lv_turtle, format="turtle")


# --- telemetry: accepted with 202, then judged reading by reading --------------------------------------------


@pytest.fixture
def points(utility) -> list[int]:
    grid = metered_grid_create(utility, name="hostile", feeders=1, meters_per_feeder=2)
    return list(models.Meter.objects.filter(grid=grid).order_by("id").values_list("id", flat=True))


@pytest.fixture
def gateway(utility):
    return gateway_client(utility, "gw-hostile")


def reading(point, value=1.5, **fields) -> dict:
    return {"point": point, "quantity": "active_power", "ts": "2024-05-01T12:00:00Z", "value": value, "unit": "kW", **fields}


def processed(gateway, body: bytes, content_type: str = "application/json") -> models.TelemetryBatch:
    response = post(gateway, body, content_type)
    assert response.status_code == 202, response.content[:500]
    services.telemetry_batch_process(batch_id=response.json()["id"])
    return models.TelemetryBatch.objects.get(pk=response.json()["id"])


def outcome(batch: models.TelemetryBatch) -> tuple:
    rejected = list(models.RejectedReading.objects.filter(batch=batch).order_by("position").values_list("position", "reason"))
    return batch.status, batch.accepted_count, rejected, sorted(models.Reading.objects.values_list("point_id", "value"))


@pytest.mark.parametrize(("field", "reason"), [("point", "unknown_point"), ("quantity", "unknown_quantity"),
                                               ("quality", "invalid_quality"), ("unit", "unit_mismatch")])
@pytest.mark.parametrize("text", ["meter\u0000", "\ud800"], ids=["nul", "surrogate"])
def test_a_reading_with_unstorable_text_is_rejected_and_the_valid_one_stored(gateway, points, field, reason, text):
    marker = b'"HOSTILE"'
    escaped = b'"meter\\u0000"' if text.isascii() else b'"\\ud800"'  # as a JSON writer sends them
    body = readings_json([reading(points[0]), reading(points[1]) | {field: "HOSTILE"}]).replace(marker, escaped)
    batch = processed(gateway, body)

    assert outcome(batch) == ("succeeded", 1, [(1, reason)], [(points[0], 0.0015)])


def test_nul_in_a_csv_row_rejects_that_row_only(gateway, points):
    batch = processed(gateway, readings_csv([reading(points[0]), reading(points[1], quality="go\u0000od")]), "text/csv")
    assert outcome(batch) == ("succeeded", 1, [(1, "invalid_quality")], [(points[0], 0.0015)])


def test_nul_in_a_senml_name_rejects_that_record_only(gateway, points):
    body = b'[{"bt":1714564800,"n":"%d/active_power","v":1.5,"u":"kW"},{"n":"%d\\u0000/active_power","v":2,"u":"kW"}]' % (
        points[0], points[1])
    batch = processed(gateway, body, "application/senml+json")
    assert outcome(batch) == ("succeeded", 1, [(1, "unknown_point")], [(points[0], 0.0015)])


@pytest.mark.parametrize(("field", "reason"), [("value", "not_a_number"), ("point", "unknown_point")])
def test_a_5001_digit_integer_rejects_its_reading_only(gateway, points, field, reason):
    bad = reading(points[1], value=0.5) | {field: "HUGE"}
    body = readings_json([reading(points[0]), bad]).replace(b'"HUGE"', b"1" * 5001)
    batch = processed(gateway, body)

    assert outcome(batch) == ("succeeded", 1, [(1, reason)], [(points[0], 0.0015)])
    assert models.RejectedReading.objects.get(batch=batch).reading[field] == "1" * 5001  # kept as sent, as text


@pytest.mark.parametrize("spelling", [b'"value":9', b'"value" : 9', b'"\\u0076alue":9'])
def test_a_reading_naming_a_key_twice_is_rejected_not_read_last_wins(gateway, points, spelling):
    body = readings_json([reading(points[0]), reading(points[1], value=0.5)]).replace(b'"value":0.5', b'"value":0.5,' + spelling)
    batch = processed(gateway, body)

    assert outcome(batch) == ("succeeded", 1, [(1, "duplicate_key")], [(points[0], 0.0015)])
    assert "'value' more than once" in models.RejectedReading.objects.get(batch=batch).message


def test_a_key_twice_in_a_senml_record_rejects_that_record(gateway, points):
    body = b'[{"n":"%d/active_power","t":1714564800,"v":1.5,"u":"kW"},{"n":"%d/active_power","t":1714564800,"v":1,"v":2,"u":"kW"}]' % (
        points[0], points[1])
    batch = processed(gateway, body, "application/senml+json")
    assert outcome(batch) == ("succeeded", 1, [(1, "duplicate_key")], [(points[0], 0.0015)])


def test_a_colon_inside_text_is_no_repeated_key(gateway, points):
    batch = processed(gateway, readings_json([reading(points[0], quality='good":')]))
    assert outcome(batch)[2] == [(0, "invalid_quality")]


@override_settings(GRIDTWIN_TELEMETRY_FUTURE_TOLERANCE_S=60)
def test_timestamp_in_future_is_judged_against_when_the_batch_was_received(gateway, points, monkeypatch):
    received = datetime.now(UTC)
    response = post(gateway, readings_json([reading(points[0], ts=(received + timedelta(seconds=30)).isoformat()),
                                            reading(points[1], ts=(received + timedelta(minutes=5)).isoformat())]))
    assert response.status_code == 202
    # a worker gets to it ten minutes later: the first reading was no future reading when it arrived, the second was
    monkeypatch.setattr(timezone, "now", lambda: received + timedelta(minutes=10))
    services.telemetry_batch_process(batch_id=response.json()["id"])
    batch = models.TelemetryBatch.objects.get(pk=response.json()["id"])
    assert outcome(batch)[:3] == ("succeeded", 1, [(1, "timestamp_in_future")])
