"""Writes of the hub: agreements through their lifecycle (draft → offered → active → suspended / revoked / expired).

Every write is judged by the ODRL profile's shapes (`sharing.odrl.agreement_check`) and audited. Terms are
immutable once offered: an amendment is a new version that replaces the old one when it is activated.
"""

from __future__ import annotations

import uuid

from django.db import transaction
from django.utils import timezone

from ontology.errors import OntologyError
from sharing.audit import audit_record
from sharing.models import Agreement
from sharing.odrl import agreement_check
from twin.models import Participant

Status = Agreement.Status
TRANSITIONS = {
    "offer": ({Status.DRAFT}, Status.OFFERED),
    "activate": ({Status.OFFERED, Status.SUSPENDED}, Status.ACTIVE),
    "suspend": ({Status.ACTIVE}, Status.SUSPENDED),
    "revoke": ({Status.DRAFT, Status.OFFERED, Status.ACTIVE, Status.SUSPENDED}, Status.REVOKED),
}


class LifecycleError(OntologyError):
    """A lifecycle step that the agreement's state or the acting participant does not allow (409, or 403 for the actor)."""

    def __init__(self, reason: str, message: str, status: int = 409):
        super().__init__(message)
        self.reason, self.status = reason, status


def _audit(agreement: Agreement, *, actor: Participant, action: str, credential: str = "") -> None:
    audit_record(participant_iri=actor.iri, credential=credential, action=f"agreement.{action}", resource="agreement", purpose="",
                 allowed=True, rule="steward", agreement_uid=agreement.uid, provider_iri=agreement.provider.iri, method="",
                 path="", query={}, status_code=None, records=1)


@transaction.atomic
def agreement_create(*, provider: Participant, user=None, credential: str = "", **terms) -> Agreement:
    """A new draft agreement of `provider` (its steward acts); judged by the field rules and the ODRL shapes."""
    agreement = Agreement(provider=provider, created_by=user if getattr(user, "pk", None) else None, status=Status.DRAFT, **terms)
    if not agreement.uid:
        agreement.uid = f"urn:uuid:{uuid.uuid4()}"
    agreement.full_clean(exclude=["created_by", "activated_by", "previous"])
    agreement_check(agreement)
    agreement.save()
    _audit(agreement, actor=provider, action="create", credential=credential)
    return agreement


@transaction.atomic
def agreement_transition(*, agreement: Agreement, step: str, actor: Participant, user=None, reason: str = "",
                         credential: str = "") -> Agreement:
    """Move an agreement one lifecycle step (offer, activate, suspend, revoke) as a steward of `actor`.

    Only the provider's steward acts on an agreement; activating an amendment revokes the version it replaces.
    Expiry needs no step: an agreement past `valid_until` is out of force at the next request (and `expired` here).
    """
    agreement = Agreement.objects.select_for_update().get(pk=agreement.pk)
    if actor.pk != agreement.provider_id:
        raise LifecycleError("steward_required", "only a steward of the provider changes an agreement's state", status=403)
    allowed_from, target = TRANSITIONS[step]
    if agreement.status == Status.ACTIVE and agreement.valid_until <= timezone.now():
        agreement.status = Status.EXPIRED
    if agreement.status not in allowed_from:
        raise LifecycleError("invalid_transition", f"an agreement that is {agreement.status} cannot {step}")
    now = timezone.now()
    agreement.status = target
    if target == Status.OFFERED:
        agreement.offered_at = now
    elif target == Status.ACTIVE:
        agreement.activated_at, agreement.activated_by = now, user if getattr(user, "pk", None) else None
        _supersede(agreement, actor=actor, credential=credential)
    else:
        agreement.ended_at, agreement.end_reason = now, reason[:500]
    agreement.save()
    _audit(agreement, actor=actor, action=step, credential=credential)
    return agreement


def _supersede(agreement: Agreement, *, actor: Participant, credential: str) -> None:
    previous = agreement.previous
    if previous is not None and previous.status in (Status.ACTIVE, Status.SUSPENDED, Status.OFFERED, Status.DRAFT):
        previous.status, previous.ended_at = Status.REVOKED, timezone.now()
        previous.end_reason = f"superseded by version {agreement.version} ({agreement.uid})"
        previous.save(update_fields=["status", "ended_at", "end_reason"])
        _audit(previous, actor=actor, action="supersede", credential=credential)


@transaction.atomic
def agreement_amend(*, agreement: Agreement, actor: Participant, user=None, credential: str = "", **changes) -> Agreement:
    """A new draft version with changed terms; the old version stays in force until the new one is activated."""
    if actor.pk != agreement.provider_id:
        raise LifecycleError("steward_required", "only a steward of the provider amends an agreement", status=403)
    if hasattr(agreement, "amendment"):
        raise LifecycleError("already_amended", f"version {agreement.version} already has an amendment")
    terms = {name: getattr(agreement, name) for name in Agreement.TERMS if name != "provider"}
    terms.update(changes)
    base = agreement.uid.rsplit("/v", 1)[0] if agreement.uid.rsplit("/v", 1)[-1].isdigit() else agreement.uid
    return agreement_create(provider=agreement.provider, user=user, credential=credential, uid=f"{base}/v{agreement.version + 1}",
                            version=agreement.version + 1, previous=agreement, **terms)


def agreements_expire(*, now=None) -> int:
    """Mark active agreements past their validity as expired (they are out of force anyway; this keeps the list honest)."""
    now = now or timezone.now()
    return Agreement.objects.filter(status=Status.ACTIVE, valid_until__lte=now).update(status=Status.EXPIRED, ended_at=now,
                                                                                          end_reason="validity period ended")
