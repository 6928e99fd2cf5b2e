"""Bounded work per RDF upload (issue 10, findings 1–3): nesting depth refused before any native parser runs (pyoxigraph
segfaults the process on deep JSON-LD), triples and parse time bounded while parsing, and a 422 that stays small."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyoxigraph as ox
import pytest
from django.test import override_settings

from ontology import limits
from ontology.errors import NestingTooDeep, RdfSyntaxError
from ontology.serialization import serialize
from twin import models

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent
XML_HEAD = '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:e="urn:e#">'


def deep(kind: str, depth: int) -> tuple[bytes, str]:
    """A body nested `depth` levels deep, and its content type."""
    bodies = {
        "jsonld-objects": ('{"@id": "urn:a", "urn:p": ' * depth + '"x"' + "}" * depth, "application/ld+json"),
        "jsonld-lists": ('{"@id": "urn:a", "urn:p": ' + '{"@list": [' * depth + '"x"' + "]}" * depth + "}", "application/ld+json"),
        "turtle-blank-nodes": ("<urn:a> <urn:p> " + "[ <urn:p> " * depth + '"x"' + " ]" * depth + " .", "text/turtle"),
        "turtle-collections": ("<urn:a> <urn:p> " + "( " * depth + '"x"' + " )" * depth + " .", "text/turtle"),
        "turtle-triple-terms": ("<urn:a> <urn:p> " + "<< <urn:a> <urn:p> " * depth + '"x"' + " >>" * depth + " .", "text/turtle"),
        "ntriples-triple-terms": ("<urn:a> <urn:p> " + "<<( <urn:a> <urn:p> " * depth + '"x"' + " )>>" * depth + " .",
                                  "application/n-triples"),
        "rdfxml-elements": (XML_HEAD + "<e:T><e:p>" * depth + "<e:T/>" + "</e:p></e:T>" * depth + "</rdf:RDF>", "application/rdf+xml"),
    }
    body, content_type = bodies[kind]
    return body.encode(), content_type


def upload(client, body: bytes, content_type: str, **params):
    """(response, CPU seconds the request took). The test client serves the request in this thread, parsers included, so
    the thread's CPU time is the upload's cost whatever else the machine is running (wall time failed a bound at load 8)."""
    query = "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""
    started = time.thread_time()
    response = client.post(f"/api/v1/models/{query}", data=body, content_type=content_type)
    return response, time.thread_time() - started


def assert_refused(response, status: int, reason: str):
    assert response.status_code == status, response.content[:500]
    assert response.json()["reason"] == reason
    assert models.Grid.objects.count() == 0
    assert models.Bus.objects.count() == 0


def test_deep_jsonld_no_longer_kills_the_process():
    """Finding 1, in a child process: before the depth bound, parsing these bodies segfaulted (exit -11)."""
    script = textwrap.dedent("""
        import django, os, sys
        os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
        django.setup()
        from ontology.errors import OntologyError
        from ontology.parsing import parse_rdf
        from tests.test_rdf_bounds import deep
        for kind, depth in (("jsonld-objects", 5_000), ("jsonld-lists", 5_000), ("ntriples-triple-terms", 50_000)):
            body, content_type = deep(kind, depth)
            try:
                parse_rdf(body, content_type, max_bytes=10**8, max_literal_chars=65536)
                print(kind, "parsed")
            except OntologyError as exc:
                print(kind, exc.reason)
            sys.stdout.flush()
    """)
    child = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)  # noqa: S603
    assert child.returncode == 0, (child.returncode, child.stdout, child.stderr[-2000:])
    assert child.stdout.split() == ["jsonld-objects", "too_deep", "jsonld-lists", "too_deep", "ntriples-triple-terms", "too_deep"]


@pytest.mark.parametrize("kind", ["jsonld-objects", "jsonld-lists", "turtle-blank-nodes", "turtle-collections", "turtle-triple-terms",
                                  "ntriples-triple-terms", "rdfxml-elements"])
def test_deep_nesting_is_refused_before_parsing_in_every_format(operator, kind):
    body, content_type = deep(kind, 40_000)  # RDF/XML this deep took 37 s to parse (quadratic); JSON-LD segfaulted
    response, seconds = upload(operator, body, content_type)
    assert_refused(response, 400, "too_deep")
    assert "64" in response.json()["message"]
    assert seconds < 5


@pytest.mark.parametrize("kind", ["jsonld-objects", "turtle-blank-nodes", "rdfxml-elements"])
def test_the_depth_bound_is_a_setting(operator, kind):
    body, content_type = deep(kind, 30)
    with override_settings(GRIDTWIN_MAX_RDF_DEPTH=10):
        assert_refused(upload(operator, body, content_type)[0], 400, "too_deep")
    # within the default bound the same body parses and is judged by the shapes (unknown nodes)
    assert upload(operator, body, content_type)[0].status_code == 422


@pytest.mark.parametrize("fmt", ["turtle", "json-ld", "xml", "nt"])
def test_a_real_grid_nests_far_below_the_bound_in_every_format(lv_turtle, fmt):
    from rdflib import Graph

    graph = Graph().parse(data=lv_turtle, format="turtle")
    body = serialize(graph, fmt)
    formats = {"turtle": ox.RdfFormat.TURTLE, "json-ld": ox.RdfFormat.JSON_LD, "xml": ox.RdfFormat.RDF_XML, "nt": ox.RdfFormat.N_TRIPLES}
    rdf_format = formats[fmt]
    assert limits.nesting_depth(body if isinstance(body, bytes) else body.encode(), rdf_format) <= 8


@pytest.mark.parametrize(("body", "rdf_format", "depth"), [
    # brackets inside strings, IRIs and comments are no nesting ...
    (b'<urn:a> <urn:p> "[[[(((" , \'[[[\' , """ [[[\n((( """ , \'\'\' [[[ \'\'\' , <urn:x[(> . # [[[[[[\n', ox.RdfFormat.TURTLE, 0),
    (b'{"@id": "urn:a", "urn:p": "[[[{{{ \\" [[[ "}', ox.RdfFormat.JSON_LD, 1),
    (XML_HEAD.encode() + b'<!-- <a><b><c> --><e:T e:x="a/>b"><e:p>a/>b</e:p><e:q/><![CDATA[<a><b>]]></e:T></rdf:RDF>',
     ox.RdfFormat.RDF_XML, 3),
    # ... but an escaped quote does not end a string, an escape outside strings does not start a comment, a closing
    # bracket never lowers the floor, and an unterminated string hides nothing from the count of what precedes it
    (b'<urn:a> <urn:p> "a\\" [[[ " [ [ [ "x" ] ] ] .', ox.RdfFormat.TURTLE, 3),
    (b"<urn:a> <urn:p> ex:a\\# [ [ [ <urn:q> 1 ] ] ] .", ox.RdfFormat.TURTLE, 3),
    (b'<urn:a> <urn:p> """a"\\"""" [ [ "x" ] ] .', ox.RdfFormat.TURTLE, 2),
    (b"] ] ] ) ) ) [ [ [ ( ( (", ox.RdfFormat.TURTLE, 6),
    (b'{"a": [[[[ "unterminated', ox.RdfFormat.JSON_LD, 5),
])
def test_the_depth_scanner_counts_at_least_as_deep_as_the_parser(body, rdf_format, depth):
    assert limits.nesting_depth(body, rdf_format) == depth


def test_rdfxml_depth_is_measured_by_expat_which_refuses_what_is_not_xml():
    with pytest.raises(RdfSyntaxError) as refused:
        limits.nesting_depth(XML_HEAD.encode() + b'\n<e:T e:x="unterminated><e:p><e:T><e:p>', ox.RdfFormat.RDF_XML)
    assert refused.value.line == 2
    with pytest.raises(RdfSyntaxError):  # Turtle sent as RDF/XML: IRIs are no elements
        limits.nesting_depth(b"<urn:a> <urn:p> <urn:o> .\n" * 1000, ox.RdfFormat.RDF_XML)


@override_settings(GRIDTWIN_MAX_UPLOAD_TRIPLES=1000)
def test_more_triples_than_the_bound_is_413(operator):
    body = b"".join(b'<urn:a%d> <urn:p> "x" .\n' % i for i in range(1001))
    assert_refused(upload(operator, body, "application/n-triples")[0], 413, "too_many_triples")
    # the bound itself is allowed (then judged by the shapes)
    assert upload(operator, body[: body.rindex(b"<urn:a1000>")], "application/n-triples")[0].status_code == 422


def test_a_49_mb_junk_upload_is_refused_within_seconds(operator):
    """Finding 2: 1.7M distinct junk triples took 15.9 s and answered a 427 MB 422; now parsing stops at the bound."""
    body = b"".join(b'<urn:a%d> <urn:p> "x" .\n' % i for i in range(1_700_000))
    response, seconds = upload(operator, body, "application/n-triples")
    assert_refused(response, 413, "too_many_triples")
    assert f"more than {limits.DEFAULT_MAX_TRIPLES} triples" in response.json()["message"]
    assert seconds < 10


@override_settings(GRIDTWIN_RDF_PARSE_SECONDS=0)
def test_parsing_longer_than_the_time_budget_is_413(operator):
    body = b"".join(b'<urn:a%d> <urn:p> "x" .\n' % i for i in range(10))
    assert_refused(upload(operator, body, "application/n-triples")[0], 413, "parse_time_exceeded")


def list_of(items: int) -> bytes:
    return ("<urn:a> <urn:p> (" + ' "x"' * items + " ) .").encode()


def test_a_huge_list_answers_a_small_422_that_counts_every_result(operator):
    """Finding 3: a Turtle list of 200,000 items answered a 54.8 MB 422; now the first 100 results are listed."""
    response, seconds = upload(operator, list_of(200_000), "text/turtle")
    assert_refused(response, 422, "shacl_violation")
    body = response.json()
    assert len(response.content) < 100_000
    assert body["conforms"] is False and body["truncated"] is True
    assert body["result_count"] == body["violation_count"] == 200_001  # the list's 200,000 nodes and <urn:a>
    assert len(body["violations"]) == limits.DEFAULT_REPORTED_VIOLATIONS
    assert body["by_constraint"] == [{"source_shape": "gridtwin:KnownClasses", "path": "http://www.w3.org/1999/02/22-rdf-syntax-ns#type",
                                      "severity": "Violation", "count": 200_001}]
    assert "?report=turtle" in body["message"]
    assert seconds < 20


@override_settings(GRIDTWIN_MAX_REPORT_RESULTS=50)
def test_the_turtle_report_is_cut_too_and_says_so(operator):
    response, _ = upload(operator, list_of(2_000), "text/turtle", report="turtle")
    assert response.status_code == 422
    text = response.content.decode()
    assert text.startswith("# 2001 results (2001 violations); the first 50 are listed\n")
    report = ox.Store()
    report.load(response.content, format=ox.RdfFormat.TURTLE)
    results = list(report.quads_for_pattern(None, ox.NamedNode("http://www.w3.org/ns/shacl#result"), None))
    assert len(results) == 50


def test_a_small_422_lists_everything_and_is_not_truncated(operator):
    response, _ = upload(operator, list_of(3), "text/turtle")
    body = response.json()
    assert body["truncated"] is False
    assert body["result_count"] == len(body["violations"]) == 4
    assert "?report=turtle" not in body["message"]


@pytest.mark.parametrize("kind", ["jsonld-objects", "turtle-blank-nodes", "rdfxml-elements"])
def test_the_agreement_parser_is_bounded_by_the_same_mechanism(kind):
    from sharing.odrl import parse_agreement

    body, content_type = deep(kind, 5_000)
    with pytest.raises(NestingTooDeep):
        parse_agreement(body, content_type)
