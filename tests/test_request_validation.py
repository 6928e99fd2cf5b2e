"""Typed request validation at the edge: every bad parameter or body is a 4xx in the error shape, never a 5xx, nothing stored.

Query parameters are declared as serializers (twin.api.serializers.QuerySerializer), pagination and filter values are
refused when invalid (sharing.api.base), run bodies are typed down to each scenario change (twin.loadflow.scenarios),
and whatever Django answers without a view under /api/ (no route, too many fields, a crash) is JSON too.
"""

import json
import time
from datetime import UTC, datetime

import pytest
from django.test import Client

from ontology.parsing import parse_rdf
from twin import models
from twin.api.urls import router
from twin.loadflow import scenarios
from twin.services import grid_import_graph

pytestmark = pytest.mark.django_db
Run = models.LoadFlowRun
RUNS = "/api/v1/loadflow/runs"
AT = "2016-06-21T12:00:00Z"


@pytest.fixture
def grid(utility, lv_turtle) -> models.Grid:
    graph = parse_rdf(lv_turtle, "text/turtle", max_bytes=len(lv_turtle) + 1, max_literal_chars=10_000)
    return grid_import_graph(graph=graph, participant=utility, source="test").grid


@pytest.fixture
def runs(grid) -> dict[str, Run]:
    """A succeeded snapshot and time series (no result rows: validation comes before any query)."""
    day = datetime(2016, 1, 1, tzinfo=UTC)
    return {"snapshot": Run.objects.create(grid=grid, kind="snapshot", status="succeeded", at=day),
            "timeseries": Run.objects.create(grid=grid, kind="timeseries", status="succeeded", start=day, end=day.replace(day=2),
                                             chunks_total=1)}


def refused(response, status: int, reason: str) -> dict:
    assert response.status_code == status, response.content[:400]
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    body = response.json()
    assert body["reason"] == reason and body["message"], body
    return body


# --- query parameters ------------------------------------------------------------------------------------------------------------

BAD_QUERIES = [
    ("/api/v1/lines/", {"in_service": "-9.7e307"}, "in_service"),
    ("/api/v1/loads/", {"in_service": "yes please"}, "in_service"),
    ("/api/v1/buses/", {"limit": "abc"}, "limit"),
    ("/api/v1/buses/", {"limit": "-1"}, "limit"),
    ("/api/v1/buses/", {"limit": "0"}, "limit"),
    ("/api/v1/buses/", {"limit": "9" * 5000}, "limit"),
    ("/api/v1/buses/", {"offset": "-5"}, "offset"),
    ("/api/v1/buses/", {"offset": "1.5"}, "offset"),
    ("/api/v1/buses/", {"iri": "a\x00b"}, "iri"),
    ("/api/v1/loadflow/violations/", {"end": ""}, "end"),
    ("/api/v1/loadflow/violations/", {"end": "2024-02-30T00:00Z"}, "end"),
    ("/api/v1/loadflow/violations/", {"start": "2024-01-01T00:00+25:00"}, "start"),
    ("/api/v1/loadflow/violations/", {"start": "0001-01-01T00:00+01:00"}, "start"),
    ("/api/v1/loadflow/violations/", {"start": "2024-01-01T00:00"}, "start"),  # no zone
    ("/api/v1/loadflow/violations/", {"start": "\x00"}, "start"),
    ("snapshot/results/", {"feeder": "\x00"}, "feeder"),
    ("snapshot/results/", {"iri": "\x00"}, "iri"),
    ("snapshot/results/", {"vm_below": "nan"}, "vm_below"),
    ("snapshot/results/", {"element": "switch"}, "element"),
    ("snapshot/violations/", {"limit": "abc"}, "limit"),
    ("timeseries/results/", {"iri": "urn:x", "start": "2024-02-30T00:00Z"}, "start"),
    ("timeseries/results/", {"iri": "urn:x", "end": ""}, "end"),
    ("timeseries/plots/line-loading.png", {"line": "urn:\x00", "at": "2024-02-30T00:00Z"}, "at"),
    ("snapshot/plots/voltage-profile.png", {"feeder": "\x00"}, "feeder"),
]


@pytest.mark.parametrize("path, params, field", BAD_QUERIES)
def test_an_invalid_query_value_is_a_400_naming_the_parameter(operator, runs, path, params, field):
    if not path.startswith("/"):
        kind, _, rest = path.partition("/")
        path = f"{RUNS}/{runs[kind].pk}/{rest}"
    body = refused(operator.get(path, params), 400, "invalid_filter")
    assert field in body


def test_pages_beyond_bigint_are_cut_or_refused_on_every_list(operator, grid):
    lists = [f"/api/v1/{prefix}/" for prefix, _, _ in router.registry if prefix != "models" and "(?P<" not in prefix]  # not nested
    for url in lists:
        assert operator.get(url, {"limit": str(10**20)}).status_code == 200, url
        assert operator.get(url, {"limit": "1000", "offset": str(10**30)}).json()["results"] == [], url
        refused(operator.get(url, {"limit": "abc"}), 400, "invalid_filter")


def test_valid_filters_still_filter(operator, grid, runs):
    assert operator.get("/api/v1/lines/", {"in_service": "true"}).json()["count"] == models.Line.objects.filter(in_service=True).count()
    assert operator.get("/api/v1/lines/", {"in_service": "false", "limit": "5"}).json()["count"] == 0
    assert operator.get("/api/v1/loadflow/violations/", {"start": "2016-01-01T00:00Z", "end": "2016-01-02T00:00+01:00"}).status_code == 200


# --- run requests ----------------------------------------------------------------------------------------------------------------

BUS = "https://gridtwin.example/id/simbench/1-LV-rural1--0-sw/bus/1"


def change(**fields) -> dict:
    return {"scenario": {"changes": [fields]}}


BAD_PARAMETERS = [
    {"vm_min_pu": "abc"}, {"vm_min_pu": True}, {"vm_min_pu": None}, None, {"loading_limits": [1, 2]}, {"loading_limits": {"urn:a": "x"}},
    {"loading_limits": {"a\x00": 90}}, {"feeder": "\x00"}, {"feeder": "x" * 501}, {"\x00": 1}, {"junk": "x" * (1024 * 1024 - 100)},
    {"loading_limits": {f"urn:line:{i}": 90 for i in range(10_001)}},
    change(action="remove", iri="\x00"), change(action="remove", iri="urn:" + "x" * 500),
    change(action="add", element="load", buses=["\x00"], p_mw=0.01), change(action="set", iri=BUS, p_mw=1, **{"\x00": 1}),
    change(action="add", element="load", buses=[BUS], p_mw=0.01, q_mvar="x"), change(action="add", element="sgen", buses=[BUS], p_mw=True),
    change(action="set", iri=BUS, p_mw=True), change(action="set", iri=BUS, in_service="no"), change(action="set", iri=BUS),
    change(action="add", element="load", buses=[BUS], p_mw=1e300), change(action="add", element="load", buses=BUS, p_mw=0.01),
    change(action="add", element="load", bus=BUS, buses=[BUS], p_mw=0.01), change(action="explode", iri=BUS),
    {"scenario": {"changes": []}}, {"scenario": {"changes": [{"action": "remove", "iri": BUS}], "extra": 1}},
    {"scenario": {"changes": [{"action": "remove", "iri": BUS}] * (scenarios.MAX_CHANGES + 1)}},
    change(action="add", element="load", buses=[f"{BUS}-{i}" for i in range(scenarios.MAX_NAMED + 1)], p_mw=0.011),
]


@pytest.mark.parametrize("parameters", BAD_PARAMETERS, ids=lambda p: json.dumps(p)[:60])
def test_a_mistyped_or_oversized_parameter_is_a_400_before_anything_is_stored(operator, grid, parameters):
    started = time.monotonic()
    kind = "whatif" if parameters and "scenario" in parameters else "snapshot"
    body = {"grid": grid.pk, "kind": kind, "at": AT, "parameters": parameters}
    answer = refused(operator.post(RUNS, body, format="json"), 400, "invalid_request")
    assert "parameters" in answer and time.monotonic() - started < 5
    assert not Run.objects.exists()


@pytest.mark.parametrize("body", [
    {"kind": "timeseries", "start": "0001-01-01T00:00Z", "end": "0001-01-01T01:00Z"},
    {"at": "0001-01-01T00:00+01:00"}, {"at": "2016-06-21T12:00"}, {"at": "2016-02-30T12:00Z"},
    {"step_minutes": 10**30}, {"grid": 2**70}, {"grid": True}, {"kind": "snapshot\x00"},
])
def test_bad_times_and_fields_of_a_run_are_400(operator, grid, body):
    refused(operator.post(RUNS, {"grid": grid.pk, **body}, format="json"), 400, "invalid_request")
    assert not Run.objects.exists()


@pytest.mark.parametrize("raw", ["[" * 5000 + "]" * 5000, '{"grid": 1, "parameters": {"vm_min_pu": ' + "[" * 40 + "]" * 40 + "}}",
                                 '{"grid": 1, "at": NaN}', "{"])
def test_deep_or_broken_json_is_a_400(operator, grid, raw):
    refused(operator.post(RUNS, raw, content_type="application/json"), 400, "invalid_json")
    assert not Run.objects.exists()


def test_a_value_the_asset_cannot_take_is_a_422_and_a_sound_scenario_is_queued(operator, grid):
    line = models.Line.objects.filter(grid=grid).first().iri
    load = models.Load.objects.filter(grid=grid).first().iri
    post = lambda parameters: operator.post(RUNS, {"grid": grid.pk, "kind": "whatif", "at": AT, "parameters": parameters}, format="json")  # noqa: E731
    body = refused(post(change(action="set", iri=line, p_mw=0.5)), 422, "invalid_scenario")
    assert body["node"] == line
    assert not Run.objects.exists()
    queued = post({"vm_max_pu": 1.05, "loading_limits": {line: 80}, **change(action="set", iri=load, p_mw=0.002, in_service=True)})
    assert queued.status_code == 202, queued.content
    assert Run.objects.get().parameters["scenario"]["changes"][0]["p_mw"] == 0.002


# --- errors Django answers without a view ------------------------------------------------------------------------------------------


def test_no_route_too_many_fields_and_crashes_answer_the_error_shape(operator, grid, monkeypatch):
    refused(operator.get("/api/v1/grids/1.5/"), 404, "not_found")
    refused(operator.get("/api/v1/no-such-thing"), 404, "not_found")
    refused(operator.get("/api/v1/buses/?" + "&".join(f"p{i}=1" for i in range(1100))), 400, "too_many_fields")
    assert Client().get("/no-such-page").status_code == 404  # outside /api/ Django's own pages stay

    from twin.api import views

    def crash(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(views.AssetViewSet, "get_queryset", crash)
    operator.raise_request_exception = False
    body = refused(operator.get("/api/v1/buses/"), 500, "server_error")
    assert "boom" not in json.dumps(body)
