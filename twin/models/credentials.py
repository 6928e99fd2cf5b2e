"""Credentials gridtwin issues: one model, one hash rule, for users' API tokens and gateways' keys.

A credential always acts for exactly one participant. The raw secret is shown once when issued and
only its SHA-256 is stored (`twin.credentials.hash_secret`); the prefix lets people tell them apart.
OAuth2 clients of third parties are django-oauth-toolkit applications (see `sharing.models.ApiClient`).
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from twin.credentials import hash_secret
from twin.models.grid import Participant

PREFIX_CHARS = 8


class Credential(models.Model):
    """A secret that authenticates requests for one participant: a user's API token or a gateway's key."""

    class Kind(models.TextChoices):
        TOKEN = "token", "user API token"
        GATEWAY = "gateway", "gateway key"

    SECRET_PREFIXES = {Kind.TOKEN: "gtt_", Kind.GATEWAY: "gtk_"}

    kind = models.CharField(max_length=10, choices=Kind.choices)
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="credentials")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="credentials",
                             help_text="The user a token belongs to (empty for gateway keys).")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=PREFIX_CHARS, editable=False)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Refused from this time on (empty: no expiry).")
    revoked_at = models.DateTimeField(null=True, blank=True, help_text="Refused from this time on.")

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=~models.Q(kind="token") | models.Q(user__isnull=False), name="credential_token_has_user"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.prefix}… ({self.participant})"

    @property
    def is_usable(self) -> bool:
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @classmethod
    def issue(cls, *, kind: str, participant: Participant, user=None, name: str = "", expires_at=None) -> tuple[Credential, str]:
        """Create a credential and return it with the raw secret, which is shown once and never stored."""
        body = secrets.token_urlsafe(32)
        raw = cls.SECRET_PREFIXES[kind] + body
        credential = cls.objects.create(kind=kind, participant=participant, user=user, name=name, prefix=body[:PREFIX_CHARS],
                                        secret_hash=hash_secret(raw), expires_at=expires_at)
        return credential, raw

    @classmethod
    def find(cls, raw: str, *, kind: str) -> Credential | None:
        """The usable credential of this kind whose secret is `raw` (by hash), or None."""
        now = timezone.now()
        found = (cls.objects.select_related("participant", "user")
                 .filter(kind=kind, secret_hash=hash_secret(raw), revoked_at__isnull=True)
                 .exclude(expires_at__lte=now).first())
        if found is not None:
            cls.objects.filter(pk=found.pk).update(last_used_at=now)
        return found

    def revoke(self) -> None:
        """Refuse this credential from now on."""
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])
