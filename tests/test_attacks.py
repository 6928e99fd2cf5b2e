"""The attacks that showed the access model had to be redone, each as a regression through the API, and the usual
probes of a data space: mass assignment, forged purposes, oversized pages, id probing through filters, differencing.

Each answer is a clean 4xx or a 404 indistinguishable from absent, and nothing of another participant leaks.
"""

from datetime import timedelta

import pytest
from rdflib import Graph

from ingest import services as ingest
from ingest.testing import power_readings, readings_json
from sharing.models import Agreement
from tests.hub import PURPOSE, START, hub_world_create
from twin import models
from twin.rdf_codec import TripleWriter, write_meters

pytestmark = pytest.mark.django_db

TURTLE = "text/turtle"
READINGS = "/api/v1/telemetry/readings"


def meter_turtle(iri: str, measured_iri: str, owner_iri: str | None) -> bytes:
    """One meter as the twin writes it, naming `owner_iri` as its gt:owner when given."""
    writer = TripleWriter()
    row = {"iri": iri, "name": "charger meter", "kind": "ev_charger", "measured_iri": measured_iri, "feeder_id": None,
           "owner_id": 1 if owner_iri else None, "in_service": True}
    write_meters(writer, [row], {"Feeder": {}, "Participant": {1: owner_iri} if owner_iri else {}})
    return writer.graph.serialize(format="turtle").encode()


def readings_of(client, point: int):
    return client.get(READINGS, {"point": point, "quantity": "active_power", "start": START.isoformat(),
                                 "end": (START + timedelta(hours=1)).isoformat()})


def test_the_meter_takeover_of_the_issue_is_refused_at_every_step(operator, other_operator, utility, other_utility, lv_turtle):
    """B adds a meter naming A as owner, A's gateway feeds it, B drops the owner to read A's readings or re-publishes to
    delete the meter. Now: naming A needs A's consent; A's readings stay A's; the meter is retired, never deleted."""
    grid = other_operator.post("/api/v1/models/", lv_turtle, content_type=TURTLE).json()  # B publishes its grid
    load = models.Load.objects.filter(grid_id=grid["id"]).order_by("id").first()
    meter_iri = f"{load.iri}/charger-meter"
    changes = f"/api/v1/grids/{grid['id']}/changes"

    refused = other_operator.post(changes, meter_turtle(meter_iri, load.iri, utility.iri), content_type=TURTLE)
    assert refused.status_code == 422 and refused.json()["reason"] == "shacl_violation"
    assert not models.Meter.objects.filter(iri=meter_iri).exists()

    assert operator.post("/api/v1/sharing/owner-consents", {"grid_iri": grid["iri"]}, format="json").status_code == 201
    assert other_operator.post(changes, meter_turtle(meter_iri, load.iri, utility.iri), content_type=TURTLE).status_code == 200
    meter = models.Meter.objects.get(iri=meter_iri)
    source, _ = ingest.telemetry_source_issue(participant=utility, name="gw-a")
    receipt = ingest.telemetry_batch_receive(source=source, body=readings_json(power_readings([meter.pk], START, 4)),
                                             content_type="application/json")
    assert ingest.telemetry_batch_process(batch_id=receipt.batch.pk).accepted_count == 4

    assert other_operator.post(changes, meter_turtle(meter_iri, load.iri, None), content_type=TURTLE).status_code == 200
    assert readings_of(other_operator, meter.pk).status_code == 404  # B renamed the owner: the readings are still A's
    assert len(readings_of(operator, meter.pk).json()["series"][0]["readings"]) == 4

    republished = other_operator.post("/api/v1/models/", lv_turtle, content_type=TURTLE).json()
    assert republished["counts"]["Meter"]["retired"] == 1 and republished["counts"]["Meter"]["deleted"] == 0
    meter.refresh_from_db()
    assert meter.retired_at is not None and models.Reading.objects.filter(point=meter).count() == 4
    assert len(readings_of(operator, meter.pk).json()["series"][0]["readings"]) == 4


@pytest.fixture
def world():
    return hub_world_create()


def test_filter_forms_and_filters_leak_nobody_elses_grids(world):
    outsider = world.clients["outsider"]
    page = outsider.get("/api/v1/meters/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    html = page.content.decode()
    assert world.grid.iri not in html and world.grid.name not in html and world.feeders[0].name not in html
    for path, name, value in (("/api/v1/meters/", "grid", world.grid.pk), ("/api/v1/grids/", "owner", world.provider.pk),
                              ("/api/v1/loadflow/violations", "run", world.run.pk), ("/api/v1/feeders/", "grid", world.grid.pk)):
        theirs, missing = outsider.get(path, {name: value}), outsider.get(path, {name: 10**12})
        assert theirs.status_code == missing.status_code == 200 and theirs.json() == missing.json()
        assert theirs.json()["results"] == []
        for bad in ("abc", 10**30, -1):
            answer = outsider.get(path, {name: bad})
            assert answer.status_code == 400, (path, name, bad)


def test_oversized_pages_are_cut_and_huge_offsets_are_empty(world):
    """More rows than a page may hold (1,000): an oversized `limit` is cut to it, operator and shared views alike."""
    from ingest.testing import metered_grid_create

    big = metered_grid_create(world.provider, name="lv-big", feeders=1, meters_per_feeder=1100)
    operator = world.clients["provider_operator"]
    for limit in (10**30, 5000, 1001):
        page = operator.get("/api/v1/meters/", {"grid": big.pk, "limit": limit})
        assert page.status_code == 200 and page.json()["count"] == 1100 and len(page.json()["results"]) == 1000, limit
    far = operator.get("/api/v1/meters/", {"offset": 10**30})
    assert far.status_code == 200 and far.json()["results"] == []
    steward = world.clients["provider_steward"]
    consumer = world.clients["consumer"]
    Agreement.objects.filter(pk=world.agreement.pk).update(feeder_iris=[], grid_iris=[big.iri])
    shared = consumer.get("/api/v1/shared/meters", {"purpose": PURPOSE, "limit": 10**30}).json()
    assert (shared["count"], shared["limit"], len(shared["results"])) == (1100, 1000, 1000)
    assert consumer.get("/api/v1/shared/meters", {"purpose": PURPOSE, "offset": 10**30}).json()["results"] == []
    assert steward.get("/api/v1/sharing/audit", {"limit": 10**30}).status_code == 200


def test_mass_assignment_cannot_set_provider_state_or_history(world):
    steward = world.clients["provider_steward"]
    body = {"consumer": world.consumer.iri, "purpose": PURPOSE, "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z",
            "categories": ["telemetry"], "provider": world.consumer.iri, "status": "active", "version": 7,
            "activated_at": "2026-01-01T00:00:00Z", "id": 424242}
    created = steward.post("/api/v1/sharing/agreements", body, format="json")
    assert created.status_code == 201
    agreement = Agreement.objects.get(pk=created.json()["id"])
    assert (agreement.provider, agreement.status, agreement.version, agreement.activated_at) == (world.provider, "draft", 1, None)
    assert agreement.pk != 424242


def test_forged_purposes_are_refused(world):
    consumer = world.clients["consumer"]
    for purpose, status, reason in (("", 400, "purpose_required"), ("marketing", 400, "unknown_purpose"),
                                    ("research", 403, "purpose_not_granted"), ("flexibility_procurement\x00", 400, "unknown_purpose")):
        answer = consumer.get("/api/v1/shared/meters", {"purpose": purpose} if purpose else {})
        assert (answer.status_code, answer.json()["reason"]) == (status, reason), purpose
    # a purpose header is not a declaration: only ?purpose= is
    assert consumer.get("/api/v1/shared/meters", HTTP_X_PURPOSE=PURPOSE).status_code == 400


def telemetry(client, **params):
    return client.get("/api/v1/shared/telemetry", {"purpose": PURPOSE, "quantity": "active_power", "start": START.isoformat(),
                                                   "end": (START + timedelta(hours=2)).isoformat(), **params})


def test_aggregates_cannot_be_differenced_down_to_one_meter(world):
    """The consumer cannot pick the meters of a group: point lists, groups and filters of its own are ignored or refused,
    and narrowing to a feeder selects one of the provider's groups, never a new set."""
    consumer = world.clients["consumer"]
    plain = telemetry(consumer).json()
    for attempt in ({"point": world.meters[0].pk}, {"group": "point"}, {"meters": world.meters[0].pk}, {"asset_types": "meter"}):
        assert telemetry(consumer, **attempt).json() == plain, attempt
    assert telemetry(consumer, feeder=world.feeders[0].iri).json()["series"] == plain["series"]
    assert telemetry(consumer, feeder=world.feeders[1].iri).status_code == 404  # another feeder: as if absent
    for bucket in plain["series"][0]["buckets"]:
        assert "min" not in bucket and "max" not in bucket  # each is one household's own value
    Agreement.objects.filter(pk=world.agreement.pk).update(min_group_size=len(world.meters) + 1)
    [group] = telemetry(consumer).json()["series"]
    assert group["suppressed"] and group["buckets"] == []


def test_every_format_carries_the_same_redactions(world):
    models.Bus.objects.filter(grid=world.grid).update(lon_degree=9.99, lat_degree=53.55)
    consumer = world.clients["consumer"]
    params = {"purpose": PURPOSE}
    as_json = consumer.get("/api/v1/shared/buses", params)
    as_jsonld = consumer.get("/api/v1/shared/buses", params, HTTP_ACCEPT="application/ld+json")
    as_turtle = consumer.get("/api/v1/shared/buses", params, HTTP_ACCEPT="text/turtle")
    assert as_json.status_code == as_jsonld.status_code == as_turtle.status_code == 200
    for body in (as_json.content, as_jsonld.content, as_turtle.content):
        text = body.decode()
        assert "9.99" not in text and "53.55" not in text and "lon_degree" not in text and world.provider.iri not in text
    iris = {row["iri"] for row in as_json.json()["results"]}
    graph = Graph().parse(data=as_turtle.content, format="turtle")
    assert iris and iris == {str(s) for s in graph.subjects() if str(s) in iris}
    assert iris == {row["iri"] for row in as_jsonld.json()["results"]}  # `results` is the context's alias of @graph


def test_a_gateway_key_reads_no_telemetry_and_runs_use_no_foreign_readings(world):
    gateway = world.clients["gateway"]
    assert readings_of(gateway, world.meters[0].pk).status_code == 403
    assert gateway.get("/api/v1/telemetry/latest", {"grid": world.grid.pk}).status_code == 403
    assert gateway.get(f"/api/v1/telemetry/batches/{world.batch.pk}").status_code == 200  # its own batch
