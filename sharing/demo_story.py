"""The aggregator story of `make demo`, told through the real API in process (the same requests as the README tour).

The DSO's steward drafts, offers and activates an agreement: the aggregator may read hourly telemetry of one
feeder for flexibility procurement, aggregated over groups of at least k meters, owners and coordinates removed.
The aggregator's OAuth2 client reads the hourly feeder aggregate, is refused raw data, sees nothing of the
other feeders, and the DSO reads the audit of who saw what.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count
from rest_framework.test import APIClient

from sharing.models import DataCategory, Purpose
from sharing.oauth import api_client_issue
from twin import models as twin
from twin.models import Credential

PURPOSE = Purpose.FLEXIBILITY_PROCUREMENT
AGGREGATOR_IRI = f"{settings.GRIDTWIN_BASE_IRI}participant/flex-aggregator"


def _steward_client(participant: twin.Participant) -> APIClient:
    user, _ = get_user_model().objects.get_or_create(username="demo-steward")
    participant.members.add(user)
    participant.stewards.add(user)
    _, raw = Credential.issue(kind=Credential.Kind.TOKEN, participant=participant, user=user, name="demo steward")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    return client


def _aggregator_client(aggregator: twin.Participant) -> APIClient:
    _, client_id, secret = api_client_issue(participant=aggregator, name="flex-aggregator demo client")
    client = APIClient()
    token = client.post("/o/token/", {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}).json()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token['access_token']}")
    return client


def busiest_feeders(grid: twin.Grid) -> list[twin.Feeder]:
    """The grid's feeders, most metered first (the story shares the first and keeps the others private)."""
    return list(twin.Feeder.objects.filter(grid=grid).annotate(n=Count("meters")).order_by("-n", "id"))


def aggregator_story(grid: twin.Grid, day: datetime, say: Callable[[str], None], k: int = 5) -> dict:
    """Run the story on `grid` for the replayed `day`; prints each step with `say`; returns what the checks need."""
    provider = grid.owner
    aggregator, _ = twin.Participant.objects.get_or_create(iri=AGGREGATOR_IRI, defaults={"name": "Flex Aggregator",
                                                                                         "roles": ["aggregator"]})
    steward = _steward_client(provider)
    feeders = busiest_feeders(grid)
    shared = feeders[0]
    now = datetime.now(UTC)
    terms = {"consumer": aggregator.iri, "purpose": PURPOSE, "valid_from": (now - timedelta(days=1)).isoformat(),
             "valid_until": (now + timedelta(days=120)).isoformat(), "grid_iris": [grid.iri], "feeder_iris": [shared.iri],
             "asset_types": [], "categories": [DataCategory.TELEMETRY, DataCategory.ASSET_METADATA], "resolution": "hour",
             "group_by": "feeder", "min_group_size": k, "dropped_fields": ["owner", "coordinates"],
             "attribution": f"Data: {provider.name}"}
    agreement = steward.post("/api/v1/sharing/agreements", terms, format="json").json()
    steward.post(f"/api/v1/sharing/agreements/{agreement['id']}/offer")
    agreement = steward.post(f"/api/v1/sharing/agreements/{agreement['id']}/activate").json()
    say(f"steward of {provider.name} activated agreement {agreement['id']} ({agreement['uid']}): {aggregator.name} may read hourly "
        f"telemetry of feeder {shared.name or shared.iri} for {PURPOSE}, groups of at least {k}, until {agreement['valid_until'][:10]}")

    client = _aggregator_client(aggregator)
    base = {"purpose": PURPOSE, "agreement": agreement["id"], "quantity": "active_power", "start": day.isoformat(),
            "end": (day + timedelta(days=1)).isoformat()}
    hourly = client.get("/api/v1/shared/telemetry", base)
    body = hourly.json()
    for group in body["series"]:
        peak = max(group["buckets"], key=lambda b: b["mean"], default=None)
        summary = "suppressed (fewer than k meters)" if group["suppressed"] else (
            f"{len(group['buckets'])} hourly buckets, peak mean {peak['mean'] * 1000:.2f} kW at {peak['ts']}" if peak else "no readings")
        say(f"aggregator reads feeder {group['group'].rsplit('/', 1)[-1]} over {group['meters']} meters: {summary}")
    raw = client.get("/api/v1/shared/telemetry", {**base, "resolution": "raw"})
    say(f"aggregator asks for raw readings: {raw.status_code} {raw.json().get('reason')}")
    meters = client.get("/api/v1/shared/meters", {"purpose": PURPOSE, "agreement": agreement["id"], "limit": 1000}).json()
    visible = {m["feeder"] for m in meters["results"]}
    others = [f for f in feeders[1:] if f.meters.exists()]
    say(f"aggregator sees {meters['count']} meters, all of feeder {shared.name or shared.iri}"
        + (f"; none of the {len(others)} other metered feeder(s)" if others else "") if visible <= {shared.iri} else "LEAK")
    elsewhere = twin.Feeder.objects.filter(grid__owner=provider).exclude(pk=shared.pk).order_by("id").first()
    if elsewhere is not None:
        other = client.get("/api/v1/shared/telemetry", {**base, "feeder": elsewhere.iri})
        say(f"aggregator asks for feeder {elsewhere.name or elsewhere.iri} of {elsewhere.grid.name}: {other.status_code} "
            f"{other.json().get('reason')} (outside the agreement, as if it did not exist)")
    operator = client.get("/api/v1/telemetry/readings", {**base, "feeder": shared.pk, "resolution": "hour", "group": "all"})
    say(f"aggregator tries the operator API: {operator.status_code} {operator.json().get('reason')}")
    audit = steward.get("/api/v1/sharing/audit", {"agreement_uid": agreement["uid"], "limit": 5}).json()["results"]
    say(f"{provider.name} reads the audit of agreement {agreement['id']}:")
    for entry in audit:
        asked = f"{entry['method']} {entry['path']}" if entry["path"] else entry["action"]
        say(f"  {entry['at'][:19]} {entry['participant_iri'].rsplit('/', 1)[-1]} {asked} "
            f"{'allowed' if entry['allowed'] else 'refused'} ({entry['rule']}) {entry['records']} record(s)")
    return {"agreement": agreement, "hourly": body, "raw_status": raw.status_code, "visible_feeders": visible, "audit": audit}
