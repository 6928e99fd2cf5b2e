"""`Authorization: Token <secret>` against hashed tokens."""

from django.utils import timezone
from rest_framework import authentication, exceptions

from sharing.models import ApiToken
from twin.credentials import hash_secret


class HashedTokenAuthentication(authentication.TokenAuthentication):
    """DRF token authentication whose tokens are looked up by hash, never stored in clear."""

    def authenticate_credentials(self, key: str):
        token = ApiToken.objects.select_related("user").filter(token_hash=hash_secret(key), revoked=False).first()
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        return token.user, token
