"""The aggregator story of `make demo`, told through the real API in process (the same requests as the README tours).

The DSO's steward publishes an offer; the aggregator's OAuth2 client finds it in its catalog and requests one
feeder's hourly telemetry for flexibility procurement; the steward previews and approves (an agreement:
aggregated over groups of at least k meters, owners and coordinates removed). The aggregator reads the hourly
feeder aggregate, is refused raw data and the other feeders, queries its permitted graph in SPARQL; the DSO
reads the audit of who saw what, revokes, and the next read is refused.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count
from rest_framework.test import APIClient

from sharing.access_requests import request_preview_agreement
from sharing.models import AccessRequest, DataCategory, Purpose
from sharing.oauth import api_client_issue
from sharing.preview import access_preview
from twin import models as twin
from twin.models import Credential

PURPOSE = Purpose.FLEXIBILITY_PROCUREMENT
AGGREGATOR_IRI = f"{settings.GRIDTWIN_BASE_IRI}participant/flex-aggregator"
# Pairs of buses two lines apart: the two-hop topology query of the README and the SPARQL benchmark.
TWO_HOP_QUERY = """PREFIX gt: <https://w3id.org/gridtwin/ontology#>
SELECT ?a ?c WHERE { ?l1 gt:from_bus|gt:to_bus ?a . ?l1 gt:from_bus|gt:to_bus ?b . ?l2 gt:from_bus|gt:to_bus ?b .
  ?l2 gt:from_bus|gt:to_bus ?c . FILTER(?l1 != ?l2 && ?a != ?b && ?b != ?c && ?a != ?c) } LIMIT 1000"""


def _steward_client(participant: twin.Participant) -> APIClient:
    """The DSO's steward `demo-steward`: an API token for the story, and an admin login (staff) whose password is made
    once and kept in the demo folder (`steward-password.txt`, like the operator's `token.txt`)."""
    user, _ = get_user_model().objects.get_or_create(username="demo-steward")
    password_file = Path(settings.GRIDTWIN_DEMO_DIR) / "steward-password.txt"
    if not user.has_usable_password() or not password_file.exists():
        password = secrets.token_urlsafe(12)
        user.set_password(password)
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password + "\n")
    user.is_staff = True
    user.save()
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


def _dataset_of(catalog: dict, feeder: twin.Feeder, category: str) -> str:
    """The id of the catalog's dataset of one feeder and category."""
    return next(d["dct:identifier"] for d in catalog["dcat:dataset"]
                if d.get("gt:feeder", {}).get("@id") == feeder.iri and d["gt:dataCategory"] == category)


def aggregator_story(grid: twin.Grid, day: datetime, say: Callable[[str], None], k: int = 5) -> dict:
    """Run the story on `grid` for the replayed `day`; prints each step with `say`; returns what the checks need.

    The DSO's steward publishes an offer; the aggregator finds it in its DCAT catalog and requests one feeder's
    telemetry; the steward previews what the aggregator would see and approves; the aggregator reads, is refused
    what the agreement does not grant, queries its permitted graph in SPARQL; the DSO reads the audit, revokes, and
    the next read is refused.
    """
    provider = grid.owner
    aggregator, _ = twin.Participant.objects.get_or_create(iri=AGGREGATOR_IRI, defaults={"name": "Flex Aggregator",
                                                                                         "roles": ["aggregator"]})
    steward = _steward_client(provider)
    feeders = busiest_feeders(grid)
    shared = feeders[0]
    offer = steward.post("/api/v1/sharing/offers", {
        "title": f"Feeder telemetry of {grid.name}", "grid": grid.iri, "feeder_iris": [f.iri for f in feeders],
        "categories": [DataCategory.TELEMETRY, DataCategory.ASSET_METADATA, DataCategory.TOPOLOGY],
        "purposes": [PURPOSE, Purpose.NETWORK_PLANNING], "resolution": "hour", "group_by": "feeder", "min_group_size": k,
        "dropped_fields": ["owner", "coordinates"], "attribution": f"Data: {provider.name}", "max_days": 180,
        "audience": ["aggregator", "cpo"], "published": True}, format="json").json()
    say(f"steward of {provider.name} publishes offer {offer['id']}: {len(offer['datasets'])} datasets (telemetry, asset metadata and "
        f"topology of {len(feeders)} feeders), hourly or coarser, groups of at least {k}, for aggregators and charge-point operators")

    client = _aggregator_client(aggregator)
    catalog = client.get("/api/v1/shared/catalog", {"granted": "false", "grid": grid.iri, "limit": 1000}).json()
    say(f"aggregator's DCAT catalog: {catalog['count']} datasets it may request from {provider.name}")
    wanted = [_dataset_of(catalog, shared, c) for c in (DataCategory.TELEMETRY, DataCategory.ASSET_METADATA, DataCategory.TOPOLOGY)]
    now = datetime.now(UTC)
    made = client.post("/api/v1/sharing/requests", {
        "offer": offer["uid"], "datasets": wanted, "purpose": PURPOSE, "valid_from": (now - timedelta(days=1)).isoformat(),
        "valid_until": (now + timedelta(days=120)).isoformat(), "resolution": "hour",
        "message": "hourly feeder load for the winter flexibility tender"}, format="json").json()
    say(f"aggregator requests {', '.join(wanted)} for {PURPOSE}: request {made['id']} {made['status']}")

    preview = access_preview(request_preview_agreement(AccessRequest.objects.get(pk=made["id"])), steward_participant=provider,
                             credential="demo:steward")
    say("steward previews what the aggregator would see: " + ", ".join(f"{c.label} {c.count}" for c in preview.categories))
    approved = steward.post(f"/api/v1/sharing/requests/{made['id']}/approve", {"activate": True}, format="json").json()
    agreement = approved["agreement"]
    say(f"steward approves: agreement {agreement['id']} ({agreement['uid']}) {agreement['status']}")

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
    sparql = client.post(f"/api/v1/shared/sparql?purpose={PURPOSE}&agreement={agreement['id']}", data=TWO_HOP_QUERY,
                         content_type="application/sparql-query", HTTP_ACCEPT="application/sparql-results+json")
    rows = sparql.json()["results"]["bindings"] if sparql.status_code == 200 else []
    say(f"aggregator asks SPARQL for the buses two lines away from each other in its permitted graph: {sparql.status_code}, "
        f"{len(rows)} pairs")
    forbidden = client.post(f"/api/v1/shared/sparql?purpose={PURPOSE}&agreement={agreement['id']}",
                            data="SELECT * WHERE { SERVICE <http://example.org/sparql> { ?s ?p ?o } }",
                            content_type="application/sparql-query")
    say(f"aggregator tries SPARQL SERVICE to reach another endpoint: {forbidden.status_code} {forbidden.json().get('reason')}")
    audit = steward.get("/api/v1/sharing/audit", {"agreement_uid": agreement["uid"], "limit": 6}).json()["results"]
    say(f"{provider.name} reads the audit of agreement {agreement['id']}:")
    for entry in audit:
        asked = f"{entry['method']} {entry['path']}" if entry["path"] else entry["action"]
        say(f"  {entry['at'][:19]} {entry['participant_iri'].rsplit('/', 1)[-1]} {asked} "
            f"{'allowed' if entry['allowed'] else 'refused'} ({entry['rule']}) {entry['records']} record(s)")
    steward.post(f"/api/v1/sharing/agreements/{agreement['id']}/revoke", {"reason": "tender closed"}, format="json")
    after = client.get("/api/v1/shared/telemetry", base)
    say(f"steward revokes agreement {agreement['id']}; the aggregator's next read: {after.status_code} {after.json().get('reason')}")
    return {"agreement": agreement, "hourly": body, "raw_status": raw.status_code, "visible_feeders": visible, "audit": audit,
            "request": made, "preview": preview, "sparql_rows": len(rows), "sparql_status": sparql.status_code,
            "forbidden_status": forbidden.status_code, "after_revoke": after.status_code, "catalog_count": catalog["count"]}
