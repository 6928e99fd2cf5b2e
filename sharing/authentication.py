"""Authentication: `Authorization: Token <secret>` and `Gateway <key>` against hashed credentials, and OAuth2
client-credentials access tokens of API clients. Each only establishes the credential; `sharing.principals`
turns it into the request's principal and `sharing.decisions` decides what it may do."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework import authentication, exceptions

from sharing.principals import MachineUser
from twin.models import Credential

KEYWORDS = {"token": Credential.Kind.TOKEN, "gateway": Credential.Kind.GATEWAY}


class CredentialAuthentication(authentication.BaseAuthentication):
    """`Token <secret>` (a user's API token) or `Gateway <key>` (a telemetry source), looked up by hash."""

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower().decode("latin-1") not in KEYWORDS:
            return None
        keyword = parts[0].decode("latin-1").capitalize()
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(f"Invalid {keyword} header: give exactly one secret.")
        kind = KEYWORDS[keyword.lower()]
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed(f"Invalid or revoked {keyword.lower()}.") from exc
        credential = Credential.find(raw, kind=kind)
        if credential is None or (credential.user is not None and not credential.user.is_active):
            raise exceptions.AuthenticationFailed(f"Invalid, expired or revoked {keyword.lower()}.")
        user = credential.user if credential.user is not None else MachineUser(label=f"gateway {credential.name or credential.pk}")
        return user, credential

    def authenticate_header(self, request) -> str:
        return "Token"


class ApiClientAuthentication(OAuth2Authentication):
    """`Bearer <access token>` of an API client (OAuth2 client credentials); refused once the client expires or is revoked."""

    def authenticate(self, request):
        found = super().authenticate(request)
        if found is None:
            return None
        _, token = found
        client = getattr(token.application, "api_client", None) if token.application_id else None
        if client is None or not client.is_usable:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API client.")
        token.gridtwin_client = client
        return MachineUser(label=f"client {token.application.client_id}"), token


class CredentialScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes tokens and gateway keys."""

    target_class = CredentialAuthentication
    name = "credential"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Token <secret>` (a user's API token) or `Gateway <key>` (a telemetry source's key)."}


class ApiClientScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes OAuth2 client credentials."""

    target_class = ApiClientAuthentication
    name = "oauth2"

    def get_security_definition(self, auto_schema):
        return {"type": "oauth2", "flows": {"clientCredentials": {"tokenUrl": "/o/token/", "scopes": {
            "shared:read": "read the twin views your agreements grant", "operator": "act as an operator of your participant"}}}}
