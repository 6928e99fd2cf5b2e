"""SPARQL over the permitted graph (/api/v1/shared/sparql): the graph is exactly what the REST views show, redacted the same
way; hostile queries are refused after parsing; limits hold for real (a spinning query is killed); results are negotiated;
every query is audited with its text and row count; the graph is cached and rebuilt when the agreement or the grid changes.

The world: tests.hub (every persona) plus the SimBench grid 1-LV-rural1--0-sw imported for the provider; the consumer's
agreement is amended to cover only that grid's LV feeder (LV1.101), with a snapshot run (one violation inside the scope,
one outside) and a hosting-capacity run. The agreement drops owners and coordinates, and the loads name the provider as
their owner, so a leak of either would show.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

import orjson
import pytest
from django.db import transaction
from django.test import override_settings
from rdflib import Graph

from ontology.parsing import parse_rdf
from sharing import services, sparql
from sharing.api.rows import CIM, GT, REFERENCE_KEYS, TYPE_CLASSES
from sharing.api.urls import SHARED_ASSET_ROUTES
from sharing.models import Agreement, AuditEntry
from tests.hub import PURPOSE, START, WRONG_PURPOSE, HubWorld, hub_world_create
from twin import models as twin
from twin import services as twin_services

pytestmark = pytest.mark.django_db

ENDPOINT = "/api/v1/shared/sparql"
LV_FEEDER = "LV1.101"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
XSD = "http://www.w3.org/2001/XMLSchema#"
ADJACENT = "gt:from_bus|gt:to_bus"
SPO = "SELECT ?s ?p ?o WHERE { ?s ?p ?o }"


@dataclass
class SparqlWorld:
    hub: HubWorld
    grid: twin.Grid
    lv_feeder: twin.Feeder
    agreement: Agreement
    outside_bus: twin.Bus

    @property
    def consumer(self):
        return self.hub.clients["consumer"]


def amend(world: SparqlWorld, **changes) -> Agreement:
    """A new version of the consumer's agreement with `changes`, offered and activated (the old one is superseded)."""
    provider = world.hub.provider
    amended = services.agreement_amend(agreement=world.agreement, actor=provider, **changes)
    for step in ("offer", "activate"):
        amended = services.agreement_transition(agreement=amended, step=step, actor=provider)
    world.agreement = amended
    return amended


@pytest.fixture
def world(lv_turtle) -> SparqlWorld:
    sparql.GRAPHS.clear()
    sparql.CHECKED.clear()
    hub = hub_world_create(feeders=2, meters_per_feeder=2, steps=2)
    document = parse_rdf(lv_turtle, "text/turtle", max_bytes=10**8, max_literal_chars=65536)
    grid = twin_services.grid_import_graph(graph=document, participant=hub.provider, source="simbench").grid
    lv_feeder = twin.Feeder.objects.get(grid=grid, name=LV_FEEDER)
    twin.Load.objects.filter(grid=grid).update(owner=hub.provider)  # the grid's owner may be named: a dropped field to leak
    outside_bus = twin.Bus.objects.filter(grid=grid).exclude(feeder=lv_feeder).get()
    inside_bus = twin.Bus.objects.filter(grid=grid, feeder=lv_feeder).order_by("id").last()
    snapshot = twin.LoadFlowRun.objects.create(grid=grid, kind="snapshot", status="succeeded", at=START)
    for bus, value in ((inside_bus, 0.89), (outside_bus, 0.88)):
        twin.Violation.objects.create(run=snapshot, grid=grid, element="bus", asset_iri=bus.iri, quantity="vm_pu", start=START,
                                      end=START + timedelta(minutes=15), steps=1, value=value, limit=0.9, severity="major")
    hosting = twin.LoadFlowRun.objects.create(grid=grid, kind="hosting_capacity", status="succeeded", at=START)
    buses = twin.Bus.objects.filter(grid=grid).order_by("id")
    twin.HostingCapacityResult.objects.bulk_create(
        [twin.HostingCapacityResult(run=hosting, bus=bus, pv_kw=10.0 + k, load_kw=20.0 + k, pv_limited_by="vm_pu",
                                    load_limited_by="loading_percent") for k, bus in enumerate(buses)])
    world = SparqlWorld(hub=hub, grid=grid, lv_feeder=lv_feeder, agreement=hub.agreement, outside_bus=outside_bus)
    amend(world, grid_iris=[grid.iri], feeder_iris=[lv_feeder.iri])
    return world


def ask(client, query: str, *, method: str = "GET", accept: str | None = None, purpose: str | None = PURPOSE, **params):
    """One SPARQL request: GET ?query=, or POST with the query as an application/sparql-query body."""
    query_params = {**({"purpose": purpose} if purpose else {}), **params}
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    if method == "GET":
        return client.get(ENDPOINT, {**query_params, "query": query}, **headers)
    return client.post(f"{ENDPOINT}?{urlencode(query_params)}", query.encode(), content_type="application/sparql-query", **headers)


def form(client, query: str, *, accept: str | None = None, **params):
    """POST the query as a form (application/x-www-form-urlencoded) with query=."""
    query_params = {"purpose": PURPOSE, **params}
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    return client.post(f"{ENDPOINT}?{urlencode(query_params)}", urlencode({"query": query}),
                       content_type="application/x-www-form-urlencoded", **headers)


def bindings(response) -> list[dict]:
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("application/sparql-results+json")
    return orjson.loads(response.content)["results"]["bindings"]


def python_value(term: dict):
    """A SPARQL JSON term as ("uri", IRI), ("bnode", label) or the literal's Python value."""
    if term["type"] != "literal":
        return (term["type"], term["value"])
    datatype, value = term.get("datatype", XSD + "string"), term["value"]
    if datatype == XSD + "integer":
        return int(value)
    if datatype == XSD + "double":
        return float(value)
    if datatype == XSD + "boolean":
        return value == "true"
    if datatype == XSD + "dateTime":
        return datetime.fromisoformat(value)
    return value


def graph_nodes(client) -> tuple[dict[str, set], Counter]:
    """The whole permitted graph: IRI → its (predicate, value) pairs, and the blank nodes' pairs as a multiset."""
    named, blank = defaultdict(set), defaultdict(set)
    for row in bindings(ask(client, SPO)):
        pair = (row["p"]["value"], python_value(row["o"]))
        (named if row["s"]["type"] == "uri" else blank)[row["s"]["value"]].add(pair)
    return dict(named), Counter(frozenset(pairs) for pairs in blank.values())


def rest_rows(client) -> list[dict]:
    """Every row the consumer's REST views send under the agreement."""
    rows = []
    for route in SHARED_ASSET_ROUTES:
        page = client.get(f"/api/v1/shared/{route}", {"purpose": PURPOSE, "limit": 1000})
        assert page.status_code == 200 and page.json()["count"] == len(page.json()["results"]), route
        rows += page.json()["results"]
    for path, kind in (("topology", None), ("violations", "violation"), ("hosting-capacity", "hosting_capacity")):
        page = client.get(f"/api/v1/shared/{path}", {"purpose": PURPOSE, "limit": 1000})
        assert page.status_code == 200, path
        rows += [{**row, "type": kind} if kind else row for row in page.json()["results"]]
    return rows


CLASSES = {**TYPE_CLASSES, "branch": GT + "branch", "violation": GT + "Violation", "hosting_capacity": GT + "HostingCapacity"}


def rest_nodes(client) -> tuple[dict[str, set], Counter]:
    """The REST rows in the graph's terms (sharing.sparql): what the permitted graph must hold, no more, no less."""
    named, blank = defaultdict(set), Counter()
    for row in rest_rows(client):
        pairs = set()
        for key, value in row.items():
            if key == "iri" or value is None:
                continue
            if key == "type" or (key == "kind" and row.get("type") == "branch"):  # a topology branch's kind is its class
                pairs.add((RDF_TYPE, ("uri", CLASSES[value])))
            else:
                predicate = CIM + "IdentifiedObject.name" if key == "name" else GT + key
                if key in REFERENCE_KEYS:
                    value = ("uri", value)
                elif key in ("start", "end"):
                    value = datetime.fromisoformat(value)
                pairs.add((predicate, value))
        if "iri" in row:
            named[row["iri"]] |= pairs
        else:
            blank[frozenset(pairs)] += 1
    return dict(named), blank


# --- the permitted graph -------------------------------------------------------------------------------------------
def test_the_graph_holds_exactly_the_rows_of_the_rest_views(world):
    named, blank = graph_nodes(world.consumer)
    rest_named, rest_blank = rest_nodes(world.consumer)
    assert named.keys() == rest_named.keys()
    for iri, pairs in named.items():
        assert pairs == rest_named[iri], iri
    assert blank == rest_blank
    types = Counter(v[1] for pairs in named.values() for p, v in pairs if p == RDF_TYPE)
    assert types[TYPE_CLASSES["bus"]] == 42 and types[TYPE_CLASSES["load"]] == 13 and types[GT + "branch"] > 13  # the LV feeder
    assert sum(blank.values()) == 1 + 42  # the violation inside the scope; hosting capacity of the 42 buses in scope


def topology(client) -> tuple[set[str], dict[str, tuple[str, str]]]:
    rows = client.get("/api/v1/shared/topology", {"purpose": PURPOSE}).json()["results"]
    return ({r["iri"] for r in rows if r["type"] == "bus"},
            {r["iri"]: (r["from_bus"], r["to_bus"]) for r in rows if r["type"] == "branch"})


def test_a_two_hop_topology_query_returns_exactly_the_buses_and_branches_in_scope(world):
    buses, branches = topology(world.consumer)
    start = twin.Transformer.objects.get(grid=world.grid).lv_bus.iri
    near = {b for b, ends in branches.items() if start in ends}
    first = {bus for b in near for bus in branches[b]}
    second = {b for b, ends in branches.items() if set(ends) & first}
    expected_buses = first | {bus for b in second for bus in branches[b]}
    query = f"""SELECT DISTINCT ?bus ?branch WHERE {{
        {{ ?branch a gt:branch ; {ADJACENT} <{start}>, ?bus }}
        UNION {{ ?near a gt:branch ; {ADJACENT} <{start}>, ?mid . ?branch a gt:branch ; {ADJACENT} ?mid, ?bus }}
    }}"""
    rows = bindings(ask(world.consumer, query))
    assert {r["bus"]["value"] for r in rows} == expected_buses and len(expected_buses) > 3
    assert {r["branch"]["value"] for r in rows} == near | second
    assert expected_buses <= buses and world.outside_bus.iri not in expected_buses


def test_nothing_outside_the_agreement_appears_in_a_dump(world):
    response = ask(world.consumer, SPO, accept="text/csv")
    dump = response.content.decode()
    assert response.status_code == 200 and dump.count("\n") > 500
    hidden = [world.hub.grid.iri, *(m.iri for m in world.hub.meters),
              *twin.Feeder.objects.filter(grid=world.grid).exclude(pk=world.lv_feeder.pk).values_list("iri", flat=True),
              *twin.ExternalGrid.objects.filter(grid=world.grid).values_list("iri", flat=True)]  # its feeder is not LV1.101
    assert [iri for iri in hidden if iri in dump] == []
    # The bus outside the feeder has no node of its own; in-scope equipment ending at it names it, as its REST row does.
    assert bindings(ask(world.consumer, f"SELECT * WHERE {{ <{world.outside_bus.iri}> ?p ?o }}")) == []
    referring = {(r["s"]["value"], r["p"]["value"].removeprefix(GT))
                 for r in bindings(ask(world.consumer, f"SELECT ?s ?p WHERE {{ ?s ?p <{world.outside_bus.iri}> }}"))}
    assert referring == {(row["iri"], key) for row in rest_rows(world.consumer) for key, value in row.items()
                         if value == world.outside_bus.iri and key != "iri"}
    assert all(p not in ("from_bus", "to_bus") or s not in topology(world.consumer)[1] for s, p in referring)  # no branch to it
    assert "0.88" not in dump and "8.8E-1" not in dump  # the violation of the bus outside the scope
    graph = Graph().parse(data=ask(world.consumer, "CONSTRUCT WHERE { ?s ?p ?o }").content, format="turtle")
    assert len(graph) == dump.count("\n") - 1  # every triple of the SELECT dump, none more
    hidden_grid = bindings(ask(world.consumer, f"SELECT * WHERE {{ ?s ?p <{world.hub.grid.iri}> }}"))
    assert hidden_grid == []


def test_dropped_fields_are_absent_and_appear_once_the_agreement_keeps_them(world):
    for predicate in ("gt:owner", "gt:lon_degree", "gt:lat_degree"):
        assert orjson.loads(ask(world.consumer, f"ASK {{ ?s {predicate} ?o }}").content) == {"head": {}, "boolean": False}
    amend(world, dropped_fields=[])  # the control: the same data, nothing dropped
    for predicate in ("gt:owner", "gt:lon_degree", "gt:lat_degree"):
        assert orjson.loads(ask(world.consumer, f"ASK {{ ?s {predicate} ?o }}").content)["boolean"] is True, predicate
    owners = bindings(ask(world.consumer, "SELECT DISTINCT ?owner WHERE { ?load a cim:EnergyConsumer ; gt:owner ?owner }"))
    assert owners == [{"owner": {"type": "uri", "value": world.hub.provider.iri}}]


# --- who may ask -----------------------------------------------------------------------------------------------------
def test_who_may_query_answers_as_the_rest_views_do(world):
    clients = world.hub.clients
    for persona, status in (("outsider", 404), ("expired", 404), ("revoked", 404), ("suspended", 404), ("provider_operator", 404),
                            ("gateway", 403), ("anonymous", 401)):
        sparql_answer = ask(clients[persona], "ASK { ?s ?p ?o }")
        rest_answer = clients[persona].get("/api/v1/shared/buses", {"purpose": PURPOSE})
        assert sparql_answer.status_code == rest_answer.status_code == status, persona
        assert world.grid.iri.encode() not in sparql_answer.content
    wrong = ask(world.consumer, "ASK { ?s ?p ?o }", purpose=WRONG_PURPOSE)
    assert (wrong.status_code, wrong.json()["reason"]) == (403, "purpose_not_granted")
    missing = ask(world.consumer, "ASK { ?s ?p ?o }", purpose=None)
    assert (missing.status_code, missing.json()["reason"]) == (400, "purpose_required")
    assert ask(world.consumer, "ASK { ?s ?p ?o }", agreement=str(world.agreement.pk)).status_code == 200
    assert ask(world.consumer, "ASK { ?s ?p ?o }", agreement=str(world.hub.agreement.pk)).status_code == 404  # superseded


# --- the guard -------------------------------------------------------------------------------------------------------
REFUSED = [
    ("SELECT * WHERE { SERVICE <http://127.0.0.1:9/sparql> { ?s ?p ?o } }", "sparql_forbidden", "SERVICE"),
    ("select * where { service <http://example.com/sparql> { ?s ?p ?o } }", "sparql_forbidden", "SERVICE"),
    ("SELECT * WHERE { SERV\\u0049CE <http://example.com/sparql> { ?s ?p ?o } }", "sparql_forbidden", "SERVICE"),
    ("SELECT * WHERE { \\u0053\\u0045\\u0052\\u0056\\u0049\\u0043\\u0045 <http://example.com/> { ?s ?p ?o } }", "sparql_forbidden",
     "SERVICE"),
    ("SELECT * WHERE { SERV\\U00000049CE <http://example.com/sparql> { ?s ?p ?o } }", "sparql_forbidden", "SERVICE"),
    ("SELECT * WHERE { SERV\\u005Cu0049CE <http://example.com/sparql> { ?s ?p ?o } }", "sparql_syntax", None),  # an escape's escape
    ("SELECT * WHERE { ?s ?p ?o FILTER EXISTS { SERVICE <http://example.com/> { ?s ?p ?o } } }", "sparql_forbidden", "SERVICE"),
    ("SELECT * WHERE { OPTIONAL { SERVICE SILENT <http://example.com/> { ?s ?p ?o } } }", "sparql_forbidden", "SERVICE"),
    ("SELECT * FROM <file:///etc/passwd> WHERE { ?s ?p ?o }", "sparql_forbidden", "FROM"),
    ("SELECT * FROM NAMED <file:///etc/passwd> WHERE { ?s ?p ?o }", "sparql_forbidden", "FROM"),
    ("DESCRIBE ?s FROM <http://example.com/g> WHERE { ?s ?p ?o }", "sparql_forbidden", "FROM"),
    ("SELECT * WHERE { GRAPH ?g { ?s ?p ?o } }", "sparql_forbidden", "GRAPH"),
    ("INSERT DATA { <urn:a> <urn:b> <urn:c> }", "sparql_forbidden", "update"),
    ("PREFIX ex: <urn:ex:>\nLOAD <file:///etc/passwd>", "sparql_forbidden", "update"),
    ("DELETE WHERE { ?s ?p ?o }", "sparql_forbidden", "update"),
    ("# a comment\nDROP ALL", "sparql_forbidden", "update"),
    ("\\u0049NSERT DATA { <urn:a> <urn:b> <urn:c> }", "sparql_forbidden", "update"),
    ("ASK {} ; INSERT DATA { <urn:a> <urn:b> <urn:c> }", "sparql_syntax", None),
    ("SELECT ?s WHERE { ?s ?p }", "sparql_syntax", None),
    ("SELECT ?s WHERE { ?s undeclared:p ?o }", "sparql_syntax", None),
    ("SELECT * WHERE { ?s ?p \"\\uD800\" }", "sparql_syntax", None),
]


@pytest.mark.parametrize(("query", "reason", "feature"), REFUSED)
def test_forbidden_and_malformed_queries_are_refused_after_parsing(world, query, reason, feature):
    for method in ("GET", "POST"):
        answer = ask(world.consumer, query, method=method)
        assert answer.status_code == 400, (method, answer.content)
        body = answer.json()
        assert body["reason"] == reason and body.get("feature") == feature, body
    assert sparql.GRAPHS.builds == 0  # refused before any graph was built


def test_the_protocols_dataset_parameters_are_refused(world):
    for name in ("default-graph-uri", "named-graph-uri"):
        answer = ask(world.consumer, SPO, **{name: "file:///etc/passwd"})
        assert (answer.status_code, answer.json()["reason"], answer.json()["feature"]) == (400, "sparql_forbidden", "FROM")


def test_codepoint_escapes_are_expanded_once_and_exactly_what_is_checked_is_evaluated():
    assert sparql.codepoints_unescaped("SERV\\u0049CE \\U0001F600") == "SERVICE \U0001F600"
    with pytest.raises(sparql.SparqlRefused):
        sparql.codepoints_unescaped("SERV\\u005Cu0049CE")
    assert sparql.query_form(sparql.codepoints_unescaped('ASK { ?s ?p "caf\\u00E9" }')) == "ASK"


def test_requests_in_every_protocol_shape(world):
    query = "SELECT ?bus WHERE { ?bus a cim:TopologicalNode } ORDER BY ?bus LIMIT 3"
    answers = [ask(world.consumer, query), ask(world.consumer, query, method="POST"), form(world.consumer, query)]
    assert [len(bindings(a)) for a in answers] == [3, 3, 3] and len({a.content for a in answers}) == 1
    wrong_body = world.consumer.post(f"{ENDPOINT}?purpose={PURPOSE}", orjson.dumps({"query": query}), content_type="application/json")
    assert (wrong_body.status_code, wrong_body.json()["reason"]) == (415, "unsupported_media_type")
    assert "application/sparql-query" in wrong_body.json()["message"]
    for empty in (ask(world.consumer, ""), ask(world.consumer, "  ", method="POST")):
        assert (empty.status_code, empty.json()["reason"]) == (400, "query_required")
    with override_settings(GRIDTWIN_SPARQL_MAX_QUERY_CHARS=100):
        long = ask(world.consumer, query + " " * 100, method="POST")
        assert (long.status_code, long.json()["reason"]) == (400, "query_too_long")
        huge = ask(world.consumer, query + " " * 1000, method="POST")
        assert (huge.status_code, huge.json()["reason"]) == (413, "query_too_long")


# --- limits ----------------------------------------------------------------------------------------------------------
SPINNING = [
    "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }",  # cross product of the graph with itself, thrice
    "SELECT * WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i FILTER(STR(?c) = CONCAT(STR(?f), STR(?i), 'x')) }",
    f"SELECT * WHERE {{ ?a ({ADJACENT}|^gt:from_bus|^gt:to_bus)* ?b . ?c (!rdf:type|^!rdf:type)* ?d }}",  # unbounded paths
    "SELECT (COUNT(*) AS ?n) WHERE { ?a (!rdf:type|^!rdf:type)* ?b . ?c (!rdf:type|^!rdf:type)* ?d }",
]


@pytest.mark.parametrize("query", SPINNING)
def test_spinning_queries_are_stopped_within_the_time_limit(world, query):
    assert ask(world.consumer, "ASK { ?s ?p ?o }").status_code == 200  # the graph is built: what is timed is the query
    with override_settings(GRIDTWIN_SPARQL_TIMEOUT_S=1.0, GRIDTWIN_SPARQL_MAX_ROWS=1000):
        started = time.monotonic()
        answer = ask(world.consumer, query)
        elapsed = time.monotonic() - started
    assert answer.status_code == 400 and answer.json()["reason"] in ("query_timeout", "too_many_rows"), answer.content
    assert elapsed < 1.0 + 1.0
    assert ask(world.consumer, "ASK { ?s ?p ?o }").status_code == 200  # the endpoint is fine afterwards


def test_a_million_row_query_hits_the_row_cap_at_once(world):
    assert ask(world.consumer, "ASK { ?s ?p ?o }").status_code == 200
    with override_settings(GRIDTWIN_SPARQL_MAX_ROWS=500):
        started = time.monotonic()
        answer = ask(world.consumer, "SELECT * WHERE { ?a ?b ?c . ?d ?e ?f }")  # ~1,000² = a million rows
        elapsed = time.monotonic() - started
        assert (answer.status_code, answer.json()["reason"], answer.json()["max_rows"]) == (400, "too_many_rows", 500)
        assert "LIMIT" in answer.json()["message"]
        assert elapsed < 1.0
        assert len(bindings(ask(world.consumer, "SELECT * WHERE { ?a ?b ?c . ?d ?e ?f } LIMIT 500"))) == 500
        constructed = ask(world.consumer, "CONSTRUCT { ?a ?b ?f } WHERE { ?a ?b ?c . ?d ?e ?f }")
        assert (constructed.status_code, constructed.json()["reason"]) == (400, "too_many_rows")


# --- results ---------------------------------------------------------------------------------------------------------
def test_results_are_negotiated(world):
    select = "SELECT ?bus ?name WHERE { ?bus a cim:TopologicalNode ; cim:IdentifiedObject.name ?name } ORDER BY ?bus LIMIT 2"
    default = bindings(ask(world.consumer, select))
    assert len(default) == 2 and bindings(ask(world.consumer, select, accept="text/html,*/*;q=0.8")) == default
    csv = ask(world.consumer, select, accept="text/csv")
    assert csv["Content-Type"].startswith("text/csv") and csv.content.decode().splitlines()[0] == "bus,name"
    assert csv.content.decode().splitlines()[1].startswith(default[0]["bus"]["value"])
    tsv = ask(world.consumer, select, accept="text/tab-separated-values")
    assert tsv["Content-Type"].startswith("text/tab-separated-values") and tsv.content.decode().splitlines()[1].startswith(
        f"<{default[0]['bus']['value']}>\t")
    xml = ask(world.consumer, select, accept="application/sparql-results+xml;q=0.9, text/plain;q=0.1")
    assert xml["Content-Type"] == "application/sparql-results+xml" and b"<sparql" in xml.content
    boolean = ask(world.consumer, "ASK { ?s a cim:TopologicalNode }")
    assert boolean["Content-Type"] == "application/sparql-results+json" and orjson.loads(boolean.content)["boolean"] is True
    construct = "CONSTRUCT { ?bus a cim:TopologicalNode } WHERE { ?bus a cim:TopologicalNode }"
    turtle = ask(world.consumer, construct)
    assert turtle["Content-Type"].startswith("text/turtle") and len(Graph().parse(data=turtle.content, format="turtle")) == 42
    ntriples = ask(world.consumer, construct, accept="application/n-triples")
    assert ntriples["Content-Type"] == "application/n-triples" and len(ntriples.content.decode().strip().splitlines()) == 42
    described = Graph().parse(data=ask(world.consumer, f"DESCRIBE <{world.outside_bus.iri}>").content, format="turtle")
    assert len(described) == 0  # outside the scope: nothing to describe
    for query, accept in ((select, "application/pdf"), ("ASK {}", "text/csv"), (construct, "application/sparql-results+json")):
        refused = ask(world.consumer, query, accept=accept)
        assert (refused.status_code, refused.json()["reason"]) == (406, "not_acceptable"), accept
    assert ask(world.consumer, select)["Link"] == f'<{world.agreement.uid}>; rel="license"'


# --- audit -----------------------------------------------------------------------------------------------------------
def last_audit() -> AuditEntry:
    return AuditEntry.objects.filter(resource="shared.sparql").order_by("-id").first()


def test_every_query_is_audited_with_its_text_and_row_count(world):
    query = "SELECT ?bus WHERE { ?bus a cim:TopologicalNode } LIMIT 7"
    assert len(bindings(ask(world.consumer, query, method="POST"))) == 7
    entry = last_audit()
    assert (entry.allowed, entry.records, entry.status_code, entry.agreement_uid) == (True, 7, 200, world.agreement.uid)
    assert entry.query["query"] == [query] and entry.query["purpose"] == [PURPOSE] and entry.participant_iri == world.hub.consumer.iri
    assert form(world.consumer, "CONSTRUCT WHERE { ?s a cim:ACLineSegment }").status_code == 200
    assert (last_audit().records, last_audit().query["query"]) == (13, ["CONSTRUCT WHERE { ?s a cim:ACLineSegment }"])
    long = "SELECT * WHERE { ?s ?p ?o } # " + "x" * 2000
    ask(world.consumer, long + " LIMIT 1", method="POST")
    assert last_audit().query["query"][0] == long[:500]  # a bounded excerpt

    service = "SELECT * WHERE { SERV\\u0049CE <http://example.com/> { ?s ?p ?o } }"
    assert ask(world.consumer, service, method="POST").status_code == 400
    entry = last_audit()
    assert (entry.allowed, entry.status_code, entry.records, entry.query["query"]) == (False, 400, 0, [service])
    assert ask(world.consumer, query, method="POST", purpose=None).status_code == 400
    entry = last_audit()
    assert (entry.allowed, entry.rule, entry.status_code, entry.query["query"]) == (False, "deny:no_purpose", 400, [query])
    assert ask(world.hub.clients["outsider"], query).status_code == 404
    entry = last_audit()
    assert (entry.allowed, entry.participant_iri, entry.query["query"]) == (False, world.hub.participants["outsider"].iri, [query])


# --- the cache -------------------------------------------------------------------------------------------------------
def test_the_graph_is_built_once_and_rebuilt_when_the_agreement_or_the_grid_changes(world):
    count = "SELECT (COUNT(?bus) AS ?n) WHERE { ?bus a cim:TopologicalNode }"

    def buses() -> int:
        return int(bindings(ask(world.consumer, count))[0]["n"]["value"])

    assert (buses(), sparql.GRAPHS.builds) == (42, 1)  # cold
    assert (buses(), buses(), sparql.GRAPHS.builds, sparql.GRAPHS.hits) == (42, 42, 1, 2)  # warm

    bus = twin.Bus.objects.filter(grid=world.grid, feeder=world.lv_feeder).order_by("id").first()
    with transaction.atomic():  # an edit in place (as an admin save): no new grid version
        twin.Bus.objects.filter(pk=bus.pk).update(name="renamed in place")
    named = bindings(ask(world.consumer, f"SELECT ?name WHERE {{ <{bus.iri}> cim:IdentifiedObject.name ?name }}"))
    assert named == [{"name": {"type": "literal", "value": "renamed in place"}}] and sparql.GRAPHS.builds == 2
    with transaction.atomic():
        twin.Bus.objects.filter(pk=bus.pk).update(feeder=None)  # moved out of the agreement's feeder
    assert (buses(), sparql.GRAPHS.builds) == (41, 3)

    amend(world, asset_types=["line"])  # a new version: only lines (and the topology of no buses)
    assert (buses(), sparql.GRAPHS.builds) == (0, 4)
    lines = bindings(ask(world.consumer, "SELECT (COUNT(?l) AS ?n) WHERE { ?l a cim:ACLineSegment ; gt:length_km ?km }"))
    assert lines[0]["n"]["value"] == "13" and sparql.GRAPHS.builds == 4

    services.agreement_transition(agreement=world.agreement, step="revoke", actor=world.hub.provider)
    assert ask(world.consumer, count).status_code == 404  # revoked: the cached graph is never reached


def test_the_cache_is_bounded(world, settings):
    settings.GRIDTWIN_SPARQL_CACHE_GRAPHS = 1
    assert ask(world.consumer, "ASK { ?s ?p ?o }").status_code == 200
    first = sparql.GRAPHS.builds
    other = amend(world, dropped_fields=["name"])
    assert ask(world.consumer, "ASK { ?s ?p ?o }", agreement=str(other.pk)).status_code == 200
    assert len(sparql.GRAPHS) == 1 and sparql.GRAPHS.builds == first + 1
    settings.GRIDTWIN_SPARQL_CACHE_TRIPLES = 10  # smaller than the graph: built for each query, never kept
    sparql.GRAPHS.clear()
    for _ in range(2):
        assert ask(world.consumer, "ASK { ?s ?p ?o }").status_code == 200
    assert (len(sparql.GRAPHS), sparql.GRAPHS.builds) == (0, 2)


def test_a_query_that_exhausts_its_memory_is_refused_and_the_endpoint_lives_on(world):
    doubled = " ".join(f"BIND(CONCAT(?v{k}, ?v{k}) AS ?v{k + 1})" for k in range(31))  # 16 characters × 2³¹
    query = f'SELECT (STRLEN(?v31) AS ?n) WHERE {{ BIND("0123456789abcdef" AS ?v0) {doubled} }}'
    assert ask(world.consumer, "ASK { ?s ?p ?o }").status_code == 200
    with override_settings(GRIDTWIN_SPARQL_MEMORY_MB=64):
        answer = ask(world.consumer, query)
    assert (answer.status_code, answer.json()["reason"]) == (400, "query_resources")
    assert ask(world.consumer, "ASK { ?s ?p ?o }").status_code == 200


def test_the_evaluator_reaches_no_network_even_past_the_guard():
    """Defence in depth: pyoxigraph runs SERVICE over HTTP; the evaluator's child may open no descriptor, so not even a
    query that skipped the guard connects anywhere."""
    import socket

    import pyoxigraph as ox

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    store = ox.Store()

    def service() -> tuple[dict, bytes]:
        rows = list(store.query(f"SELECT * WHERE {{ SERVICE <http://127.0.0.1:{port}/sparql> {{ ?s ?p ?o }} }}"))
        return {"rows": len(rows)}, b""

    with pytest.raises(RuntimeError, match=r"Too many open files|lookup|OSError"):
        sparql.run_limited(service, timeout_s=3, limits=sparql.limits())
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()
