"""Hostile and broken uploads: each gets a 4xx with a machine-readable reason, writes nothing, never a 5xx."""

import socket

import pytest
from django.test import override_settings

from twin import models

pytestmark = pytest.mark.django_db


def upload(client, body, content_type="text/turtle"):
    return client.post("/api/v1/models/", data=body, content_type=content_type)


def assert_refused(response, status: int, reason: str):
    assert response.status_code == status, response.content[:500]
    assert response.json()["reason"] == reason
    assert models.Grid.objects.count() == 0
    assert models.Bus.objects.count() == 0


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything tries to open an outbound connection."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("outbound connection attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield attempts
    assert attempts == []


def test_malformed_turtle_names_the_line(operator):
    response = upload(operator, b"@prefix cim: <http://iec.ch/TC57/CIM100#> .\n<urn:a> a cim:Feeder ;\n  cim:IdentifiedObject.name \"x .\n")
    assert_refused(response, 400, "syntax_error")
    assert response.json()["line"] == 3


@pytest.mark.parametrize("content_type", ["application/pdf", "text/plain", "application/json"])
def test_unknown_content_type_is_415(operator, lv_turtle, content_type):
    assert_refused(upload(operator, lv_turtle, content_type), 415, "unsupported_media_type")


def test_mismatched_content_type_is_a_syntax_error(operator, lv_turtle):
    assert_refused(upload(operator, lv_turtle, "application/rdf+xml"), 400, "syntax_error")


def test_empty_body(operator):
    assert_refused(upload(operator, b""), 400, "empty_body")
    assert_refused(upload(operator, b"   \n"), 400, "empty_body")


def test_rdfxml_with_doctype_is_refused_before_parsing(operator, no_network):
    billion_laughs = b"""<?xml version="1.0"?>
<!DOCTYPE rdf:RDF [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="urn:x"><rdf:value>&b;</rdf:value></rdf:Description></rdf:RDF>"""
    response = upload(operator, billion_laughs, "application/rdf+xml")
    assert_refused(response, 400, "forbidden_construct")
    assert response.json()["line"] == 2


def test_jsonld_with_remote_context_is_refused_without_fetching(operator, no_network):
    body = b'{"@context": "http://127.0.0.1:9/context.jsonld", "@id": "urn:x", "name": "x"}'
    assert_refused(upload(operator, body, "application/ld+json"), 400, "forbidden_construct")


def test_jsonld_with_remote_context_inside_a_list_is_refused(operator, no_network):
    body = b'{"@context": [{"@vocab": "urn:v#"}, "https://example.org/ctx.jsonld"], "@id": "urn:x", "name": "x"}'
    assert_refused(upload(operator, body, "application/ld+json"), 400, "forbidden_construct")


@override_settings(GRIDTWIN_MAX_UPLOAD_BYTES=1024 * 1024)
def test_body_over_the_size_limit_is_413(operator):
    body = b"<urn:a> <urn:b> <urn:c> .\n" * 50_000
    assert_refused(upload(operator, body, "application/n-triples"), 413, "too_large")


def test_blank_nodes_nested_10000_deep_are_refused_before_parsing(operator):
    depth = 10_000
    body = ("<urn:s> <urn:p> " + "[ <urn:p> " * depth + '"leaf"' + " ]" * depth + " .").encode()
    # refused before any parser sees it (deep nesting crashes native parsers: issue 10, tests/test_rdf_bounds.py)
    assert_refused(upload(operator, body), 400, "too_deep")


def test_64_mb_literal_is_refused(operator):
    body = b'<urn:s> <urn:p> "' + b"x" * (64 * 1024 * 1024) + b'" .'
    assert_refused(upload(operator, body, "application/n-triples"), 413, "too_large")


@override_settings(GRIDTWIN_MAX_UPLOAD_BYTES=100 * 1024 * 1024)
def test_64_mb_literal_is_refused_even_under_a_larger_body_limit(operator):
    body = b'<urn:s> <urn:p> "' + b"x" * (64 * 1024 * 1024) + b'" .'
    assert_refused(upload(operator, body, "application/n-triples"), 400, "forbidden_construct")


@override_settings(GRIDTWIN_MAX_LITERAL_CHARS=1000)
def test_literal_over_the_literal_limit_names_its_node(operator):
    body = b'<urn:s> <urn:p> "' + b"x" * 5000 + b'" .'
    response = upload(operator, body, "application/n-triples")
    assert_refused(response, 400, "forbidden_construct")
    assert response.json()["node"] == "urn:s"


def test_non_utf8_body(operator):
    assert_refused(upload(operator, "<urn:a> <urn:b> \"é\" .".encode("latin-1"), "application/n-triples"), 400, "syntax_error")


def test_named_graphs_are_refused(operator):
    body = b'{"@id": "urn:g", "@graph": [{"@id": "urn:x", "urn:p": "y"}]}'
    assert upload(operator, body, "application/ld+json").status_code in (400, 422)
    assert models.Grid.objects.count() == 0


def test_unknown_property_is_refused_not_dropped(operator, lv_turtle):
    body = lv_turtle + b'\n<https://gridtwin.example/id/simbench/1-LV-rural1--0-sw> <urn:made-up#colour> "red" .\n'
    response = upload(operator, body)
    assert_refused(response, 422, "shacl_violation")
    assert "not part of the gridtwin form" in response.json()["violations"][0]["message"]


def test_reference_to_a_missing_bus_is_a_violation(operator, lv_turtle):
    text = lv_turtle.decode()
    bus = text.split("cim:Terminal.TopologicalNode <", 1)[1].split(">", 1)[0]
    body = text.replace(f"cim:Terminal.TopologicalNode <{bus}>", "cim:Terminal.TopologicalNode <urn:nowhere>", 1).encode()
    response = upload(operator, body)
    assert_refused(response, 422, "shacl_violation")
    assert any(v["value"] == "urn:nowhere" for v in response.json()["violations"])


@override_settings(GRIDTWIN_MAX_UPLOAD_BYTES=1024)
def test_body_declared_over_the_limit_is_refused_by_its_header(operator):
    response = operator.post("/api/v1/models/", data=b"<urn:a> <urn:b> <urn:c> .", content_type="application/n-triples",
                             CONTENT_LENGTH=str(200 * 1024 * 1024))
    assert_refused(response, 413, "too_large")
