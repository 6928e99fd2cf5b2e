"""The aggregator story end to end through the API: the DSO's steward activates an agreement, the aggregator's OAuth2
client reads hourly feeder aggregates, is refused raw data and another feeder, revocation takes effect at once, and
the DSO reads the audit of who saw what."""

from datetime import timedelta

import pytest

from sharing.models import Agreement, AuditEntry
from tests.hub import PURPOSE, START, agreement_terms, hub_world_create, oauth_client

pytestmark = pytest.mark.django_db

TELEMETRY = "/api/v1/shared/telemetry"


@pytest.fixture
def world():
    return hub_world_create()


def telemetry(client, **params):
    query = {"purpose": PURPOSE, "quantity": "active_power", "start": START.isoformat(),
             "end": (START + timedelta(hours=2)).isoformat(), **params}
    return client.get(TELEMETRY, query)


def test_the_steward_activates_and_the_aggregator_reads_hourly_feeder_aggregates(world):
    steward, operator = world.clients["provider_steward"], world.clients["provider_operator"]
    terms = agreement_terms(world.provider, world.consumer, feeder_iris=[world.feeders[1].iri])
    body = {**{k: v for k, v in terms.items() if k != "consumer"}, "consumer": world.consumer.iri,
            "valid_from": terms["valid_from"].isoformat(), "valid_until": terms["valid_until"].isoformat()}
    created = steward.post("/api/v1/sharing/agreements", body, format="json")
    assert created.status_code == 201, created.content
    agreement_id = created.json()["id"]
    assert operator.post(f"/api/v1/sharing/agreements/{agreement_id}/activate").status_code == 403  # an operator is no steward
    assert steward.post(f"/api/v1/sharing/agreements/{agreement_id}/offer").json()["status"] == "offered"
    assert steward.post(f"/api/v1/sharing/agreements/{agreement_id}/activate").json()["status"] == "active"

    aggregator = world.clients["consumer"]
    response = telemetry(aggregator, agreement=str(agreement_id))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["resolution"] == "hour" and body["group_by"] == "feeder"
    [group] = body["series"]
    assert group["group"] == world.feeders[1].iri and group["meters"] == 6 and not group["suppressed"]
    assert [b["meters"] for b in group["buckets"]] == [6, 6]

    assert telemetry(aggregator, agreement=str(agreement_id), resolution="raw").status_code == 403  # finer than granted
    assert telemetry(aggregator, agreement=str(agreement_id), purpose="research").status_code == 403  # purpose not granted
    other_feeder = aggregator.get("/api/v1/shared/meters", {"purpose": PURPOSE, "agreement": str(agreement_id)}).json()
    assert {m["feeder"] for m in other_feeder["results"]} == {world.feeders[1].iri}  # feeders 0 and 2 stay invisible
    assert all("owner" not in m for m in other_feeder["results"])  # the agreement drops owners

    assert steward.post(f"/api/v1/sharing/agreements/{agreement_id}/revoke", {"reason": "end of tender"}, format="json").status_code == 200
    assert telemetry(aggregator, agreement=str(agreement_id)).status_code == 404  # revocation takes effect on the next request

    audit = operator.get("/api/v1/sharing/audit", {"agreement_uid": created.json()["uid"]}).json()["results"]
    reads = [e for e in audit if e["resource"] == "shared.telemetry" and e["allowed"]]
    assert reads and reads[-1]["participant_iri"] == world.consumer.iri and reads[-1]["records"] == 2


def test_a_small_feeder_is_suppressed_and_says_so(world):
    small = oauth_client(world.consumer, "flex-small")
    Agreement.objects.filter(pk=world.agreement.pk).update(min_group_size=7)
    body = telemetry(small).json()
    [group] = body["series"]
    assert group["suppressed"] and group["reason"] == "group_too_small" and group["buckets"] == []


def test_every_request_is_audited_and_the_chain_verifies(world):
    from django.core.management import call_command

    before = AuditEntry.objects.count()
    telemetry(world.clients["consumer"])
    telemetry(world.clients["outsider"])
    assert AuditEntry.objects.count() == before + 2
    call_command("verify_audit")


def test_the_terms_of_an_active_agreement_are_frozen_and_an_amendment_replaces_it(world):
    from django.core.exceptions import ValidationError

    from sharing import services

    agreement = Agreement.objects.get(pk=world.agreement.pk)
    agreement.min_group_size = 1
    with pytest.raises(ValidationError):
        agreement.save()
    steward = world.clients["provider_steward"]
    amended = steward.post(f"/api/v1/sharing/agreements/{agreement.pk}/amend", {"min_group_size": 8}, format="json")
    assert amended.status_code == 201 and amended.json()["version"] == 2 and amended.json()["status"] == "draft"
    assert telemetry(world.clients["consumer"]).status_code == 200  # version 1 stays in force until version 2 is activated
    for step in ("offer", "activate"):
        services.agreement_transition(agreement=Agreement.objects.get(pk=amended.json()["id"]), step=step, actor=world.provider)
    agreement.refresh_from_db()
    assert agreement.status == "revoked" and "superseded" in agreement.end_reason
    assert telemetry(world.clients["consumer"]).json()["min_group_size"] == 8  # read under version 2 now


@pytest.mark.parametrize("media_type", ["text/turtle", "application/ld+json"])
def test_an_agreement_goes_out_and_back_in_as_its_odrl_policy(world, media_type):
    from rdflib import Graph, URIRef
    from rdflib.compare import isomorphic

    steward = world.clients["provider_steward"]
    exported = steward.get(f"/api/v1/sharing/agreements/{world.agreement.pk}", HTTP_ACCEPT=media_type)
    assert exported.status_code == 200 and exported["Content-Type"].startswith(media_type)
    fmt = "turtle" if media_type == "text/turtle" else "json-ld"
    copy = exported.content.decode().replace(world.agreement.uid, world.agreement.uid + "-copy")
    created = steward.post("/api/v1/sharing/agreements", copy.encode(), content_type=media_type)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["status"] == "draft" and body["consumer"] == world.consumer.iri and body["feeder_iris"] == world.agreement.feeder_iris
    again = steward.get(f"/api/v1/sharing/agreements/{body['id']}", HTTP_ACCEPT=media_type)
    status = URIRef("https://w3id.org/gridtwin/ontology#status")
    sent, stored = Graph().parse(data=copy, format=fmt), Graph().parse(data=again.content, format=fmt)
    for graph in (sent, stored):  # the copy comes in as a draft, whatever state the original was in
        graph.remove((None, status, None))
    assert isomorphic(sent, stored)
    assert world.clients["outsider"].post("/api/v1/sharing/agreements", copy.encode(), content_type=media_type).status_code == 403


def test_secondary_substations_are_groups_the_provider_defines(utility, lv_turtle):
    """group_by transformer: the meters behind each transformer's LV side form one group (SimBench LV grid, real topology)."""
    from ingest import services as ingest
    from ingest.testing import power_readings, readings_json
    from ontology.parsing import parse_rdf
    from tests.hub import agreement_in_state, participant_create
    from twin import models, services
    from twin.selectors import buses_behind_transformers

    grid = services.grid_import_graph(graph=parse_rdf(lv_turtle, "text/turtle", max_bytes=10**8, max_literal_chars=10**5),
                                      participant=utility).grid
    transformer = models.Transformer.objects.get(grid=grid)
    behind = buses_behind_transformers(grid)
    assert transformer.lv_bus_id in behind and transformer.hv_bus_id not in behind
    lv_buses = set(models.Bus.objects.filter(grid=grid, base_voltage__nominal_voltage_kv__lt=transformer.vn_hv_kv)
                   .values_list("id", flat=True))
    assert set(behind.values()) == {transformer.iri} and set(behind) <= lv_buses and len(behind) > 0.9 * len(lv_buses)
    meters = list(ingest.profile_meters_ensure(grid=grid).values())
    source, _ = ingest.telemetry_source_issue(participant=utility, name="gw-lv")
    receipt = ingest.telemetry_batch_receive(source=source, body=readings_json(power_readings(meters, START, 4)),
                                             content_type="application/json")
    ingest.telemetry_batch_process(batch_id=receipt.batch.pk)
    consumer = participant_create("Substation Analytics", ["researcher"])
    agreement = agreement_in_state(utility, consumer, "active", group_by="transformer", min_group_size=5, grid_iris=[grid.iri])
    body = telemetry(oauth_client(consumer, "substation-client"), agreement=str(agreement.pk)).json()
    assert body["group_by"] == "transformer"
    [group] = body["series"]
    assert group["group"] == transformer.iri and group["meters"] == len(meters) and not group["suppressed"]
    assert [b["meters"] for b in group["buckets"]] == [len(meters)]
