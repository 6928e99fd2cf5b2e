"""The API's contract with its schema, one regression per bug schemathesis found (tests/test_fuzz_schema.py finds the next ones).

Each test names the rule it holds: errors are the documented error shape with the statuses the schema lists; a request the
schema refuses is refused (400 invalid_filter / invalid_request, never ignored), one it allows is not refused for a reason
it could have stated; nothing a client sends reaches the database unchecked (a 500).
"""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from tests.hub import PURPOSE, hub_world_create
from twin import models as twin

pytestmark = pytest.mark.django_db
SHARED = {"purpose": PURPOSE}


@pytest.fixture
def world():
    return hub_world_create(feeders=2, meters_per_feeder=5, steps=4)


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def refused(response, status: int, reason: str) -> dict:
    assert response.status_code == status, response.content[:400]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert isinstance(body["reason"], str) and isinstance(body["message"], str) and body["message"], body
    assert body["reason"] == reason, body
    return body


# --- server errors found by the fuzz -------------------------------------------------------------------------------------------


def test_a_decision_about_an_asset_type_names_an_asset_resource(world):
    """POST /sharing/decisions with an asset_type for a resource decided as a whole (a grid) was a FieldError 500, and an asset
    without its type an AttributeError 500."""
    steward = world.clients["provider_steward"]
    for body in ({"resource": "grid", "asset_type": "bus"}, {"resource": "asset"}, {"resource": "shared.violation", "asset_type": "line"}):
        assert "asset_type" in refused(steward.post("/api/v1/sharing/decisions", body, format="json"), 400, "bad_request")
    explained = steward.post("/api/v1/sharing/decisions", {"resource": "asset", "asset_type": "bus"}, format="json")
    assert explained.status_code == 200 and explained.json()["allowed"] is True


def test_a_time_filter_takes_the_one_rule_for_times(world):
    """`?at__gte=1503-07-31T01:41:28+22:41` reached PostgreSQL, which refuses the offset: a 500. Filters now take times by the
    rule of bodies and declared parameters: zoned, years 1900–2199, sent to the database in UTC."""
    operator = world.clients["provider_operator"]
    assert operator.get("/api/v1/sharing/audit/", {"at__gte": "2024-01-01T00:00:00+22:41"}).status_code == 200
    for value, code in (("1503-07-31T01:41:28+22:41", "out_of_range"), ("2024-01-01T00:00:00", "naive"), ("2024-02-30T00:00Z", "invalid")):
        body = refused(operator.get("/api/v1/sharing/audit/", {"at__gte": value}), 400, "invalid_filter")
        assert body["at__gte"], (value, code, body)
    refused(operator.get("/api/v1/loadflow/violations/", {"start": "1899-12-31T23:00:00Z"}), 400, "invalid_filter")


def test_a_shared_view_checks_its_feeder_and_agreement_parameters(world):
    """`?agreement=` with NUL reached a uid lookup behind a refused read (a 500); so did `?feeder=` with NUL."""
    consumer = world.clients["consumer"]
    refused(consumer.get("/api/v1/shared/buses/", {"purpose": "research", "agreement": "a\x00b"}), 400, "invalid_filter")
    refused(consumer.get("/api/v1/shared/buses/", {**SHARED, "feeder": "\x00"}), 400, "invalid_filter")
    refused(consumer.get("/api/v1/shared/buses/", {**SHARED, "agreement": ""}), 400, "invalid_filter")
    assert consumer.get("/api/v1/shared/buses/", {**SHARED, "feeder": world.feeders[0].iri}).status_code == 200


def test_a_picture_of_a_grid_without_a_substation_is_refused(world):
    """The voltage profile of a grid with neither transformer nor external grid asked networkx for paths from no source: a 500."""
    operator = world.clients["provider_operator"]
    refused(operator.get(f"/api/v1/loadflow/runs/{world.run.pk}/plots/voltage-profile.png"), 400, "invalid_picture")


# --- refused, not ignored ----------------------------------------------------------------------------------------------------------


def test_an_empty_filter_value_is_refused_on_every_kind_of_filter(world):
    """django-filter skips an empty value as if absent, so `?grid=` or `?at__lt=` silently filtered nothing."""
    operator = world.clients["provider_operator"]
    for url, name in (("/api/v1/loads/", "grid"), ("/api/v1/lines/", "in_service"), ("/api/v1/sharing/audit/", "at__lt"),
                      ("/api/v1/buses/", "iri"), ("/api/v1/meters/", "name__icontains"), ("/api/v1/loadflow/violations/", "severity")):
        assert name in refused(operator.get(url, {name: ""}), 400, "invalid_filter"), url


def test_query_values_outside_the_documented_enums_are_refused(world):
    """`?report=AAA` on an upload and `?format=AAA` on an export were ignored (or a 406): both are a parameter's bad value."""
    operator = world.clients["provider_operator"]
    grid = world.grid.pk
    refused(operator.post(f"/api/v1/grids/{grid}/changes/?report=AAA", b"", content_type="text/turtle"), 400, "invalid_filter")
    refused(operator.get(f"/api/v1/grids/{grid}/rdf/", {"format": "AAA"}), 400, "invalid_filter")
    refused(operator.get(f"/api/v1/grids/{grid}/rdf/", HTTP_ACCEPT="image/png"), 406, "not_acceptable")


def test_text_is_taken_as_sent_so_lengths_are_the_schemas(world):
    """DRF trimmed whitespace before checking max_length: 501 characters led by a NEL passed a 500-character limit."""
    consumer = world.clients["consumer"]
    refused(consumer.get("/api/v1/shared/catalog/", {"provider": "\x85" + "7" * 500}), 400, "invalid_filter")
    assert consumer.get("/api/v1/shared/catalog/", {"provider": "7" * 500}).status_code == 200


def test_readings_refuse_naive_times_like_the_load_flow(world):
    """`/telemetry/readings` made a naive time aware in the server's zone; every other time parameter refuses it."""
    operator = world.clients["provider_operator"]
    window = {"quantity": "active_power", "point": world.meters[0].pk}
    body = refused(operator.get("/api/v1/telemetry/readings", {**window, "start": "2024-05-01T00:00", "end": "2024-05-02T00:00Z"}),
                   400, "invalid_filter")
    assert "zone" in str(body["start"])
    refused(operator.get("/api/v1/telemetry/readings", {"quantity": "active_power", "feeder": str(10**30), "start": "2024-05-01T00:00Z",
                                                          "end": "2024-05-02T00:00Z"}), 400, "invalid_filter")
    refused(operator.get("/api/v1/telemetry/latest", {"grid": "0"}), 400, "invalid_filter")
    shared = {**SHARED, "quantity": "active_power", "start": "2024-05-01T00:00", "end": "2024-05-02T00:00Z"}
    refused(world.clients["consumer"].get("/api/v1/shared/telemetry", shared), 400, "invalid_filter")
    ok = operator.get("/api/v1/telemetry/readings", {**window, "start": "2024-05-01T00:00Z", "end": "2024-05-02T00:00+02:00"})
    assert ok.status_code == 200 and ok.json()["series"][0]["readings"], ok.content[:300]


def test_a_json_body_is_typed_not_coerced(world):
    """DRF took `{"grid_iri": 0}` for "0", `"yes"` for true and `"5"` for 5: every JSON body now has its fields' JSON types."""
    operator, steward = world.clients["provider_operator"], world.clients["provider_steward"]
    assert "grid_iri" in refused(operator.post("/api/v1/sharing/owner-consents/", {"grid_iri": 0}, format="json"), 400, "bad_request")
    offer = {"grid": world.grid.iri, "title": "t", "categories": ["telemetry"], "purposes": [PURPOSE], "published": "yes"}
    assert "published" in refused(steward.post("/api/v1/sharing/offers/", offer, format="json"), 400, "bad_request")
    offer = {**offer, "published": True, "min_group_size": "5"}
    assert "min_group_size" in refused(steward.post("/api/v1/sharing/offers/", offer, format="json"), 400, "bad_request")
    assert steward.post("/api/v1/sharing/offers/", {**offer, "min_group_size": 5}, format="json").status_code == 201


def test_an_agreement_step_reads_json_only(world):
    """The lifecycle steps read any body as JSON whatever its type, and the schema offered `*/*`: XML and forms were 400s."""
    steward = world.clients["provider_steward"]
    url = f"/api/v1/sharing/agreements/{world.agreement.pk}/suspend/"
    refused(steward.post(url, b"<Transition/>", content_type="application/xml"), 415, "unsupported_media_type")
    assert steward.post(url).status_code == 200  # no body at all: no reason given
    refused(steward.post(url, {"reason": "again"}, format="json"), 409, "invalid_transition")


# --- the error shape and the statuses ------------------------------------------------------------------------------------------


def test_a_body_field_named_reason_or_message_does_not_take_the_error_shapes_keys(world):
    """A refused body field `reason` (or `message`) replaced the error's own reason with a list: the shape broke."""
    steward = world.clients["provider_steward"]
    body = refused(steward.post(f"/api/v1/sharing/agreements/{world.agreement.pk}/suspend/", {"reason": "x" * 501}, format="json"),
                   400, "bad_request")
    assert body["fields"]["reason"], body
    consumer_steward = world.clients["consumer_steward"]
    request = {"datasets": ["x"], "purpose": PURPOSE, "valid_until": "2030-01-01T00:00:00Z", "message": "m" * 5000}
    assert refused(consumer_steward.post("/api/v1/sharing/requests/", request, format="json"), 400, "bad_request")["fields"]["message"]


def test_a_method_a_route_does_not_take_is_405_before_any_decision(world):
    """A consumer's DELETE on a shared view was decided first and answered 404: the route exists, the method does not."""
    consumer = world.clients["consumer"]
    response = consumer.delete("/api/v1/shared/buses/")
    refused(response, 405, "method_not_allowed")
    assert response["Allow"] == "GET, HEAD, OPTIONS"
    refused(consumer.put("/api/v1/shared/sparql", {}), 405, "method_not_allowed")
    # QUERY found the SPARQL view's `query` handler name and went on to the decision: 404 for an unknown agreement
    refused(consumer.generic("QUERY", "/api/v1/shared/sparql?agreement=0"), 405, "method_not_allowed")
    # a multipart body reached OAuth2 authentication as the SPARQL view's unread body, which it read as a form: a 500
    refused(consumer.post(f"/api/v1/shared/sparql?purpose={PURPOSE}", {"query": "ASK {}"}), 415, "unsupported_media_type")


def test_results_of_a_run_that_has_none_are_a_conflict_not_a_bad_request(world):
    """A queued run's results or a snapshot's EN 50160 summary said 400 (your request is wrong); it is the run's state: 409."""
    operator = world.clients["provider_operator"]
    queued = twin.LoadFlowRun.objects.create(grid=world.grid, kind="snapshot", status="queued", at=world.run.at)
    for action in ("results", "violations", "hosting-capacity", "plots/grid.png"):
        refused(operator.get(f"/api/v1/loadflow/runs/{queued.pk}/{action}/"), 409, "run_not_succeeded")
    refused(operator.get(f"/api/v1/loadflow/runs/{world.run.pk}/en50160/"), 409, "not_a_time_series")


def test_every_operation_documents_its_errors_in_the_error_shape(schema):
    error = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"400", "401", "404", "429"} <= set(responses), (method, path)
            for code, response in responses.items():
                if code >= "400":
                    assert response["content"]["application/json"]["schema"] == error, (method, path, code)
            if "requestBody" in operation:
                assert {"413", "415"} <= set(responses), (method, path)
    assert "403" not in schema["paths"]["/api/v1/telemetry/quantities"]["get"]["responses"]  # public: decided before any role


def test_the_schema_says_what_the_endpoints_take_and_answer(schema):
    """Parameters the endpoints ignored were listed, ones they take were not, and JSON answers were documented as bytes."""
    paths = schema["paths"]
    names = lambda path, method="get": {p["name"] for p in paths[path][method].get("parameters", [])}  # noqa: E731
    assert names("/api/v1/loadflow/runs/{id}/violations/") == {"id", "limit", "offset"}  # not the run list's grid/kind/status
    assert {"limit", "offset", "iri", "element", "start", "end"} <= names("/api/v1/loadflow/runs/{id}/results/")
    assert {"limit", "offset"} <= names("/api/v1/loadflow/runs/{id}/hosting-capacity/") & names("/api/v1/shared/buses/")
    rdf = paths["/api/v1/grids/{id}/rdf/"]["get"]["responses"]
    assert rdf["200"]["content"]["application/ld+json"]["schema"] == {} and "406" in rdf
    assert set(paths["/api/v1/shared/catalog/"]["get"]["responses"]["200"]["content"]) == {"application/ld+json", "text/turtle"}
    assert set(paths["/api/v1/models/"]["post"]["responses"]["422"]["content"]) == {"application/json", "text/turtle"}
    agreement = schema["components"]["schemas"]["Agreement"]["properties"]
    assert agreement["previous"].get("nullable") is True
    limit = next(p for p in paths["/api/v1/buses/"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["minimum"] == 1
    at = next(p for p in paths["/api/v1/sharing/audit/"]["get"]["parameters"] if p["name"] == "at__gte")
    assert at["schema"]["pattern"] == "^(19|20|21)[0-9]{2}-"
    transition = paths["/api/v1/sharing/agreements/{id}/offer/"]["post"]
    assert set(transition["requestBody"]["content"]) == {"application/json"} and "409" in transition["responses"]
    # a JSON batch was documented as bytes, so `[null, null]` (two readings rejected one by one after the 202) read as invalid
    batch = paths["/api/v1/telemetry/batches/"]["post"]["requestBody"]["content"]
    assert [branch["type"] for branch in batch["application/json"]["schema"]["oneOf"]] == ["array", "object"]
    assert batch["application/senml+json"]["schema"]["type"] == "array" and batch["text/csv"]["schema"]["format"] == "binary"


def test_ids_are_ascii_digits_everywhere(world):
    """`"¹".isdigit()` is True and `int("¹")` raises: `?agreement=¹` on a shared view and `/grids/²/versions/` were 500s."""
    consumer, operator = world.clients["consumer"], world.clients["provider_operator"]
    response = consumer.get(f"/api/v1/shared/buses/?purpose={PURPOSE}&agreement=%C2%B9")
    assert response.status_code in (403, 404) and response["Content-Type"].startswith("application/json"), response.content[:300]
    refused(operator.get("/api/v1/grids/%C2%B2/versions/"), 404, "not_found")


def test_a_path_and_query_over_the_bound_is_a_414_in_the_error_shape(world):
    """Fifty 500-character IRIs are a valid results query; the web server refused the request line as an HTML page."""
    operator = world.clients["provider_operator"]
    iris = "&".join(f"iri=https://gridtwin.example/{'x' * 480}/{n}" for n in range(50))
    refused(operator.get(f"/api/v1/loadflow/runs/1/results/?{iris}"), 414, "uri_too_long")
