"""`Authorization: Gateway <key>`: a telemetry source (one gateway of a participant) against hashed keys."""

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from twin.credentials import hash_secret
from twin.models import TelemetrySource


class TelemetrySourceAuthentication(authentication.BaseAuthentication):
    """Authenticates a gateway by its key, looked up by hash; request.user and request.auth are the source."""

    keyword = "Gateway"

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Invalid Gateway header: give exactly one key.")
        key = parts[1].decode("utf-8", errors="replace")
        source = TelemetrySource.objects.select_related("participant").filter(key_hash=hash_secret(key), revoked=False).first()
        if source is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked gateway key.")
        TelemetrySource.objects.filter(pk=source.pk).update(last_used_at=timezone.now())
        return source, source

    def authenticate_header(self, request) -> str:
        return self.keyword


class TelemetrySourceScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes the gateway key."""

    target_class = TelemetrySourceAuthentication
    name = "gatewayKey"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Gateway <key>`: the key of a telemetry source (issue_telemetry_key)."}
