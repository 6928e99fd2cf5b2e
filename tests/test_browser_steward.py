"""The data steward's main path in the admin, in a real browser, with a third party's machine client reading alongside.

The provider's steward (of the hub world's Stadtwerke Nord) logs in to the admin. Either an agreement is already offered
to a charge-point operator for feeder 1 and the steward reads what it grants and activates it, or the operator asks for
feeder 1's data through the API and the steward finds the request in the inbox, previews the access and approves it.
Then the operator's API client (OAuth2 client credentials, over HTTP against the live server) reads its buses, the
steward sees that first read in the audit and revokes the agreement, and the client's next read is refused (404, as for
something absent).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from django.urls import reverse
from django.utils import timezone

from sharing.admin import agreement_summary
from sharing.models import AccessRequest, Agreement, AuditEntry, DatasetOffer
from sharing.oauth import api_client_issue
from tests.hub import PURPOSE, agreement_in_state, hub_world_create, participant_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

STEWARD, STEWARD_PASSWORD = "nord-steward", "pw-nord-steward-1"  # tests.hub.user_client's password rule
CPO = "Charge Point Operator"
HTTP_TIMEOUT_S = 10
NOT_FOUND = {"reason": "not_found", "message": "Not found."}


class MachineClient:
    """A third party's API client talking HTTP to the live server with a bearer token from /o/token/."""

    def __init__(self, base_url: str, participant, name: str):
        _, client_id, secret = api_client_issue(participant=participant, name=name)
        self.base_url, self.http = base_url, requests.Session()
        self.http.trust_env = False  # straight to the live server, whatever proxy the environment names
        token = self.http.post(f"{base_url}/o/token/", data={"grant_type": "client_credentials", "client_id": client_id,
                                                           "client_secret": secret}, timeout=HTTP_TIMEOUT_S)
        assert token.status_code == 200, token.text
        self.headers = {"Authorization": f"Bearer {token.json()['access_token']}", "Accept": "application/json"}

    def get(self, path: str, **query) -> requests.Response:
        return self.http.get(self.base_url + path, params=query, headers=self.headers, timeout=HTTP_TIMEOUT_S)

    def post(self, path: str, body: dict) -> requests.Response:
        return self.http.post(self.base_url + path, json=body, headers=self.headers, timeout=HTTP_TIMEOUT_S)


@pytest.fixture
def world(live_server):
    """The hub world, its steward allowed into the admin, and a charge-point operator with an API client (no agreement yet)."""
    world = hub_world_create(meters_per_feeder=5)
    steward = world.provider.stewards.get(username=STEWARD)
    steward.is_staff = True
    steward.save(update_fields=["is_staff"])
    world.participants["cpo"] = participant_create(CPO, ["cpo"])
    world.cpo_client = MachineClient(live_server.url, world.participants["cpo"], "cpo-backend")
    yield world
    world.cpo_client.http.close()


def shared_buses(world, agreement_uid: str | None = None) -> requests.Response:
    query = {"purpose": PURPOSE, **({"agreement": agreement_uid} if agreement_uid else {})}
    return world.cpo_client.get("/api/v1/shared/buses", **query)


def agreements_page(browser) -> dict[str, dict[str, str]]:
    """The steward's agreements change list: consumer → its row."""
    browser.open(reverse("admin:sharing_agreement_changelist"))
    browser.wait_for_text("agreement", css="#content h1")
    return {row["consumer"]: row for row in browser.result_list()}


def shared_reads(browser) -> list[dict[str, str]]:
    """The reads of shared asset views on the audit page the browser shows (newest first)."""
    return [row for row in browser.result_list() if row["resource"] == "shared.asset"]


def revoke(browser, agreement: Agreement) -> None:
    browser.open(reverse("admin:sharing_agreement_changelist"))
    browser.admin_action("revoke", agreement.pk, then="revoked")
    assert agreements_page(browser)[CPO]["status"] == "Revoked"


def test_the_steward_activates_an_offered_agreement_sees_the_read_in_the_audit_and_revokes_it(world, browser):
    offered = agreement_in_state(world.provider, world.participants["cpo"], "offered", feeder_iris=[world.feeders[1].iri])
    assert shared_buses(world, offered.uid).status_code == 404  # offered, not yet in force

    browser.admin_login(STEWARD, STEWARD_PASSWORD)
    rows = agreements_page(browser)
    assert len(rows) == 5  # the world's agreements (active, expired, revoked, suspended) and the offered one
    assert rows[CPO]["status"] == "Offered" and rows[CPO]["provider"] == world.provider.name

    browser.follow(browser.element(f"#result_list a[href*='/sharing/agreement/{offered.pk}/change/']"))
    grants = browser.wait_for_text(f"{CPO} may read", css=".field-grants").text
    for phrase in ("of feeder …/feeder/1", "hourly for flexibility procurement", "groups of at least 5 meters",
                   "owner and coordinates removed"):
        assert phrase in grants
    assert agreement_summary(offered) in grants

    browser.open(reverse("admin:sharing_agreement_changelist"))
    browser.admin_action("activate", offered.pk, then="activated")
    assert agreements_page(browser)[CPO]["status"] == "Active"
    assert Agreement.objects.get(pk=offered.pk).status == Agreement.Status.ACTIVE

    read = shared_buses(world, offered.uid)
    assert read.status_code == 200, read.text
    assert [row["iri"] for row in read.json()["results"]] == [f"{world.grid.iri}/bus/1"] and "lon_degree" not in read.text

    browser.open(reverse("admin:sharing_auditentry_changelist"))  # the steward looks the operator up in the audit
    browser.fill({"q": world.participants["cpo"].iri})
    browser.submit(browser.element("#changelist-search [type=submit]"), then=world.participants["cpo"].iri, css="#result_list")
    reads = shared_reads(browser)
    assert len(reads) == 2  # the read just made, and the refused one before activation (it named the provider's agreement)
    columns = ("rule", "allowed", "provider_iri", "records", "status_code")
    assert {k: reads[0][k] for k in columns} == {
        "rule": "agreement:asset_metadata", "allowed": "True", "provider_iri": world.provider.iri, "records": "1", "status_code": "200"}
    assert {k: reads[1][k] for k in columns} == {
        "rule": "deny:no_agreement", "allowed": "False", "provider_iri": world.provider.iri, "records": "0", "status_code": "404"}

    revoke(browser, offered)
    refused = shared_buses(world, offered.uid)
    assert refused.status_code == 404 and refused.json() == NOT_FOUND
    browser.open(reverse("admin:sharing_auditentry_changelist"))  # the refused read is in the steward's audit too
    browser.fill({"q": world.participants["cpo"].iri})
    browser.submit(browser.element("#changelist-search [type=submit]"), then=world.participants["cpo"].iri, css="#result_list")
    latest = shared_reads(browser)[0]
    assert (latest["rule"], latest["allowed"], latest["status_code"]) == ("deny:no_agreement", "False", "404")


# --- the full path: from the steward's inbox of access requests -------------------------------------------------------


@pytest.fixture
def requested(world):
    """A published offer of feeder 1's asset metadata and topology, and the charge-point operator's request for them (through
    its API client: the consumer's own step), pending in the steward's inbox."""
    feeder = world.feeders[1]
    world.offer = DatasetOffer.objects.create(
        uid="https://gridtwin.example/id/offer/nord-feeder-1", provider=world.provider, title="Feeder 1 for flexibility", grid=world.grid,
        feeder_iris=[feeder.iri], categories=["asset_metadata", "topology"], purposes=[PURPOSE], dropped_fields=["owner", "coordinates"],
        published=True)
    asked = world.cpo_client.post("/api/v1/sharing/requests", {
        "datasets": [f"g{world.grid.pk}-f{feeder.pk}-asset_metadata", f"g{world.grid.pk}-f{feeder.pk}-topology"], "purpose": PURPOSE,
        "valid_until": (timezone.now() + timedelta(days=90)).isoformat(), "message": "Chargers on feeder 1: hosting studies."})
    assert asked.status_code == 201, asked.text
    world.request = AccessRequest.objects.get(pk=asked.json()["id"])
    return world


def test_the_steward_previews_and_approves_a_request_from_the_inbox_sees_the_first_read_and_revokes_it(requested, browser):
    world, req, cpo = requested, requested.request, requested.participants["cpo"]
    assert shared_buses(world).status_code == 404  # nothing in force for the operator yet

    browser.admin_login(STEWARD, STEWARD_PASSWORD)
    browser.open(reverse("admin:sharing_accessrequest_changelist"))  # the inbox
    browser.follow(browser.link("made to my participants (to review)", within="#changelist-filter"))
    assert "direction=received" in browser.path
    inbox = browser.result_list()
    assert [(row["consumer"], row["status"], row["datasets_count"]) for row in inbox] == [(CPO, "Pending", "2")]

    browser.follow(browser.element(f"#result_list a[href*='/sharing/accessrequest/{req.pk}/change/']"))
    grants = browser.wait_for_text(f"If approved: {CPO} may read", css=".field-grants").text
    assert "of feeder …/feeder/1" in grants and "owner and coordinates removed" in grants
    assert "Chargers on feeder 1: hosting studies." in browser.text(".field-message")

    browser.follow(browser.element("#preview-link"))
    browser.wait_for_text(f"what {CPO} would see now", css="#content h1")
    metadata = browser.element("#preview-asset_metadata").text  # the buses of feeder 1, redacted as the operator would get them
    assert f"{world.grid.iri}/bus/1" in metadata
    assert f"{world.grid.iri}/bus/0" not in metadata and "lon_degree" not in metadata
    assert AuditEntry.objects.filter(preview=True, participant_iri=world.provider.iri, provider_iri=world.provider.iri).exists()
    browser.follow(browser.link(str(req), within=".breadcrumbs"))

    browser.submit(browser.element("#approve-button"), then="approved; the agreement is in force", css=".messagelist")
    assert not browser.elements("#approve-button")  # decided: nothing left to approve
    req.refresh_from_db()
    assert req.status == AccessRequest.Status.APPROVED and req.agreement.status == Agreement.Status.ACTIVE

    followed = world.cpo_client.get(f"/api/v1/sharing/requests/{req.pk}").json()  # the operator follows its request to the agreement
    assert followed["status"] == "approved" and followed["agreement"]["status"] == "active"
    read = shared_buses(world, followed["agreement"]["uid"])
    assert read.status_code == 200, read.text
    assert [row["iri"] for row in read.json()["results"]] == [f"{world.grid.iri}/bus/1"] and "lon_degree" not in read.text

    browser.open(reverse("admin:sharing_auditentry_changelist"))  # the operator's first read, found with the audit's filter
    browser.follow(browser.link(CPO, within="#changelist-filter"))
    assert {row["participant_iri"] for row in browser.result_list()} == {cpo.iri}  # its request and its read, nobody else's
    reads = shared_reads(browser)
    assert [(row["rule"], row["allowed"], row["records"], row["status_code"]) for row in reads] == [
        ("agreement:asset_metadata", "True", "1", "200")]

    revoke(browser, req.agreement)
    refused = shared_buses(world, followed["agreement"]["uid"])
    assert refused.status_code == 404 and refused.json() == NOT_FOUND
