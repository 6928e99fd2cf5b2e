"""Publishing a grid over the API: conformance, idempotency, edits, export round trip, authorisation."""

import pytest
from rdflib import Graph, Literal, URIRef
from rdflib.compare import isomorphic
from rdflib.namespace import XSD

from ontology.namespaces import CIM, GT
from ontology.serialization import serialize
from twin import models

pytestmark = pytest.mark.django_db

TURTLE = "text/turtle"


def upload(client, body: bytes, content_type: str = TURTLE, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return client.post(f"/api/v1/models/{'?' + query if query else ''}", data=body, content_type=content_type)


def parse(body: bytes, fmt: str = "turtle") -> Graph:
    return Graph().parse(data=body, format=fmt)


def test_upload_creates_the_grid_and_its_assets(operator, lv_turtle, lv_net):
    response = upload(operator, lv_turtle)
    assert response.status_code == 201, response.content
    grid = models.Grid.objects.get(pk=response.json()["id"])
    assert grid.owner.name == "Utility"
    assert models.Load.objects.filter(grid=grid).count() == len(lv_net.load)
    assert models.StaticGenerator.objects.filter(grid=grid).count() == len(lv_net.sgen)
    assert models.Line.objects.filter(grid=grid).count() == len(lv_net.line)


def test_same_upload_twice_changes_nothing(operator, lv_turtle):
    first = upload(operator, lv_turtle).json()
    second = upload(operator, lv_turtle)
    assert second.status_code == 200
    body = second.json()
    assert body["changed"] is False
    assert body["version"] == first["version"]


def test_edited_upload_updates_in_place_and_removes_missing_assets(operator, lv_turtle):
    grid_id = upload(operator, lv_turtle).json()["id"]
    graph = parse(lv_turtle)
    line = sorted(graph.subjects(CIM["Conductor.length"], None))[0]
    graph.set((line, CIM["Conductor.length"], Literal(0.5, datatype=XSD.double)))
    load = sorted(graph.subjects(CIM["EnergyConsumer.p"], None))[0]
    for terminal in list(graph.subjects(CIM["Terminal.ConductingEquipment"], load)):
        graph.remove((terminal, None, None))
    graph.remove((load, None, None))
    line_id_before = models.Line.objects.get(iri=str(line)).pk

    response = upload(operator, serialize(graph, "turtle"))

    assert response.status_code == 200, response.content
    assert response.json()["counts"]["Line"] == {"created": 0, "updated": 1, "deleted": 0, "retired": 0}
    assert response.json()["counts"]["Load"]["deleted"] == 1
    assert models.Line.objects.get(iri=str(line)).length_km == 0.5
    assert models.Line.objects.get(iri=str(line)).pk == line_id_before
    assert not models.Load.objects.filter(iri=str(load)).exists()
    assert models.Grid.objects.get(pk=grid_id).version == 2


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [("text/turtle", "turtle"), ("application/ld+json", "json-ld"), ("application/rdf+xml", "xml"), ("application/n-triples", "nt")],
)
def test_export_import_export_is_isomorphic_in_every_format(operator, utility, lv_turtle, accept, fmt):
    grid_id = upload(operator, lv_turtle).json()["id"]
    exported = operator.get(f"/api/v1/grids/{grid_id}/rdf", HTTP_ACCEPT=accept)
    assert exported.status_code == 200
    assert exported["Content-Type"].startswith(accept)
    first = parse(exported.content, fmt)

    models.Grid.objects.all().delete()
    reimported = upload(operator, exported.content, content_type=accept)
    assert reimported.status_code == 201, reimported.content
    second = operator.get(f"/api/v1/grids/{reimported.json()['id']}/rdf", HTTP_ACCEPT=accept)

    assert isomorphic(first, parse(second.content, fmt))
    uploaded = parse(lv_turtle)  # what came in, plus the owner the hub recorded
    uploaded.add((URIRef(reimported.json()["iri"]), GT.owner, URIRef(utility.iri)))
    assert isomorphic(first, uploaded)


def test_export_refuses_formats_it_cannot_serve(operator, lv_turtle):
    grid_id = upload(operator, lv_turtle).json()["id"]
    response = operator.get(f"/api/v1/grids/{grid_id}/rdf", HTTP_ACCEPT="application/pdf")
    assert response.status_code == 406
    assert response.json()["reason"] == "not_acceptable"


def test_shape_violation_answers_422_with_the_results_and_writes_nothing(operator, lv_turtle):
    graph = parse(lv_turtle)
    line = sorted(graph.subjects(CIM["Conductor.length"], None))[0]
    graph.set((line, CIM["Conductor.length"], Literal(-1.0, datatype=XSD.double)))

    response = upload(operator, serialize(graph, "turtle"))

    assert response.status_code == 422
    body = response.json()
    assert body["reason"] == "shacl_violation"
    violation = next(v for v in body["violations"] if v["focus_node"] == str(line))
    assert violation["path"] == str(CIM["Conductor.length"])
    assert float(violation["value"]) == -1.0
    assert violation["severity"] == "Violation"
    assert "length" in violation["message"]
    assert models.Grid.objects.count() == 0
    assert models.Bus.objects.count() == 0


def test_shape_violation_report_as_turtle_on_request(operator, lv_turtle):
    graph = parse(lv_turtle)
    transformer_end = sorted(graph.subjects(CIM["PowerTransformerEnd.ratedU"], None))[0]
    graph.set((transformer_end, CIM["PowerTransformerEnd.ratedU"], Literal(110.0, datatype=XSD.double)))

    response = upload(operator, serialize(graph, "turtle"), report="turtle")

    assert response.status_code == 422
    assert response["Content-Type"].startswith("text/turtle")
    report = parse(response.content)
    sh = "http://www.w3.org/ns/shacl#"
    assert (None, URIRef(sh + "conforms"), Literal(False)) in report
    messages = [str(m) for m in report.objects(None, URIRef(sh + "resultMessage"))]
    assert any("differs by more than 10 %" in m for m in messages)


def test_anonymous_requests_get_401(anonymous, lv_turtle):
    assert upload(anonymous, lv_turtle).status_code == 401
    assert anonymous.get("/api/v1/grids/").status_code == 401
    assert anonymous.get("/api/v1/lines/").status_code == 401


def test_nobody_reads_or_writes_another_participants_grid(operator, other_operator, lv_turtle):
    grid_id = upload(operator, lv_turtle).json()["id"]

    assert other_operator.get(f"/api/v1/grids/{grid_id}/").status_code == 404
    assert other_operator.get(f"/api/v1/grids/{grid_id}/rdf").status_code == 404
    assert other_operator.get("/api/v1/lines/").json()["count"] == 0
    assert other_operator.post(f"/api/v1/grids/{grid_id}/changes", data=lv_turtle, content_type=TURTLE).status_code == 404
    overwrite = upload(other_operator, lv_turtle)
    assert overwrite.status_code == 409
    assert overwrite.json()["reason"] == "iri_conflict"
    assert models.Grid.objects.get(pk=grid_id).version == 1


def test_asset_endpoints_filter_and_paginate(operator, lv_turtle, lv_net):
    grid_id = upload(operator, lv_turtle).json()["id"]
    page = operator.get("/api/v1/buses/", {"grid": grid_id, "limit": 5}).json()
    assert page["count"] >= len(lv_net.bus)
    assert len(page["results"]) == 5
    assert page["next"]
    name = lv_net.load.name.iloc[0]
    found = operator.get("/api/v1/loads/", {"grid": grid_id, "name": name}).json()
    assert [r["name"] for r in found["results"]] == [name]


def test_openapi_schema_and_uis_are_served(operator):
    schema = operator.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/v1/models/" in schema.json()["paths"]
    for ui in ("/api/schema/swagger-ui/", "/api/schema/redoc/"):
        page = operator.get(ui)
        assert page.status_code == 200
        assert b"drf_spectacular_sidecar" in page.content  # assets served by us: works offline
        assert b"cdn." not in page.content


def test_vocabulary_and_shapes_are_served_at_stable_urls(anonymous):
    vocabulary = anonymous.get("/ontology/")
    assert vocabulary.status_code == 200
    graph = parse(vocabulary.content)
    assert (URIRef("https://w3id.org/gridtwin/ontology"), None, None) in graph
    assert anonymous.get("/ontology/1.0.0/").content == vocabulary.content
    assert anonymous.get("/ontology/9.9.9/").status_code == 404
    assert b"sh:NodeShape" in anonymous.get("/ontology/shapes/").content
