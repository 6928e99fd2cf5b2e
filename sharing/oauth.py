"""OAuth2 API clients (client credentials): issue one with its secret shown once, rotate, revoke; per-client scopes."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import AccessToken, get_application_model
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.scopes import SettingsScopes

from sharing.models import ApiClient
from twin.models import Participant


class ApiClientScopes(SettingsScopes):
    """A client may be granted only the scopes its `ApiClient` lists (and only while it is usable)."""

    def get_available_scopes(self, application=None, request=None, *args, **kwargs):
        scopes = super().get_available_scopes(application, request, *args, **kwargs)
        client = getattr(application, "api_client", None) if application is not None else None
        if client is None or not client.is_usable:
            return []
        return [scope for scope in scopes if scope in client.scope_set]

    def get_default_scopes(self, application=None, request=None, *args, **kwargs):
        available = self.get_available_scopes(application, request, *args, **kwargs)
        return [scope for scope in super().get_default_scopes(application, request, *args, **kwargs) if scope in available]


class ApiClientValidator(OAuth2Validator):
    """Only a registered API client that is neither expired nor revoked authenticates at the token endpoint."""

    def authenticate_client(self, request, *args, **kwargs):
        if not super().authenticate_client(request, *args, **kwargs):
            return False
        client = getattr(request.client, "api_client", None)
        return client is not None and client.is_usable


@transaction.atomic
def api_client_issue(*, participant: Participant, name: str, scopes: str = "shared:read", expires_at=None) -> tuple[ApiClient, str, str]:
    """Register a machine client of a participant; returns it with its client id and raw secret (shown once, stored hashed)."""
    application_model = get_application_model()
    secret = application_model._meta.get_field("client_secret").default()
    application = application_model.objects.create(
        name=name[:255], client_type=application_model.CLIENT_CONFIDENTIAL,
        authorization_grant_type=application_model.GRANT_CLIENT_CREDENTIALS, client_secret=secret, hash_client_secret=True)
    client = ApiClient.objects.create(application=application, participant=participant, scopes=scopes, expires_at=expires_at)
    return client, application.client_id, secret


@transaction.atomic
def api_client_rotate(*, client: ApiClient) -> str:
    """A new secret for the client (the old one stops working); its live access tokens are revoked."""
    application = client.application
    secret = type(application)._meta.get_field("client_secret").default()
    application.client_secret = secret
    application.save()
    AccessToken.objects.filter(application=application).delete()
    return secret


@transaction.atomic
def api_client_revoke(*, client: ApiClient) -> None:
    """Refuse the client from the next request on: marked revoked and its access tokens deleted."""
    ApiClient.objects.filter(pk=client.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    AccessToken.objects.filter(application=client.application).delete()
