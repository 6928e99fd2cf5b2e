"""The consumer's path through the browsable API, in a real browser (issue 9, item 5).

A person of the aggregator (a member of the consumer participant of the hub world's active agreement: feeder 0,
asset metadata among its categories, owner and coordinates dropped) logs in, finds its agreement, reads a shared view
for its purpose and sees only the rows of its scope without the dropped fields; out of scope it sees the same 404 as
for something absent, without a purpose a 400 that says what to declare, and the provider's audit stays out of sight.
Everything asserted is read off the rendered page. (Logging in: `Browser.api_login` uses DRF's login page once
config/urls.py routes `rest_framework.urls`; until then it hands the browser a session cookie of the same user.)
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model

from tests.hub import PURPOSE, WRONG_PURPOSE, hub_world_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

USERNAME, PASSWORD = "flex-analyst", "pw-flex-analyst-1"
AGREEMENTS = "/api/v1/sharing/agreements"
BUSES, METERS = "/api/v1/shared/buses", "/api/v1/shared/meters"


def shared(path: str, **query) -> str:
    return f"{path}?{urlencode(query)}"


@pytest.fixture
def world():
    """The hub world, and a person who works for its consumer (a session user, member of the consumer participant)."""
    world = hub_world_create(meters_per_feeder=5)
    world.consumer.members.add(get_user_model().objects.create_user(USERNAME, password=PASSWORD))
    return world


def test_the_consumer_reads_its_agreement_and_only_its_scope_in_the_browsable_api(world, browser):
    agreement, feeders = world.agreement, world.feeders
    in_scope = shared(BUSES, purpose=PURPOSE, agreement=agreement.uid)

    browser.open(in_scope)  # not logged in yet: refused, and no rows on the page
    status, body = browser.api_response()
    assert status == 401 and "results" not in body
    assert world.grid.iri not in browser.text()

    browser.api_login(USERNAME, PASSWORD)
    browser.open(AGREEMENTS)
    browser.wait_for_text("Agreement List")
    status, body = browser.api_response()
    assert status == 200
    assert [(a["uid"], a["status"], a["consumer"]) for a in body["results"]] == [(agreement.uid, "active", world.consumer.iri)]
    assert body["results"][0]["feeder_iris"] == [feeders[0].iri]

    browser.open(in_scope)
    status, body = browser.api_response()
    assert status == 200 and body["agreement"] == agreement.uid
    assert [row["iri"] for row in body["results"]] == [f"{world.grid.iri}/bus/0"]
    assert {row["feeder"] for row in body["results"]} == {feeders[0].iri}
    assert not {"lon_degree", "lat_degree"} & {key for row in body["results"] for key in row}  # coordinates dropped
    page = browser.text()
    assert "lon_degree" not in page and f"{world.grid.iri}/bus/1" not in page

    browser.open(shared(METERS, purpose=PURPOSE, agreement=agreement.uid))
    status, body = browser.api_response()
    assert status == 200
    assert sorted(row["iri"] for row in body["results"]) == [f"{world.grid.iri}/meter/0-{m}" for m in range(5)]
    assert not {"owner", "owner_iri", "telemetry_owner"} & {key for row in body["results"] for key in row}  # owner dropped


def test_out_of_scope_reads_show_the_errors_of_the_api(world, browser):
    agreement, feeders = world.agreement, world.feeders
    browser.api_login(USERNAME, PASSWORD)

    browser.open(shared(BUSES, purpose=PURPOSE, agreement=agreement.uid, feeder=feeders[1].iri))  # another feeder of the grid
    browser.wait_for_text("HTTP 404 Not Found")
    status, other_feeder = browser.api_response()
    assert status == 404 and other_feeder["reason"] == "not_found"
    assert feeders[1].iri not in browser.text(".response-info pre")
    browser.open(shared(BUSES, purpose=PURPOSE, agreement=agreement.uid, feeder=f"{world.grid.iri}/feeder/99"))  # no such feeder
    assert browser.api_response() == (404, other_feeder)  # indistinguishable

    browser.open(shared(BUSES, purpose=PURPOSE, agreement=agreement.uid + "-other"))  # an agreement that is not its own
    assert browser.api_response() == (404, {"reason": "not_found", "message": "Not found."})

    browser.open(BUSES)  # no purpose declared
    browser.wait_for_text("HTTP 400 Bad Request")
    status, body = browser.api_response()
    assert status == 400 and body["reason"] == "purpose_required" and "?purpose=" in body["message"]

    browser.open(shared(BUSES, purpose=WRONG_PURPOSE))  # a purpose its agreement does not name
    status, body = browser.api_response()
    assert status == 403 and body["reason"] == "purpose_not_granted"
    assert world.grid.iri not in browser.text()

    browser.open("/api/v1/sharing/audit")  # the audit of the provider's data is the provider's: none of it shows
    status, body = browser.api_response()
    assert status == 200 and all(entry["participant_iri"] == world.consumer.iri for entry in body["results"])  # its own requests only
    assert world.provider.iri not in browser.text()
