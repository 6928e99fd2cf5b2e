"""Agreements as ODRL 2.2 policies: the codec round trip, the profile's shapes and the safe import.

Personas: the `utility` provides, the `aggregator` consumes; the `outsider` IRI is no participant of this hub.
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rdflib import Graph, Literal, URIRef
from rdflib.compare import isomorphic
from rdflib.namespace import RDFS, XSD

from ontology.errors import ForbiddenConstruct
from ontology.namespaces import GT
from ontology.odrl_shapes import ODRL
from sharing.models import ASSET_TYPES, DROPPABLE_FIELDS, PROHIBITIONS, Agreement, DataCategory, GroupBy, Purpose, Resolution
from sharing.odrl import (
    OdrlError,
    agreement_check,
    agreement_from_graph,
    agreement_to_graph,
    graph_to_agreement_fields,
    parse_agreement,
    serialize_agreement,
)
from twin.models import Participant

MEDIA_TYPES = {"turtle": "text/turtle", "json-ld": "application/ld+json"}
OUTSIDER = "https://gridtwin.example/id/participant/outsider"
VOCABULARY = Path(__file__).parent.parent / "ontology" / "vocabulary"
START = datetime(2025, 1, 1, tzinfo=UTC)
FIELDS = ("uid", "version", "status", "previous", *Agreement.TERMS)


@pytest.fixture
def aggregator(db) -> Participant:
    return Participant.objects.create(iri="https://gridtwin.example/id/participant/aggregator", name="Aggregator")


def draft(provider: Participant, consumer: Participant, **fields) -> Agreement:
    """An unsaved agreement with the least a valid one needs, and `fields` on top."""
    terms = {"uid": "https://gridtwin.example/id/agreement/planning", "purpose": Purpose.NETWORK_PLANNING, "valid_from": START,
             "valid_until": START + timedelta(days=365), "categories": [DataCategory.TOPOLOGY]}
    return Agreement(provider=provider, consumer=consumer, **{**terms, **fields})


@pytest.fixture
def full_agreement(utility, aggregator) -> Agreement:
    """A stored amendment that sets every term: lists, data window, obligations, prohibitions and duties."""
    first = draft(utility, aggregator, uid="https://gridtwin.example/id/agreement/telemetry-v1")
    first.save()
    amendment = draft(utility, aggregator, uid="https://gridtwin.example/id/agreement/telemetry-v2", version=2, previous=first,
                      status=Agreement.Status.ACTIVE, purpose=Purpose.FLEXIBILITY_PROCUREMENT,
                      categories=[DataCategory.TOPOLOGY, DataCategory.TELEMETRY, DataCategory.HOSTING_CAPACITY],
                      grid_iris=["https://gridtwin.example/id/grid/lv1"], feeder_iris=["https://gridtwin.example/id/feeder/f1",
                                                                                        "https://gridtwin.example/id/feeder/f2"],
                      asset_types=["load", "meter"], asset_iris=["https://gridtwin.example/id/asset/m1"],
                      dropped_fields=["owner", "coordinates"], data_start=START - timedelta(days=30), data_end=START,
                      resolution=Resolution.MIN15, group_by=GroupBy.GRID, min_group_size=10, prohibitions=["sell", "reidentify"],
                      attribution="Data: Utility, CC BY 4.0", delete_after_days=90)
    amendment.save()
    amendment.refresh_from_db()
    return amendment


def field_values(agreement: Agreement) -> dict:
    return {name: getattr(agreement, name) for name in FIELDS}


def reimport(agreement: Agreement, format_name: str) -> dict:
    return graph_to_agreement_fields(parse_agreement(serialize_agreement(agreement, format_name), MEDIA_TYPES[format_name]))


def refusal(graph: Graph) -> OdrlError:
    with pytest.raises(OdrlError) as caught:
        graph_to_agreement_fields(graph)
    return caught.value


def violations_of(error: OdrlError) -> set[tuple]:
    assert error.reason == "odrl_violation"
    return {(v.focus_node, v.path, v.value) for v in error.violations}


# --- round trip ----------------------------------------------------------------------------------


@pytest.mark.parametrize("format_name", ["turtle", "json-ld"])
def test_a_stored_agreement_comes_back_with_every_field(full_agreement, format_name):
    imported = agreement_from_graph(parse_agreement(serialize_agreement(full_agreement, format_name), MEDIA_TYPES[format_name]))

    assert field_values(imported) == field_values(full_agreement)
    assert isomorphic(agreement_to_graph(imported), agreement_to_graph(full_agreement))


@pytest.mark.parametrize("format_name", ["turtle", "json-ld"])
def test_an_agreement_with_empty_lists_and_no_optional_terms_comes_back(utility, aggregator, format_name):
    minimal = draft(utility, aggregator)

    fields = reimport(minimal, format_name)

    assert fields == field_values(minimal)
    assert fields["grid_iris"] == fields["dropped_fields"] == fields["prohibitions"] == []
    assert fields["data_start"] is fields["data_end"] is fields["delete_after_days"] is None
    assert fields["attribution"] == ""


def test_json_ld_is_compact_with_an_inline_context_and_nests_the_policy(full_agreement):
    document = json.loads(serialize_agreement(full_agreement, "json-ld"))

    assert isinstance(document["@context"], dict)
    assert "@graph" not in document
    assert document["@type"] == "Agreement"
    assert document["assigner"] == full_agreement.provider.iri
    first = document["permission"][0]
    assert first["action"] == "read"
    assert {c["leftOperand"] for c in first["constraint"]} >= {"purpose", "dateTime", "gt:aggregationCount"}
    assert first["target"]["partOf"]["grid"] == "https://gridtwin.example/id/grid/lv1"


iri_steps = st.text(alphabet=string.ascii_lowercase + string.digits + "-._~é", min_size=1, max_size=12)
iris = st.builds("https://gridtwin.example/id/{}/{}".format, st.sampled_from(["grid", "feeder", "asset"]), iri_steps)
moments = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1),
                       timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]))
spans = st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=3650))


@st.composite
def agreement_terms(draw) -> dict:
    """Any combination of terms the model holds validly (lists may repeat items; optional terms may be unset)."""
    valid_from, data_start = draw(moments), draw(st.none() | moments)
    data_end = draw(st.none() | spans.map(lambda span: (data_start or START) + span))
    return {
        "uid": draw(st.builds("https://gridtwin.example/id/agreement/{}".format, iri_steps) | st.uuids().map("urn:uuid:{}".format)),
        "version": draw(st.integers(1, 2**31 - 1)),
        "status": draw(st.sampled_from(Agreement.Status.values)),
        "purpose": draw(st.sampled_from(Purpose.values)),
        "valid_from": valid_from,
        "valid_until": valid_from + draw(spans),
        "grid_iris": draw(st.lists(iris, max_size=3)),
        "feeder_iris": draw(st.lists(iris, max_size=3)),
        "asset_types": draw(st.lists(st.sampled_from(ASSET_TYPES), max_size=4)),
        "asset_iris": draw(st.lists(iris, max_size=3)),
        "categories": draw(st.lists(st.sampled_from(DataCategory.values), min_size=1, max_size=4)),
        "dropped_fields": draw(st.lists(st.sampled_from(list(DROPPABLE_FIELDS)), max_size=3)),
        "data_start": data_start,
        "data_end": data_end,
        "resolution": draw(st.sampled_from(Resolution.values)),
        "group_by": draw(st.sampled_from(GroupBy.values)),
        "min_group_size": draw(st.integers(1, 2**31 - 1)),
        "prohibitions": draw(st.lists(st.sampled_from(PROHIBITIONS), max_size=3)),
        "attribution": draw(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)),
        "delete_after_days": draw(st.none() | st.integers(0, 999_999_999)),
    }


def canonical(terms: dict) -> dict:
    """The terms as an import gives them back: lists without repeats, in the order of their choices, IRIs sorted."""
    orders = {"categories": DataCategory.values, "asset_types": ASSET_TYPES, "dropped_fields": list(DROPPABLE_FIELDS),
              "prohibitions": PROHIBITIONS}
    lists = {name: [v for v in order if v in terms[name]] for name, order in orders.items()}
    return {**terms, **lists, **{name: sorted(set(terms[name])) for name in ("grid_iris", "feeder_iris", "asset_iris")}}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(terms=agreement_terms(), amends=st.booleans(), format_name=st.sampled_from(["turtle", "json-ld"]))
def test_any_agreement_survives_export_import_export(full_agreement, aggregator, terms, amends, format_name):
    previous = full_agreement if amends else None
    agreement = Agreement(provider=full_agreement.provider, consumer=aggregator, previous=previous, **terms)
    exported = agreement_to_graph(agreement)

    fields = reimport(agreement, format_name)

    assert fields == {**canonical(terms), "provider": full_agreement.provider, "consumer": aggregator, "previous": previous}
    assert isomorphic(agreement_to_graph(Agreement(**fields)), exported)


# --- the shapes, on writes -----------------------------------------------------------------------


def test_agreement_check_passes_a_valid_agreement(full_agreement):
    agreement_check(full_agreement)


def test_agreement_check_refuses_k_zero_naming_the_constraint(utility, aggregator):
    agreement = draft(utility, aggregator, min_group_size=0)

    with pytest.raises(OdrlError) as caught:
        agreement_check(agreement)

    (violation,) = caught.value.violations
    assert caught.value.reason == "odrl_violation"
    assert (violation.focus_node, violation.path) == (f"{agreement.uid}/constraint/min_group_size", str(ODRL.rightOperand))
    assert violation.value == "0"
    assert "gt:aggregationCount" in violation.message
    assert caught.value.as_dict()["violations"][0]["focus_node"] == caught.value.node == violation.focus_node


def test_agreement_check_refuses_an_unknown_purpose(utility, aggregator):
    agreement = draft(utility, aggregator, purpose="astrology")

    with pytest.raises(OdrlError) as caught:
        agreement_check(agreement)

    assert [(v.focus_node, v.value) for v in caught.value.violations] == [(f"{agreement.uid}/constraint/purpose", "astrology")]


def test_agreement_check_refuses_the_consumer_as_its_own_provider(utility):
    with pytest.raises(OdrlError) as caught:
        agreement_check(draft(utility, utility))

    assert [v.path for v in caught.value.violations] == [str(ODRL.assignee)]


def test_a_scope_iri_no_rdf_parser_reads_back_is_refused(utility, aggregator):
    with pytest.raises(OdrlError) as caught:
        agreement_check(draft(utility, aggregator, grid_iris=["grid one"]))

    assert caught.value.reason == "invalid_iri"
    assert "grid_iris" in caught.value.message


# --- the shapes and the codec, on imports --------------------------------------------------------


@pytest.fixture
def policy(full_agreement) -> Graph:
    return agreement_to_graph(full_agreement)


def test_a_policy_without_assignee_is_refused_naming_the_agreement_and_path(policy, full_agreement):
    policy.remove((None, ODRL.assignee, None))

    assert violations_of(refusal(policy)) == {(full_agreement.uid, str(ODRL.assignee), None)}


def test_an_unknown_purpose_iri_is_refused_naming_the_constraint(policy, full_agreement):
    constraint = URIRef(f"{full_agreement.uid}/constraint/purpose")
    policy.set((constraint, ODRL.rightOperand, URIRef("https://w3id.org/dpv#Marketing")))

    assert violations_of(refusal(policy)) == {(str(constraint), str(ODRL.rightOperand), "https://w3id.org/dpv#Marketing")}


def test_k_zero_is_refused_naming_the_constraint(policy, full_agreement):
    constraint = URIRef(f"{full_agreement.uid}/constraint/min_group_size")
    policy.set((constraint, ODRL.rightOperand, Literal(0, datatype=XSD.integer)))

    assert violations_of(refusal(policy)) == {(str(constraint), str(ODRL.rightOperand), "0")}


@pytest.mark.parametrize(("node", "predicate", "wrong"), [
    ("constraint/valid_from", ODRL.rightOperand, Literal("2025-01-01")),
    ("constraint/valid_until", ODRL.rightOperand, Literal("2026-01-01T00:00:00", datatype=XSD.dateTime)),
    ("constraint/valid_until", ODRL.rightOperand, Literal("2026-13-01T00:00:00Z", datatype=XSD.dateTime)),
    ("constraint/min_group_size", ODRL.rightOperand, Literal("5")),
    ("constraint/resolution", ODRL.rightOperand, Literal("PT5M", datatype=XSD.duration)),
    ("constraint/delete_after_days", ODRL.rightOperand, Literal("P3M", datatype=XSD.duration)),
])
def test_a_right_operand_of_the_wrong_datatype_or_value_is_refused_naming_the_constraint(policy, full_agreement, node, predicate, wrong):
    constraint = URIRef(f"{full_agreement.uid}/{node}")
    policy.set((constraint, predicate, wrong))

    assert (str(constraint), str(predicate), str(wrong)) in violations_of(refusal(policy))


def test_a_version_that_is_not_an_integer_is_refused_naming_the_path(policy, full_agreement):
    policy.set((URIRef(full_agreement.uid), URIRef("http://www.w3.org/ns/dcat#version"), Literal("two")))

    assert violations_of(refusal(policy)) == {(full_agreement.uid, "http://www.w3.org/ns/dcat#version", "two")}


def test_a_term_outside_the_profile_is_refused_rather_than_dropped(policy, full_agreement):
    permission = URIRef(f"{full_agreement.uid}/permission/telemetry")
    policy.add((permission, ODRL.obligation, URIRef(f"{full_agreement.uid}/duty/attribution")))

    assert (str(permission), str(ODRL.obligation), f"{full_agreement.uid}/duty/attribution") in violations_of(refusal(policy))


def test_an_unknown_participant_is_refused(policy, full_agreement):
    policy.set((URIRef(full_agreement.uid), ODRL.assignee, URIRef(OUTSIDER)))

    error = refusal(policy)

    assert (error.reason, error.node) == ("unknown_participant", OUTSIDER)


def test_an_unknown_previous_version_is_refused(policy, full_agreement):
    unknown = "https://gridtwin.example/id/agreement/never-stored"
    policy.set((URIRef(full_agreement.uid), URIRef("http://purl.org/dc/terms/replaces"), URIRef(unknown)))

    error = refusal(policy)

    assert (error.reason, error.node) == ("unknown_agreement", unknown)


def test_a_graph_of_two_agreements_is_refused(policy, utility, aggregator):
    policy += agreement_to_graph(draft(utility, aggregator, uid="https://gridtwin.example/id/agreement/another"))

    assert refusal(policy).reason == "several_agreements"


def test_permissions_with_different_terms_are_refused(policy, full_agreement):
    permission = URIRef(f"{full_agreement.uid}/permission/topology")
    policy.remove((permission, ODRL.duty, URIRef(f"{full_agreement.uid}/duty/attribution")))

    error = refusal(policy)

    assert (error.reason, error.node) == ("permissions_differ", str(permission))


def test_triples_that_are_not_part_of_the_agreement_are_refused(policy, full_agreement):
    policy.add((URIRef(full_agreement.consumer.iri), RDFS.label, Literal("Aggregator")))

    error = refusal(policy)

    assert (error.reason, error.node) == ("not_part_of_agreement", full_agreement.consumer.iri)


def test_an_odrl_policy_written_with_blank_nodes_is_read(utility, aggregator):
    turtle = f"""
        @prefix odrl: <http://www.w3.org/ns/odrl/2/> . @prefix gt: <https://w3id.org/gridtwin/ontology#> .
        @prefix dcat: <http://www.w3.org/ns/dcat#> . @prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
        <urn:uuid:3f7c> a odrl:Agreement ; odrl:uid <urn:uuid:3f7c> ; odrl:profile <https://w3id.org/gridtwin/odrl-profile> ;
            odrl:assigner <{utility.iri}> ; odrl:assignee <{aggregator.iri}> ; gt:status "offered" ; dcat:version 1 ;
            odrl:permission [ odrl:action odrl:read ;
                odrl:target [ a odrl:AssetCollection ; gt:dataCategory "violations" ; odrl:partOf _:scope ] ;
                odrl:constraint [ odrl:leftOperand odrl:purpose ; odrl:operator odrl:eq ; odrl:rightOperand gt:ConnectionStudy ] ,
                    [ odrl:leftOperand odrl:dateTime ; odrl:operator odrl:gteq ; odrl:rightOperand "2025-03-01T00:00:00Z"^^xsd:dateTime ] ,
                    [ odrl:leftOperand odrl:dateTime ; odrl:operator odrl:lt ;
                      odrl:rightOperand "2025-09-01T00:00:00+02:00"^^xsd:dateTime ] ,
                    [ odrl:leftOperand gt:temporalResolution ; odrl:operator odrl:gteq ; odrl:rightOperand "PT24H"^^xsd:duration ] ,
                    [ odrl:leftOperand gt:aggregationCount ; odrl:operator odrl:gteq ; odrl:rightOperand 3 ] ,
                    [ odrl:leftOperand gt:aggregationGroup ; odrl:operator odrl:eq ; odrl:rightOperand "feeder" ] ] ;
            odrl:prohibition [ odrl:action odrl:distribute ; odrl:target _:scope ] .
        _:scope a odrl:AssetCollection ; gt:feeder <https://gridtwin.example/id/feeder/f9> .
    """

    fields = graph_to_agreement_fields(parse_agreement(turtle.encode(), "text/turtle"))

    assert fields["valid_until"] == datetime(2025, 8, 31, 22, tzinfo=UTC)
    assert (fields["categories"], fields["feeder_iris"], fields["prohibitions"]) == (["violations"], ["https://gridtwin.example/id/feeder/f9"],
                                                                                     ["distribute"])
    assert (fields["resolution"], fields["min_group_size"], fields["status"]) == (Resolution.DAY, 3, "offered")


def test_json_ld_with_a_remote_context_is_refused(full_agreement):
    document = json.loads(serialize_agreement(full_agreement, "json-ld"))
    document["@context"] = "https://www.w3.org/ns/odrl.jsonld"

    with pytest.raises(ForbiddenConstruct):
        parse_agreement(json.dumps(document).encode(), "application/ld+json")


def test_rdf_xml_with_a_doctype_is_refused():
    body = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/>'

    with pytest.raises(ForbiddenConstruct):
        parse_agreement(body, "application/rdf+xml")


# --- the profile vocabulary ----------------------------------------------------------------------


def test_every_project_term_of_a_policy_is_documented(full_agreement):
    vocabulary = Graph().parse(VOCABULARY / "gridtwin-odrl-profile.ttl").parse(VOCABULARY / "gridtwin-1.0.0.ttl")
    policy = agreement_to_graph(full_agreement)
    used = {term for triple in policy for term in triple if isinstance(term, URIRef) and term.startswith(str(GT))}

    documented = {term for term in used | {GT.NetworkPlanning, GT.ConnectionStudy}
                  if (term, RDFS.label, None) in vocabulary and (term, RDFS.comment, None) in vocabulary}

    assert used >= {GT.grid, GT.feeder, GT.aggregationCount, GT.reidentify, GT.FlexibilityProcurement}
    assert documented == used | {GT.NetworkPlanning, GT.ConnectionStudy}
