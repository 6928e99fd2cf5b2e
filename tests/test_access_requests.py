"""Access requests through the API: request → approve / counter-offer / reject → accept / decline / withdraw → read → revoke.

Real database, real decision point, real agreements (judged by the ODRL shapes) and the real audit.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from ingest.testing import metered_grid_create
from sharing.datasets import DatasetKey, offer_datasets
from sharing.models import Agreement, AuditEntry, Purpose
from tests.hub import PURPOSE, START, hub_world_create, offer_create, participant_create

pytestmark = pytest.mark.django_db

REQUESTS = "/api/v1/sharing/requests"


@pytest.fixture
def world():
    world = hub_world_create(feeders=3, meters_per_feeder=6, steps=8)
    offer = offer_create(world.provider, world.grid, feeder_iris=[f.iri for f in world.feeders[1:]], audience=["aggregator"])
    world.offer = offer
    return world


def telemetry_of(world, feeder_index: int) -> str:
    return DatasetKey(world.grid.pk, world.feeders[feeder_index].pk, "telemetry").id


def ask(world, *datasets: str, **changes) -> dict:
    now = timezone.now()
    body = {"datasets": list(datasets), "purpose": PURPOSE, "valid_until": (now + timedelta(days=90)).isoformat(), "resolution": "hour",
            "message": "for the winter flexibility tender", **changes}
    response = world.clients["consumer"].post(REQUESTS, body, format="json")
    return {**response.json(), "http": response.status_code}


def shared_telemetry(world, agreement_id: int, feeder_index: int):
    return world.clients["consumer"].get("/api/v1/shared/telemetry", {
        "purpose": PURPOSE, "agreement": agreement_id, "quantity": "active_power", "feeder": world.feeders[feeder_index].iri,
        "start": START.isoformat(), "end": (START + timedelta(hours=2)).isoformat()})


def test_request_approve_read_revoke(world):
    made = ask(world, telemetry_of(world, 1))
    assert made["http"] == 201 and made["status"] == "pending"
    assert made["consumer"] == world.consumer.iri and made["provider"] == world.provider.iri and made["offer"] == world.offer.uid
    pending = world.clients["consumer"].get(f"{REQUESTS}/{made['id']}").json()
    assert pending["status"] == "pending" and pending["agreement"] is None

    inbox = world.clients["provider_steward"].get(REQUESTS, {"status": "pending"}).json()
    assert [r["id"] for r in inbox["results"]] == [made["id"]]
    approved = world.clients["provider_steward"].post(f"{REQUESTS}/{made['id']}/approve", {"activate": True}, format="json").json()
    assert approved["status"] == "approved" and approved["agreement"]["status"] == "active"
    agreement = Agreement.objects.get(pk=approved["agreement"]["id"])
    assert agreement.feeder_iris == [world.feeders[1].iri] and agreement.categories == ["telemetry"]
    assert agreement.dropped_fields == ["owner", "coordinates"] and agreement.min_group_size == 5

    read = shared_telemetry(world, agreement.pk, 1)
    assert read.status_code == 200, read.content
    assert {group["group"] for group in read.json()["series"]} == {world.feeders[1].iri}
    assert shared_telemetry(world, agreement.pk, 2).status_code == 404  # feeder 2 was offered, not requested

    world.clients["provider_steward"].post(f"/api/v1/sharing/agreements/{agreement.pk}/revoke", {"reason": "tender over"}, format="json")
    assert shared_telemetry(world, agreement.pk, 1).status_code == 404
    steps = list(AuditEntry.objects.filter(action__startswith="request.").order_by("id").values_list("action", flat=True))
    assert steps == ["request.create", "request.approve"]


def test_counter_offer_accepted_puts_the_changed_terms_in_force(world):
    made = ask(world, telemetry_of(world, 1), telemetry_of(world, 2))
    counter = {"resolution": "day", "reason": "daily is enough for a tender"}
    countered = world.clients["provider_steward"].post(f"{REQUESTS}/{made['id']}/counter", counter, format="json").json()
    assert countered["status"] == "countered" and countered["counter_terms"] == {"resolution": "day"}
    assert countered["agreement"]["status"] == "offered"
    accepted = world.clients["consumer"].post(f"{REQUESTS}/{made['id']}/accept").json()
    assert accepted["status"] == "approved" and accepted["agreement"]["status"] == "active"
    agreement = Agreement.objects.get(pk=accepted["agreement"]["id"])
    assert agreement.resolution == "day" and agreement.activated_by.username == "nord-steward"
    hourly = world.clients["consumer"].get("/api/v1/shared/telemetry", {
        "purpose": PURPOSE, "agreement": agreement.pk, "quantity": "active_power", "resolution": "hour",
        "start": START.isoformat(), "end": (START + timedelta(hours=2)).isoformat()})
    assert hourly.status_code == 403 and hourly.json()["reason"] == "resolution_not_granted"


def test_offer_declined_and_request_withdrawn(world):
    offered = ask(world, telemetry_of(world, 1))
    answer = world.clients["provider_steward"].post(f"{REQUESTS}/{offered['id']}/approve", {"activate": False}, format="json").json()
    assert answer["status"] == "offered" and answer["agreement"]["status"] == "offered"
    declined = world.clients["consumer"].post(f"{REQUESTS}/{offered['id']}/decline", {"reason": "too late"}, format="json").json()
    assert declined["status"] == "declined" and declined["agreement"]["status"] == "revoked"

    withdrawn = ask(world, telemetry_of(world, 2))
    assert world.clients["consumer"].post(f"{REQUESTS}/{withdrawn['id']}/withdraw").json()["status"] == "withdrawn"
    late = world.clients["provider_steward"].post(f"{REQUESTS}/{withdrawn['id']}/approve", {}, format="json")
    assert late.status_code == 409 and late.json()["reason"] == "invalid_transition"


def test_reject_needs_a_reason(world):
    made = ask(world, telemetry_of(world, 1))
    empty = world.clients["provider_steward"].post(f"{REQUESTS}/{made['id']}/reject", {"reason": " "}, format="json")
    assert empty.status_code == 400 and empty.json()["reason"] == "reason_required"
    rejected = world.clients["provider_steward"].post(f"{REQUESTS}/{made['id']}/reject", {"reason": "no tender this year"},
                                                      format="json").json()
    assert rejected["status"] == "rejected" and rejected["reason"] == "no tender this year"
    assert world.clients["consumer"].get(f"{REQUESTS}/{made['id']}").json()["status"] == "rejected"


def test_datasets_outside_the_catalog_are_404_alike(world):
    private = telemetry_of(world, 0)  # feeder 0 is not offered
    outside = [ask(world, private), ask(world, "g1-nonsense"), ask(world, "not a dataset"),
               ask(world, DatasetKey(world.grid.pk + 999, None, "telemetry").id),
               ask(world, DatasetKey(world.grid.pk, world.feeders[1].pk, "violations").id)]  # a category not offered
    assert {(a["http"], a["reason"]) for a in outside} == {(404, "no_such_dataset")}
    world.offer.audience = ["researcher"]
    world.offer.save()
    hidden = ask(world, telemetry_of(world, 1))
    assert (hidden["http"], hidden["reason"]) == (404, "no_such_dataset")


def test_terms_outside_the_offer_are_400(world):
    dataset = telemetry_of(world, 1)
    assert ask(world, dataset, purpose=Purpose.RESEARCH)["reason"] == "purpose_not_offered"
    assert ask(world, dataset, resolution="15min")["reason"] == "resolution_not_offered"
    long = (timezone.now() + timedelta(days=400)).isoformat()
    assert ask(world, dataset, valid_until=long)["reason"] == "period_not_offered"
    past = (timezone.now() - timedelta(days=1)).isoformat()
    assert ask(world, dataset, valid_until=past)["reason"] == "invalid_period"
    assert ask(world, dataset, datasets=[])["http"] == 400


def test_only_the_providers_steward_reviews_and_only_the_consumer_answers(world):
    made = ask(world, telemetry_of(world, 1))
    url = f"{REQUESTS}/{made['id']}"
    not_steward = world.clients["provider_operator"].post(f"{url}/approve", {}, format="json")
    assert not_steward.status_code == 403 and not_steward.json()["reason"] == "steward_required"
    assert world.clients["consumer_steward"].post(f"{url}/approve", {}, format="json").status_code == 404  # a steward, not the provider's
    assert world.clients["outsider"].get(url).status_code == 404
    assert world.clients["outsider"].get(REQUESTS).json()["count"] == 0
    assert world.clients["provider_steward"].post(f"{url}/withdraw").status_code == 404  # not the provider's to answer
    assert world.clients["consumer"].post(f"{url}/approve", {}, format="json").status_code == 403  # an API client is no steward
    assert world.clients["gateway"].get(REQUESTS).status_code == 403
    assert world.clients["consumer_steward"].get(url).json()["status"] == "pending"  # its own participant's request


def test_offer_datasets_are_one_per_feeder_and_category(world):
    keys = offer_datasets(world.offer)
    assert len(keys) == 2 * 2 and {k.feeder_id for k in keys} == {world.feeders[1].pk, world.feeders[2].pk}
    whole_grid = offer_create(world.provider, world.grid, categories=["topology"])
    assert [k.id for k in offer_datasets(whole_grid)] == [f"g{world.grid.pk}-topology"]


def test_a_provider_cannot_offer_someone_elses_grid(world):
    other = participant_create("Other DSO", ["dso"])
    with pytest.raises(Exception, match="a grid of the provider"):
        offer_create(other, world.grid)


def test_stewards_publish_offers_through_the_api(world):
    body = {"title": "Feeder 2 telemetry", "grid": world.grid.iri, "feeder_iris": [world.feeders[2].iri], "categories": ["telemetry"],
            "purposes": [PURPOSE], "resolution": "15min", "published": True}
    created = world.clients["provider_steward"].post("/api/v1/sharing/offers", body, format="json")
    assert created.status_code == 201, created.content
    offer = created.json()
    assert offer["provider"] == world.provider.iri and offer["datasets"] == [telemetry_of(world, 2)]
    foreign = world.clients["consumer_steward"].post("/api/v1/sharing/offers", body, format="json")
    assert foreign.status_code == 400 and foreign.json()["grid"] == ["no such grid"]
    assert world.clients["provider_operator"].post("/api/v1/sharing/offers", body, format="json").status_code == 403
    assert world.clients["consumer"].get("/api/v1/sharing/offers").status_code == 403
    assert world.clients["consumer_steward"].get(f"/api/v1/sharing/offers/{offer['id']}").status_code == 404

    made = ask(world, telemetry_of(world, 2), offer=offer["uid"], resolution="15min")
    assert made["http"] == 201 and made["offer"] == offer["uid"]
    other_grid = metered_grid_create(world.provider, name="lv-elsewhere", feeders=1, meters_per_feeder=1)
    moved = world.clients["provider_steward"].patch(f"/api/v1/sharing/offers/{offer['id']}", {"grid": other_grid.iri}, format="json")
    assert moved.status_code == 400 and "fixed" in moved.json()["grid"][0]
    hidden = world.clients["provider_steward"].patch(f"/api/v1/sharing/offers/{offer['id']}", {"published": False}, format="json")
    assert hidden.status_code == 200 and hidden.json()["published"] is False
    again = ask(world, telemetry_of(world, 2), offer=offer["uid"], resolution="15min")
    assert (again["http"], again["reason"]) == (404, "no_such_dataset")
    assert AuditEntry.objects.filter(action__in=["offer.create", "offer.change"]).count() == 2
