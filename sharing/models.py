"""Participants' credentials. Agreements and the policy decision point come with the sharing issue."""

import secrets

from django.conf import settings
from django.db import models

from twin.credentials import hash_secret

TOKEN_PREFIX_CHARS = 8


class ApiToken(models.Model):
    """A user's API token, stored only as its hash; the prefix lets people tell tokens apart."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=TOKEN_PREFIX_CHARS, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(cls, *, user, name: str = "") -> tuple["ApiToken", str]:
        """Create a token and return it with the raw secret, which is shown once and never stored."""
        raw = secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, prefix=raw[:TOKEN_PREFIX_CHARS], token_hash=hash_secret(raw))
        return token, raw
