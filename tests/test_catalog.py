"""The DCAT 3 catalog (GET /api/v1/shared/catalog): what each persona discovers, its filters and pages, its policies, its
representations, and the DCAT-AP shapes (ontology/shapes/dcat-ap-shapes.ttl) that judge it.

The world is tests.hub's: the consumer's agreement in force covers feeder 0 (all six categories). On top of it the
provider publishes offers: one to everyone (feeder 1: telemetry and topology), one to researchers only (the grid's
hosting capacity), one to aggregators only that overlaps the agreement (feeder 0 telemetry, raw), and an unpublished one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import orjson
import pyshacl
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rdflib import Graph
from rdflib.compare import isomorphic
from rdflib.namespace import RDF, SH

from sharing import catalog as catalog_module
from sharing import services
from sharing.datasets import agreement_datasets, offer_datasets
from sharing.models import Agreement, AuditEntry
from tests.hub import agreement_in_state, agreement_terms, hub_world_create, oauth_client, offer_create, participant_create
from twin import models as twin

pytestmark = pytest.mark.django_db

URL = "/api/v1/shared/catalog"
SHAPES = Path(__file__).resolve().parent.parent / "ontology" / "shapes" / "dcat-ap-shapes.ttl"
ODRL = "http://www.w3.org/ns/odrl/2/"
GT = "https://w3id.org/gridtwin/ontology#"
NOT_IN_CATALOG = {"reason": "not_found", "message": "no such dataset"}


@pytest.fixture
def world():
    """tests.hub's world with the offers of the module docstring and the ids of the grid's feeder datasets."""
    w = hub_world_create(feeders=3, meters_per_feeder=2, steps=2)
    f0, f1, f2 = (f.iri for f in w.feeders)
    offers = SimpleNamespace(
        open=offer_create(w.provider, w.grid, feeder_iris=[f1], categories=["telemetry", "topology"],
                          purposes=["research", "network_planning"], resolution="15min", min_group_size=3, dropped_fields=["name"],
                          max_days=90, prohibitions=["sell"], attribution="Stadtwerke Nord", description="Feeder 1 for studies"),
        researchers=offer_create(w.provider, w.grid, categories=["hosting_capacity"], audience=["researcher"]),
        overlap=offer_create(w.provider, w.grid, feeder_iris=[f0], categories=["telemetry"], resolution="raw", audience=["aggregator"],
                             purposes=["flexibility_procurement"]),
        unpublished=offer_create(w.provider, w.grid, feeder_iris=[f2], categories=["violations"], published=False),
    )
    w.offers = offers
    w.ids = {(feeder, category): f"g{w.grid.pk}-f{w.feeders[feeder].pk}-{category}"
             for feeder in range(3) for category in ("asset_metadata", "topology", "telemetry", "loadflow_results", "violations",
                                                     "hosting_capacity")}
    return w


def get_catalog(client, status: int = 200, **params) -> dict:
    response = client.get(URL, params)
    assert response.status_code == status, response.content[:500]
    return response.json()


def ids_of(document: dict) -> list[str]:
    return [d["dct:identifier"] for d in document["dcat:dataset"]]


def dataset_of(document: dict, dataset_id: str) -> dict:
    return next(d for d in document["dcat:dataset"] if d["dct:identifier"] == dataset_id)


def policies_of(dataset: dict) -> dict[str, dict]:
    return {p["@id"]: p for p in dataset["odrl:hasPolicy"]}


def constraints_of(policy: dict) -> dict[str, tuple[str, list]]:
    """leftOperand (local name) → (operator local name, right operands as plain values)."""
    found = {}
    for c in policy["odrl:permission"][0]["odrl:constraint"]:
        operands = [o["@id"] if "@id" in o else o["@value"] if isinstance(o, dict) else o for o in c["odrl:rightOperand"]]
        local = c["odrl:leftOperand"]["@id"].rsplit("/", 1)[-1].rsplit("#", 1)[-1]
        found[local] = (c["odrl:operator"]["@id"].rsplit("/", 1)[-1], operands)
    return found


def graph_of(document: dict) -> Graph:
    return Graph().parse(data=orjson.dumps(document), format="json-ld")


def dcat_violations(document: dict) -> list[tuple[str, str, str]]:
    """(focus node, path, message) of every sh:Violation of the document against the DCAT-AP shapes."""
    _, report, _ = pyshacl.validate(graph_of(document), shacl_graph=Graph().parse(SHAPES, format="turtle"), inference="none",
                                    advanced=False, do_owl_imports=False)
    return sorted((str(report.value(r, SH.focusNode)), str(report.value(r, SH.resultPath)), str(report.value(r, SH.resultMessage)))
                  for r in report.subjects(RDF.type, SH.ValidationResult) if report.value(r, SH.resultSeverity) == SH.Violation)


# --- what each persona discovers ---------------------------------------------------------------------------------------


def test_the_consumer_sees_its_granted_datasets_with_the_agreement_and_the_offers_shown_to_its_role(world):
    document = get_catalog(world.clients["consumer"])
    granted = [world.ids[(0, c)] for c in ("asset_metadata", "hosting_capacity", "loadflow_results", "telemetry", "topology", "violations")]
    requestable = [world.ids[(1, "telemetry")], world.ids[(1, "topology")]]
    assert ids_of(document) == granted + requestable
    assert document["count"] == 8 and document["@type"] == "dcat:Catalog"
    assert document["dct:title"] == "Datasets for Flex Aggregator"

    agreement = world.agreement
    metadata = dataset_of(document, world.ids[(0, "asset_metadata")])
    assert metadata["@id"] == f"http://testserver{URL}/{world.ids[(0, 'asset_metadata')]}"
    assert metadata["gt:granted"] is True and metadata["gt:grid"] == {"@id": world.grid.iri}
    assert metadata["gt:feeder"] == {"@id": world.feeders[0].iri}
    assert metadata["dct:publisher"] == {"@id": world.provider.iri, "@type": "foaf:Agent", "foaf:name": "Stadtwerke Nord"}
    assert metadata["dct:title"] == "Asset metadata: lv-sharing / feeder 0"
    assert [t["@id"] for t in metadata["dcat:theme"]] == ["https://w3id.org/gridtwin/data-category/asset_metadata",
                                                          "http://publications.europa.eu/resource/authority/data-theme/ENER"]
    (policy,) = metadata["odrl:hasPolicy"]
    assert policy["@id"] == agreement.uid and policy["@type"] == "odrl:Agreement"
    assert policy["gt:readWith"] == f"agreement={agreement.pk}&purpose=flexibility_procurement"
    assert policy["gt:agreementId"] == agreement.pk and policy["odrl:assignee"] == {"@id": world.consumer.iri}
    assert policy["odrl:permission"][0]["odrl:target"] == {"@id": metadata["@id"]}
    terms = constraints_of(policy)
    assert terms["purpose"] == ("eq", [f"{GT}FlexibilityProcurement"])
    assert terms["temporalResolution"] == ("gteq", ["PT1H"]) and terms["aggregationCount"] == ("gteq", ["5"])
    assert terms["field"] == ("isNoneOf", ["owner", "coordinates"])

    # The overlapping offer makes the granted telemetry dataset carry both policies.
    telemetry = dataset_of(document, world.ids[(0, "telemetry")])
    both = policies_of(telemetry)
    assert set(both) == {agreement.uid, world.offers.overlap.uid}
    assert both[world.offers.overlap.uid]["@type"] == "odrl:Offer" and telemetry["gt:granted"] is True


def test_an_offer_is_an_odrl_offer_with_its_terms(world):
    document = get_catalog(world.clients["consumer"], granted="false")
    dataset = dataset_of(document, world.ids[(1, "telemetry")])
    assert dataset["gt:granted"] is False
    assert dataset["dct:title"] == "Telemetry: https://gridtwin.example/id/test/lv-sharing / https://gridtwin.example/id/test/lv-sharing/feeder/1"
    (offer,) = dataset["odrl:hasPolicy"]
    assert offer["@id"] == world.offers.open.uid and offer["@type"] == "odrl:Offer"
    assert offer["odrl:assigner"] == {"@id": world.provider.iri} and offer["gt:offerId"] == world.offers.open.pk
    assert offer["dct:description"] == "Feeder 1 for studies"
    terms = constraints_of(offer)
    assert terms["purpose"] == ("isAnyOf", ["https://w3id.org/dpv#ResearchAndDevelopment", f"{GT}NetworkPlanning"])
    assert terms["temporalResolution"] == ("gteq", ["PT15M"])
    assert terms["aggregationCount"] == ("gteq", ["3"]) and terms["aggregationGroup"] == ("eq", ["feeder"])
    assert terms["field"] == ("isNoneOf", ["name"]) and terms["elapsedTime"] == ("lteq", ["P90D"])
    assert offer["odrl:prohibition"] == [{"@type": "odrl:Prohibition", "odrl:action": {"@id": f"{ODRL}sell"},
                                          "odrl:target": {"@id": dataset["@id"]}}]
    (duty,) = offer["odrl:permission"][0]["odrl:duty"]
    assert duty["gt:attributionText"] == "Stadtwerke Nord"


def test_telemetry_distributions_follow_the_finest_resolution_a_policy_allows(world):
    document = get_catalog(world.clients["consumer"], category="telemetry")
    offered = dataset_of(document, world.ids[(1, "telemetry")])["dcat:distribution"]  # the open offer: 15 minutes or coarser
    assert len(offered) == 9
    assert sorted({d["dcat:temporalResolution"]["@value"] for d in offered}) == ["P1D", "PT15M", "PT1H"]
    assert sorted({d["dcat:mediaType"]["@id"].rsplit("media-types/", 1)[1] for d in offered}) == [
        "application/json", "application/ld+json", "text/turtle"]
    hourly_json = next(d for d in offered if d["gt:resolution"] == "hour" and d["dcat:mediaType"]["@id"].endswith("/application/json"))
    assert hourly_json["dcat:accessURL"] == [{"@id": "http://testserver/api/v1/shared/telemetry?feeder=https%3A%2F%2Fgridtwin.example"
                                                     "%2Fid%2Ftest%2Flv-sharing%2Ffeeder%2F1&resolution=hour"}]
    assert hourly_json["dcat:accessService"] == [{"@id": "http://testserver/api/v1/shared/telemetry"}]
    # Granted hourly, offered raw: raw is listed, without a temporal resolution (no limit to state).
    granted = dataset_of(document, world.ids[(0, "telemetry")])["dcat:distribution"]
    raw = [d for d in granted if d["gt:resolution"] == "raw"]
    assert len(granted) == 12 and len(raw) == 3 and not any("dcat:temporalResolution" in d for d in raw)
    services = {s["@id"]: s for s in document["dcat:service"]}
    assert services["http://testserver/api/v1/shared/telemetry"]["dcat:endpointURL"] == {"@id": "http://testserver/api/v1/shared/telemetry"}


def test_asset_metadata_and_sparql_distributions_point_at_the_endpoints_in_scope(world):
    document = get_catalog(world.clients["consumer"], category="asset_metadata")
    distributions = dataset_of(document, world.ids[(0, "asset_metadata")])["dcat:distribution"]
    json_rest = next(d for d in distributions if d["dcat:mediaType"]["@id"].endswith("/application/json"))
    feeder = "feeder=https%3A%2F%2Fgridtwin.example%2Fid%2Ftest%2Flv-sharing%2Ffeeder%2F0"
    assert len(json_rest["dcat:accessURL"]) == 10
    assert {"@id": f"http://testserver/api/v1/shared/buses?{feeder}"} in json_rest["dcat:accessURL"]
    sparql = [d for d in distributions if d["dcat:mediaType"]["@id"].endswith("/application/sparql-results+json")]
    assert [d["dcat:accessURL"] for d in sparql] == [[{"@id": "http://testserver/api/v1/shared/sparql"}]]
    runs = get_catalog(world.clients["consumer"], category="loadflow_results")["dcat:dataset"][0]["dcat:distribution"]
    assert {d["dcat:accessURL"][0]["@id"] for d in runs} == {"http://testserver/api/v1/shared/loadflow/runs"}  # no SPARQL for runs

    # An agreement limited to meters serves only the meter list.
    newcomer = participant_create("Meter Reader", ["aggregator"])
    agreement_in_state(world.provider, newcomer, "active", asset_types=["meter"], categories=["asset_metadata"],
                       feeder_iris=[world.feeders[2].iri])
    only_meters = get_catalog(oauth_client(newcomer, "meter-reader"), granted="true")
    (dataset,) = only_meters["dcat:dataset"]
    urls = {u["@id"].split("?")[0] for d in dataset["dcat:distribution"] for u in d["dcat:accessURL"]}
    assert urls == {"http://testserver/api/v1/shared/meters", "http://testserver/api/v1/shared/sparql"}


def test_offers_follow_their_audience(world):
    outsider = get_catalog(world.clients["outsider"])  # a researcher
    assert ids_of(outsider) == [f"g{world.grid.pk}-hosting_capacity", world.ids[(1, "telemetry")], world.ids[(1, "topology")]]
    assert all(d["gt:granted"] is False for d in outsider["dcat:dataset"])
    body = orjson.dumps(outsider).decode()
    assert world.offers.overlap.uid not in body and world.offers.unpublished.uid not in body and world.agreement.uid not in body
    consumer = orjson.dumps(get_catalog(world.clients["consumer"])).decode()
    assert world.offers.researchers.uid not in consumer and world.offers.unpublished.uid not in consumer


def test_another_consumer_sees_nothing_of_the_agreement(world):
    for persona in ("expired", "revoked", "suspended"):
        document = get_catalog(world.clients[persona])  # aggregators without an agreement in force
        assert ids_of(document) == [world.ids[(0, "telemetry")], world.ids[(1, "telemetry")], world.ids[(1, "topology")]]
        assert all(d["gt:granted"] is False for d in document["dcat:dataset"])
        assert world.agreement.uid not in orjson.dumps(document).decode()
        shown = dataset_of(document, world.ids[(0, "telemetry")])
        assert list(policies_of(shown)) == [world.offers.overlap.uid]


def test_the_provider_never_sees_its_own_offers(world):
    document = get_catalog(world.clients["provider_operator"])
    assert document["count"] == 0 and document["dcat:dataset"] == []


def test_an_agreement_offered_to_the_consumer_awaits_its_answer_then_is_granted(world):
    newcomer = participant_create("New Aggregator", ["cpo"])
    client = oauth_client(newcomer, "new-aggregator")
    offered = agreement_in_state(world.provider, newcomer, "offered", feeder_iris=[world.feeders[2].iri], categories=["violations"])
    document = get_catalog(client)
    assert ids_of(document) == [world.ids[(1, "telemetry")], world.ids[(1, "topology")], world.ids[(2, "violations")]]
    policy = policies_of(dataset_of(document, world.ids[(2, "violations")]))[offered.uid]
    assert policy["@type"] == "odrl:Offer" and policy["gt:awaitingAnswer"] is True and policy["gt:status"] == "offered"
    assert policy["rdfs:seeAlso"] == {"@id": f"http://testserver/api/v1/sharing/agreements/{offered.pk}"}
    services.agreement_transition(agreement=offered, step="activate", actor=world.provider)
    granted = dataset_of(get_catalog(client), world.ids[(2, "violations")])
    assert granted["gt:granted"] is True and policies_of(granted)[offered.uid]["@type"] == "odrl:Agreement"


def test_a_data_window_is_the_temporal_coverage(world):
    newcomer = participant_create("Window Reader", ["aggregator"])
    start, end = datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)
    agreement_in_state(world.provider, newcomer, "active", feeder_iris=[world.feeders[2].iri], categories=["loadflow_results"],
                       data_start=start, data_end=end)
    (dataset,) = get_catalog(oauth_client(newcomer, "window-reader"), granted="true")["dcat:dataset"]
    assert dataset["dct:temporal"] == [{"@type": "dct:PeriodOfTime",
                                        "dcat:startDate": {"@value": "2024-05-01T00:00:00+00:00", "@type": "xsd:dateTime"},
                                        "dcat:endDate": {"@value": "2024-06-01T00:00:00+00:00", "@type": "xsd:dateTime"}}]


def test_credentials_that_are_no_consumer_are_refused(world):
    dataset = world.ids[(0, "telemetry")]
    for path in (URL, f"{URL}/{dataset}"):
        anonymous = world.clients["anonymous"].get(path)
        gateway = world.clients["gateway"].get(path)
        assert anonymous.status_code == 401 and anonymous.json()["reason"] == "not_authenticated"
        assert gateway.status_code == 403 and gateway.json()["reason"] == "not_permitted"
        assert dataset.encode() not in gateway.content


def test_every_catalog_request_is_audited_with_the_datasets_sent(world):
    get_catalog(world.clients["consumer"], limit=3)
    entry = AuditEntry.objects.order_by("-id").first()
    assert (entry.resource, entry.participant_iri, entry.allowed, entry.rule, entry.records) == (
        "shared.catalog", world.consumer.iri, True, "catalog", 3)
    world.clients["consumer"].get(f"{URL}/nope")
    entry = AuditEntry.objects.order_by("-id").first()
    assert (entry.status_code, entry.allowed, entry.records) == (404, False, 0)


# --- filters and pages -------------------------------------------------------------------------------------------------


def test_filters_narrow_the_consumers_own_catalog(world):
    consumer = world.clients["consumer"]
    assert ids_of(get_catalog(consumer, category="telemetry")) == [world.ids[(0, "telemetry")], world.ids[(1, "telemetry")]]
    assert get_catalog(consumer, granted="true")["count"] == 6
    assert ids_of(get_catalog(consumer, granted="false")) == [world.ids[(1, "telemetry")], world.ids[(1, "topology")]]
    assert ids_of(get_catalog(consumer, category="telemetry", granted="false")) == [world.ids[(1, "telemetry")]]
    assert get_catalog(consumer, provider=world.provider.iri)["count"] == 8
    assert get_catalog(consumer, grid=world.grid.iri)["count"] == 8
    assert ids_of(get_catalog(consumer, feeder=world.feeders[1].iri)) == [world.ids[(1, "telemetry")], world.ids[(1, "topology")]]
    assert ids_of(get_catalog(consumer, q="LOAD-FLOW")) == [world.ids[(0, "loadflow_results")]]
    assert ids_of(get_catalog(consumer, q="feeder 0", category="violations")) == [world.ids[(0, "violations")]]


def test_a_filter_naming_what_the_consumer_cannot_see_is_an_empty_page_like_a_missing_one(world):
    other_owner = participant_create("Other Utility", ["dso"])
    hidden = twin.Grid.objects.create(iri="https://gridtwin.example/id/test/hidden", name="hidden", owner=other_owner)
    consumer = world.clients["consumer"]
    for name, present, absent in (("grid", hidden.iri, "https://gridtwin.example/id/test/none"),
                                  ("provider", other_owner.iri, "https://gridtwin.example/id/participant/none"),
                                  ("feeder", world.feeders[2].iri, f"{world.grid.iri}/feeder/none")):
        seen, missing = consumer.get(URL, {name: present}), consumer.get(URL, {name: absent})
        assert seen.status_code == missing.status_code == 200
        assert seen.content == missing.content and seen.json()["count"] == 0, name
        assert hidden.name.encode() not in seen.content


BAD_FILTERS = [({"category": "weather"}, "category"), ({"granted": "yes"}, "granted"), ({"q": "x" * 201}, "q"),
               ({"grid": "bad\x00iri"}, "grid"), ({"provider": "p" * 501}, "provider")]


@pytest.mark.parametrize("params, field", BAD_FILTERS)
def test_bad_filter_values_are_400_with_a_reason(world, params, field):
    response = world.clients["consumer"].get(URL, params)
    assert response.status_code == 400
    body = response.json()
    assert body["reason"] == "invalid_filter" and field in body


def test_pages_cover_the_catalog_once_in_order(world):
    consumer = world.clients["consumer"]
    everything = ids_of(get_catalog(consumer))
    first = get_catalog(consumer, limit=3)
    assert (first["count"], first["limit"], first["offset"], len(first["dcat:dataset"])) == (8, 3, 0, 3)
    assert first["next"] == f"http://testserver{URL}?limit=3&offset=3" and first["previous"] is None
    pages = [ids_of(get_catalog(consumer, limit=3, offset=offset)) for offset in (0, 3, 6)]
    assert [i for page in pages for i in page] == everything and len(pages[2]) == 2
    assert get_catalog(consumer, limit=5000)["limit"] == 1000
    assert get_catalog(consumer, offset=50)["dcat:dataset"] == []


# --- one dataset -------------------------------------------------------------------------------------------------------


def test_one_dataset_is_its_catalog_entry_with_its_services_embedded(world):
    dataset_id = world.ids[(0, "telemetry")]
    response = world.clients["consumer"].get(f"{URL}/{dataset_id}")
    assert response.status_code == 200 and response["Content-Type"] == "application/ld+json"
    document = response.json()
    listed = dataset_of(get_catalog(world.clients["consumer"]), dataset_id)
    assert "@context" in document and document["@id"] == listed["@id"] and document["dct:title"] == listed["dct:title"]
    assert set(policies_of(document)) == {world.agreement.uid, world.offers.overlap.uid}
    service = document["dcat:distribution"][0]["dcat:accessService"][0]
    assert service["@type"] == "dcat:DataService" and service["dcat:endpointURL"] == {"@id": "http://testserver/api/v1/shared/telemetry"}
    assert dcat_violations(document) == []


def test_a_dataset_outside_the_catalog_is_404_like_a_malformed_or_absent_id(world):
    other_owner = participant_create("Other Utility", ["dso"])
    hidden = twin.Grid.objects.create(iri="https://gridtwin.example/id/test/hidden", name="hidden", owner=other_owner)
    consumer = world.clients["consumer"]
    asked = ["nope", "g0-telemetry", f"g{world.grid.pk}-weather", f"g0{world.grid.pk}-telemetry", "g999999999-telemetry",
             world.ids[(2, "telemetry")],  # exists, outside the agreement and every offer
             world.ids[(2, "violations")],  # the unpublished offer's
             f"g{world.grid.pk}-hosting_capacity",  # the researchers' offer
             f"g{hidden.pk}-telemetry", f"g{world.grid.pk}-f{world.feeders[0].pk + 10_000}-telemetry", "%20", "g1-f1-telemetry.json"]
    for dataset_id in asked:
        response = consumer.get(f"{URL}/{dataset_id}")
        assert response.status_code == 404 and response.json() == NOT_IN_CATALOG, dataset_id
    granted = world.ids[(0, "asset_metadata")]
    assert consumer.get(f"{URL}/{granted}").status_code == 200
    for persona in ("expired", "outsider", "provider_operator"):
        response = world.clients[persona].get(f"{URL}/{granted}")
        assert response.status_code == 404 and response.json() == NOT_IN_CATALOG, persona


# --- representations and shapes ----------------------------------------------------------------------------------------


def test_json_ld_is_the_default_and_turtle_is_the_same_graph(world):
    consumer = world.clients["consumer"]
    for accept in ("application/json", "*/*", "application/ld+json", ""):
        response = consumer.get(URL, HTTP_ACCEPT=accept)
        assert response.status_code == 200 and response["Content-Type"] == "application/ld+json", accept
    document = consumer.get(URL).json()
    assert isinstance(document["@context"], dict)  # inline, never a remote context
    turtle = consumer.get(URL, HTTP_ACCEPT="text/turtle")
    assert turtle.status_code == 200 and turtle["Content-Type"] == "text/turtle; charset=utf-8"
    from_turtle = Graph().parse(data=turtle.content, format="turtle")
    assert len(from_turtle) > 500 and isomorphic(from_turtle, graph_of(document))
    one = consumer.get(f"{URL}/{world.ids[(1, 'telemetry')]}", HTTP_ACCEPT="text/turtle")
    assert one.status_code == 200 and isomorphic(Graph().parse(data=one.content, format="turtle"),
                                                 graph_of(consumer.get(f"{URL}/{world.ids[(1, 'telemetry')]}").json()))


def test_the_catalogs_of_every_persona_conform_to_the_dcat_ap_shapes(world):
    checked = 0
    for persona in ("consumer", "outsider", "expired", "provider_operator", "provider_steward"):
        document = get_catalog(world.clients[persona])
        assert dcat_violations(document) == [], persona
        checked += len(document["dcat:dataset"])
    assert checked == 8 + 3 + 3


def test_the_shapes_refuse_a_broken_catalog(world):
    document = get_catalog(world.clients["consumer"])
    dataset = document["dcat:dataset"][0]

    def broken(change) -> list[tuple[str, str, str]]:
        copy = orjson.loads(orjson.dumps(document))
        change(copy, copy["dcat:dataset"][0])
        return dcat_violations(copy)

    def no_distributions(doc, ds):
        del ds["dcat:distribution"]

    def no_access_url(doc, ds):
        del ds["dcat:distribution"][0]["dcat:accessURL"]

    def no_catalog_title(doc, ds):
        del doc["dct:title"]

    def two_identifiers(doc, ds):
        ds["dct:identifier"] = [ds["dct:identifier"], "another"]

    def untyped_publisher(doc, ds):
        ds["dct:publisher"] = {"@id": "https://gridtwin.example/id/participant/somebody"}

    def no_policy(doc, ds):
        del ds["odrl:hasPolicy"]

    distribution = dataset["dcat:distribution"][0]["@id"]
    assert broken(no_distributions) == [(dataset["@id"], "http://www.w3.org/ns/dcat#distribution",
                                         "a dataset has at least one distribution, a dcat:Distribution (dcat:distribution)")]
    assert [v[:2] for v in broken(no_access_url)] == [(distribution, "http://www.w3.org/ns/dcat#accessURL")]
    assert [v[:2] for v in broken(no_catalog_title)] == [(document["@id"], "http://purl.org/dc/terms/title")]
    assert [v[:2] for v in broken(two_identifiers)] == [(dataset["@id"], "http://purl.org/dc/terms/identifier")]
    assert [v[:2] for v in broken(untyped_publisher)] == [(dataset["@id"], "http://purl.org/dc/terms/publisher")]
    assert [v[:2] for v in broken(no_policy)] == [(dataset["@id"], "http://www.w3.org/ns/odrl/2/hasPolicy")]


# --- the builder -------------------------------------------------------------------------------------------------------


def test_the_builder_keys_datasets_as_sharing_datasets_does(world):
    entries = catalog_module.consumer_catalog(world.consumer)
    granted = {e.key for e in entries if world.agreement in e.grants}
    assert granted == set(agreement_datasets(world.agreement)) and len(granted) == 6
    for offer in (world.offers.open, world.offers.overlap):
        assert {e.key for e in entries if offer in e.offers} == set(offer_datasets(offer))


def test_the_catalog_costs_the_same_queries_for_2_and_40_agreements(world):
    def queries_for(participant) -> int:
        with CaptureQueriesContext(connection) as captured:
            entries = catalog_module.consumer_catalog(participant)
            assert entries
        return len(captured)

    few, many = participant_create("Few Agreements", ["aggregator"]), participant_create("Many Agreements", ["aggregator"])
    now = timezone.now()
    rows = []
    for participant, count in ((few, 2), (many, 40)):
        for k in range(count):
            terms = agreement_terms(world.provider, participant, feeder_iris=[world.feeders[k % 3].iri])
            rows.append(Agreement(uid=f"urn:test:agreement:{participant.pk}:{k}", provider=world.provider, status=Agreement.Status.ACTIVE,
                                  activated_at=now, **{**terms, "valid_until": now + timedelta(days=5)}))
    Agreement.objects.bulk_create(rows)
    assert queries_for(few) == queries_for(many) == 6
    assert len(catalog_module.consumer_catalog(many)) == 3 * 6  # every category of three feeders (the offers add no other)
