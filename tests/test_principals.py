"""Principals: one participant per request, through one credential with its roles; expiry and revocation on the next request."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from sharing.models import ApiClient
from sharing.oauth import api_client_issue, api_client_revoke, api_client_rotate
from tests.hub import participant_create
from twin.models import Credential

pytestmark = pytest.mark.django_db


def token_request(client_id: str, secret: str, scope: str | None = None):
    body = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, **({"scope": scope} if scope else {})}
    return APIClient().post("/o/token/", body)


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_a_session_user_of_several_participants_names_one():
    north, south = participant_create("North", ["dso"]), participant_create("South", ["dso"])
    user = get_user_model().objects.create_user("both", password="pw-both-1")
    north.members.add(user)
    south.members.add(user)
    browser = APIClient()
    browser.force_login(user)
    refused = browser.get("/api/v1/grids/")
    assert refused.status_code == 400 and refused.json()["reason"] == "participant_required"
    assert browser.get("/api/v1/grids/", {"participant": south.iri}).status_code == 200
    assert browser.get("/api/v1/grids/", {"participant": "https://elsewhere.example/p"}).status_code == 404


def test_a_token_acts_for_its_participant_only_until_it_expires_or_is_revoked():
    north = participant_create("North", ["dso"])
    user = get_user_model().objects.create_user("op", password="pw-op-1")
    north.members.add(user)
    credential, raw = Credential.issue(kind=Credential.Kind.TOKEN, participant=north, user=user,
                                       expires_at=timezone.now() + timedelta(hours=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    assert client.get("/api/v1/grids/").status_code == 200
    assert credential.secret_hash != raw and raw not in str(Credential.objects.values_list().get(pk=credential.pk))
    Credential.objects.filter(pk=credential.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get("/api/v1/grids/").status_code == 401
    Credential.objects.filter(pk=credential.pk).update(expires_at=None)
    assert client.get("/api/v1/grids/").status_code == 200
    credential.revoke()
    assert client.get("/api/v1/grids/").status_code == 401
    north.members.remove(user)  # a valid token of a user who left the participant has no roles
    _, other = Credential.issue(kind=Credential.Kind.TOKEN, participant=north, user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {other}")
    assert client.get("/api/v1/grids/").status_code == 403


def test_an_api_client_gets_only_its_scopes_and_stops_at_expiry_rotation_and_revocation():
    aggregator = participant_create("Aggregator", ["aggregator"])
    client, client_id, secret = api_client_issue(participant=aggregator, name="bot")
    assert client.application.client_secret != secret  # stored hashed
    assert token_request(client_id, secret, scope="operator").status_code == 400  # not a scope of this client
    token = token_request(client_id, secret).json()
    assert token["scope"] == "shared:read"
    reader = bearer(token["access_token"])
    assert reader.get("/api/v1/grids/").status_code == 403  # shared:read is no operator
    assert reader.get("/api/v1/sharing/agreements").status_code == 200

    new_secret = api_client_rotate(client=client)
    assert reader.get("/api/v1/sharing/agreements").status_code == 401  # rotation revokes live tokens
    assert token_request(client_id, secret).status_code == 401 and token_request(client_id, new_secret).status_code == 200

    reader = bearer(token_request(client_id, new_secret).json()["access_token"])
    ApiClient.objects.filter(pk=client.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert reader.get("/api/v1/sharing/agreements").status_code == 401
    ApiClient.objects.filter(pk=client.pk).update(expires_at=None)
    api_client_revoke(client=client)
    assert reader.get("/api/v1/sharing/agreements").status_code == 401
    assert token_request(client_id, new_secret).status_code == 401


def test_an_operator_scoped_client_acts_as_an_operator():
    utility = participant_create("Utility", ["dso"])
    _, client_id, secret = api_client_issue(participant=utility, name="scada", scopes="operator shared:read")
    token = token_request(client_id, secret, scope="operator").json()
    assert bearer(token["access_token"]).get("/api/v1/grids/").status_code == 200
