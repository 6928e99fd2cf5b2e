"""A small hub with every persona, shared by the sharing tests and the sharing benchmark.

`hub_world_create` writes a provider utility with one metered grid (rows straight through the ORM, see
`ingest.testing.metered_grid_create`), readings sent by the provider's own gateway through the real ingest
service, a finished load-flow run with results and violations, and one agreement per consumer state:
active, expired, revoked and suspended. Each persona gets an authenticated API client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from ingest import services as ingest
from ingest.testing import metered_grid_create, power_readings, readings_json
from sharing import services
from sharing.models import Agreement, DataCategory, DatasetOffer, Purpose
from sharing.oauth import api_client_issue
from twin import models as twin
from twin.models import Credential

START = datetime(2024, 5, 1, tzinfo=UTC)
PURPOSE = Purpose.FLEXIBILITY_PROCUREMENT
WRONG_PURPOSE = Purpose.RESEARCH
PERSONAS = ["provider_operator", "provider_steward", "consumer", "consumer_wrong_purpose", "consumer_steward", "expired", "revoked",
            "suspended", "outsider", "gateway", "anonymous"]


@dataclass
class HubWorld:
    """Participants, the provider's grid and data, the agreements, and one API client per persona (with its purpose)."""

    provider: twin.Participant
    consumer: twin.Participant
    grid: twin.Grid
    feeders: list[twin.Feeder]
    meters: list[twin.Meter]
    agreement: Agreement
    run: twin.LoadFlowRun
    batch: twin.TelemetryBatch
    clients: dict[str, APIClient] = field(default_factory=dict)
    purposes: dict[str, str] = field(default_factory=dict)
    participants: dict[str, twin.Participant] = field(default_factory=dict)


def participant_create(name: str, roles: list[str]) -> twin.Participant:
    slug = "-".join(name.lower().split())
    return twin.Participant.objects.create(iri=f"https://gridtwin.example/id/participant/{slug}", name=name, roles=roles)


def staff_user(username: str, *, stewards=(), superuser: bool = False):
    """A staff user (admin login), member and steward of `stewards`."""
    user = get_user_model().objects.create_user(username, password=f"pw-{username}-1", is_staff=True, is_superuser=superuser)
    for participant in stewards:
        participant.members.add(user)
        participant.stewards.add(user)
    return user


def user_client(participant: twin.Participant, username: str, *, steward: bool = False) -> APIClient:
    """An API client authenticated by a user token of a member (and steward, when asked) of `participant`."""
    user = get_user_model().objects.create_user(username, password=f"pw-{username}-1")
    participant.members.add(user)
    if steward:
        participant.stewards.add(user)
    _, raw = Credential.issue(kind=Credential.Kind.TOKEN, participant=participant, user=user, name=username)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    return client


def oauth_client(participant: twin.Participant, name: str, scopes: str = "shared:read") -> APIClient:
    """An API client holding an access token obtained by OAuth2 client credentials at /o/token/."""
    _, client_id, secret = api_client_issue(participant=participant, name=name, scopes=scopes)
    client = APIClient()
    response = client.post("/o/token/", {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    assert response.status_code == 200, response.content
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access_token']}")
    return client


def gateway_client(participant: twin.Participant, name: str) -> tuple[APIClient, twin.TelemetrySource]:
    source, key = ingest.telemetry_source_issue(participant=participant, name=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Gateway {key}")
    return client, source


def agreement_terms(provider: twin.Participant, consumer: twin.Participant, **changes) -> dict:
    """Terms of the aggregator story: PV and battery telemetry of feeder 0, hourly, for flexibility procurement, k = 5."""
    now = timezone.now()
    terms = {"consumer": consumer, "purpose": PURPOSE, "valid_from": now - timedelta(days=1), "valid_until": now + timedelta(days=120),
             "categories": list(DataCategory.values), "resolution": "hour", "group_by": "feeder", "min_group_size": 5,
             "dropped_fields": ["owner", "coordinates"], "grid_iris": [], "feeder_iris": [], "asset_types": [], "asset_iris": []}
    terms.update(changes)
    return terms


def agreement_in_state(provider: twin.Participant, consumer: twin.Participant, state: str, **changes) -> Agreement:
    """An agreement taken through the lifecycle to `state` (active, suspended, revoked; expired = active but past its end)."""
    if state == "expired":
        changes = {"valid_from": timezone.now() - timedelta(days=30), "valid_until": timezone.now() - timedelta(days=1), **changes}
    agreement = services.agreement_create(provider=provider, **agreement_terms(provider, consumer, **changes))
    for step in {"active": ["offer", "activate"], "expired": [], "suspended": ["offer", "activate", "suspend"],
                 "revoked": ["offer", "activate", "revoke"], "draft": [], "offered": ["offer"]}[state]:
        agreement = services.agreement_transition(agreement=agreement, step=step, actor=provider)
    if state == "expired":  # activation checks nothing about time; an agreement that ran out is active in the past
        Agreement.objects.filter(pk=agreement.pk).update(status=Agreement.Status.ACTIVE)
        agreement.refresh_from_db()
    return agreement


def offer_create(provider: twin.Participant, grid: twin.Grid, **changes) -> DatasetOffer:
    """A published offer of the grid's telemetry and asset metadata, hourly or coarser, k = 5, owners and coordinates withheld."""
    terms = {"uid": f"{grid.iri}/offer/{DatasetOffer.objects.count() + 1}", "provider": provider, "grid": grid,
             "title": f"Telemetry of {grid.name}", "categories": [DataCategory.TELEMETRY, DataCategory.ASSET_METADATA],
             "purposes": [PURPOSE, Purpose.NETWORK_PLANNING], "resolution": "hour", "group_by": "feeder", "min_group_size": 5,
             "dropped_fields": ["owner", "coordinates"], "max_days": 180, "published": True}
    terms.update(changes)
    offer = DatasetOffer(**terms)
    offer.full_clean()
    offer.save()
    return offer


def run_with_results(grid: twin.Grid) -> twin.LoadFlowRun:
    """A succeeded snapshot run with a result per bus and one violation (rows written directly: this tests access, not physics)."""
    run = twin.LoadFlowRun.objects.create(grid=grid, kind=twin.LoadFlowRun.Kind.SNAPSHOT, status=twin.LoadFlowRun.Status.SUCCEEDED,
                                          at=START, inputs={"measured": 4, "profile": 0, "last_value": 0, "declared": 0},
                                          summary={"vm_min_pu": 0.97}, finished_at=timezone.now())
    buses = list(twin.Bus.objects.filter(grid=grid).order_by("id"))
    twin.BusResult.objects.bulk_create([twin.BusResult(run=run, bus=bus, vm_pu=1.0 - 0.01 * k, va_degree=0.0)
                                        for k, bus in enumerate(buses)])
    twin.Violation.objects.create(run=run, grid=grid, element="bus", asset_iri=buses[-1].iri, quantity="vm_pu", start=START,
                                  end=START + timedelta(minutes=15), steps=1, value=0.89, limit=0.9, severity="major")
    return run


def hub_world_create(*, feeders: int = 3, meters_per_feeder: int = 6, steps: int = 8) -> HubWorld:
    """The hub of every sharing test (module docstring)."""
    provider = participant_create("Stadtwerke Nord", ["dso"])
    consumer = participant_create("Flex Aggregator", ["aggregator"])
    grid = metered_grid_create(provider, name="lv-sharing", feeders=feeders, meters_per_feeder=meters_per_feeder)
    grid.time_zone = "Europe/Berlin"
    grid.save(update_fields=["time_zone"])
    meters = list(twin.Meter.objects.filter(grid=grid).order_by("id"))
    gateway, source = gateway_client(provider, "gw-nord")
    receipt = ingest.telemetry_batch_receive(source=source, body=readings_json(power_readings([m.pk for m in meters], START, steps)),
                                             content_type="application/json")
    ingest.telemetry_batch_process(batch_id=receipt.batch.pk)
    feeder_rows = list(twin.Feeder.objects.filter(grid=grid).order_by("id"))
    agreement = agreement_in_state(provider, consumer, "active", feeder_iris=[feeder_rows[0].iri])
    world = HubWorld(provider=provider, consumer=consumer, grid=grid, feeders=feeder_rows, meters=meters, agreement=agreement,
                     run=run_with_results(grid), batch=receipt.batch)
    world.clients["provider_operator"] = user_client(provider, "nord-operator")
    world.clients["provider_steward"] = user_client(provider, "nord-steward", steward=True)
    world.clients["consumer"] = world.clients["consumer_wrong_purpose"] = oauth_client(consumer, "flex-client")
    world.clients["consumer_steward"] = user_client(consumer, "flex-steward", steward=True)  # a steward, of the consumer
    for state in ("expired", "revoked", "suspended"):
        other = participant_create(f"Aggregator {state}", ["aggregator"])
        agreement_in_state(provider, other, state, feeder_iris=[feeder_rows[0].iri])
        world.clients[state] = oauth_client(other, f"{state}-client")
        world.participants[state] = other
    world.participants["outsider"] = participant_create("Outsider Research", ["researcher"])
    world.clients["outsider"] = user_client(world.participants["outsider"], "outsider")
    world.clients["gateway"] = gateway
    world.clients["anonymous"] = APIClient()
    world.purposes = {persona: PURPOSE for persona in PERSONAS} | {"consumer_wrong_purpose": WRONG_PURPOSE}
    return world
