"""Access requests: a consumer asks for datasets of an offer; a steward of the provider approves, rejects or counter-offers.

    pending ──approve──▶ approved (agreement active)
       │   └─approve as offer─▶ offered ──accept──▶ approved
       │   └─counter-offer────▶ countered ─accept─▶ approved
       ├──reject (reason)──▶ rejected            offered / countered ──decline──▶ declined
       └──withdraw──▶ withdrawn (also from offered / countered)

Approval and counter-offer create the agreement through `sharing.services` (judged by the ODRL shapes, audited),
with the terms the request asked for and the obligations the offer sets. An offer the steward made (approval as
an offer, or a counter-offer) is the steward's consent to those terms: the consumer's acceptance puts it in force
on the provider's behalf, recorded as activated by that steward. Every step is audited (`request.<step>`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from sharing import services
from sharing.audit import audit_record
from sharing.datasets import offer_datasets, parse_dataset_id
from sharing.models import RESOLUTION_ORDER, AccessRequest, Agreement, DatasetOffer, Resolution
from twin.models import Participant

Status = AccessRequest.Status
AWAITING_CONSUMER = (Status.OFFERED, Status.COUNTERED)
# What a counter-offer may change; everything else comes from the request and its offer.
COUNTERABLE_TERMS = ("valid_from", "valid_until", "resolution", "categories", "feeder_iris", "group_by", "min_group_size",
                     "dropped_fields", "data_start", "data_end", "delete_after_days", "attribution")
MAX_DATASETS = 200


class RequestError(services.LifecycleError):
    """A request step refused: the request's state (409), the actor (403), or terms outside the offer (400)."""


def _audit(req: AccessRequest, *, actor: Participant, step: str, credential: str = "", details: dict | None = None) -> None:
    audit_record(participant_iri=actor.iri, credential=credential, action=f"request.{step}", resource="request", purpose=req.purpose,
                 allowed=True, rule="consumer" if actor.pk == req.consumer_id else "steward",
                 agreement_uid=req.agreement.uid if req.agreement_id else "", provider_iri=req.provider.iri, method="", path="",
                 query={"request": str(req.pk), "status": req.status, **(details or {})}, status_code=None, records=1)


def visible_offers(consumer: Participant) -> QuerySet[DatasetOffer]:
    """The published offers a participant may request: of other providers, addressed to any of its roles (or to everyone).

    The audience test runs in Python over the published offers (few, and SQLite has no JSON containment)."""
    offers = DatasetOffer.objects.filter(published=True).exclude(provider=consumer).select_related("provider", "grid")
    roles = {role for role in consumer.roles or [] if isinstance(role, str)}
    shown = [pk for pk, audience in offers.values_list("pk", "audience") if not audience or roles & set(audience)]
    return offers.filter(pk__in=shown)


def _offer_for(consumer: Participant, dataset_ids: list[str], offer: DatasetOffer | None) -> DatasetOffer:
    """The visible offer whose datasets include every requested one (404 for any dataset outside the caller's catalog)."""
    keys = [parse_dataset_id(text) for text in dataset_ids]
    if any(key is None for key in keys):
        raise RequestError("no_such_dataset", "no such dataset in your catalog", status=404)
    candidates = list(visible_offers(consumer).filter(pk=offer.pk) if offer is not None else visible_offers(consumer))
    wanted = set(keys)
    for candidate in candidates:
        if wanted <= set(offer_datasets(candidate)):
            return candidate
    raise RequestError("no_such_dataset", "no such dataset in your catalog (or not all in one offer)", status=404)


def _check_terms(offer: DatasetOffer, *, purpose: str, valid_from: datetime, valid_until: datetime, resolution: str) -> None:
    if purpose not in offer.purposes:
        raise RequestError("purpose_not_offered", f"the offer is for {', '.join(offer.purposes)}", status=400)
    if RESOLUTION_ORDER.index(resolution) < RESOLUTION_ORDER.index(offer.resolution):
        raise RequestError("resolution_not_offered", f"the offer's finest resolution is {offer.resolution}", status=400)
    if valid_until <= valid_from:
        raise RequestError("invalid_period", "valid_until must be after valid_from", status=400)
    if valid_until <= timezone.now():
        raise RequestError("invalid_period", "valid_until is in the past", status=400)
    if valid_until - valid_from > timedelta(days=offer.max_days):
        raise RequestError("period_not_offered", f"the offer grants at most {offer.max_days} days", status=400)


@transaction.atomic
def request_create(*, consumer: Participant, datasets: list[str], purpose: str, valid_from: datetime, valid_until: datetime,
                   resolution: str = Resolution.HOUR, message: str = "", offer: DatasetOffer | None = None, user=None,
                   credential: str = "") -> AccessRequest:
    """A pending request of `consumer` for datasets of one offer in its catalog, for a purpose, period and resolution."""
    dataset_ids = sorted(set(datasets))
    if not dataset_ids or len(dataset_ids) > MAX_DATASETS:
        raise RequestError("invalid_datasets", f"name between 1 and {MAX_DATASETS} datasets", status=400)
    chosen = _offer_for(consumer, dataset_ids, offer)
    _check_terms(chosen, purpose=purpose, valid_from=valid_from, valid_until=valid_until, resolution=resolution)
    req = AccessRequest.objects.create(consumer=consumer, provider=chosen.provider, offer=chosen, datasets=dataset_ids, purpose=purpose,
                                       valid_from=valid_from, valid_until=valid_until, resolution=resolution, message=message[:2000],
                                       created_by=user if getattr(user, "pk", None) else None)
    _audit(req, actor=consumer, step="create", credential=credential)
    return req


def request_terms(req: AccessRequest, changes: dict | None = None) -> dict:
    """The agreement terms an approval of the request creates (the request's asks, the offer's obligations), with changes."""
    offer = req.offer
    keys = [parse_dataset_id(text) for text in req.datasets]
    feeder_ids = sorted({key.feeder_id for key in keys if key.feeder_id is not None})
    feeder_iris = sorted(offer.grid.feeders.filter(pk__in=feeder_ids).values_list("iri", flat=True)) if feeder_ids else []
    categories = list(dict.fromkeys(key.category for key in keys))
    terms = {"consumer": req.consumer, "purpose": req.purpose, "valid_from": req.valid_from, "valid_until": req.valid_until,
             "grid_iris": [offer.grid.iri], "feeder_iris": feeder_iris, "asset_types": [], "asset_iris": [], "categories": categories,
             "dropped_fields": list(offer.dropped_fields), "data_start": None, "data_end": None, "resolution": req.resolution,
             "group_by": offer.group_by, "min_group_size": offer.min_group_size, "prohibitions": list(offer.prohibitions),
             "attribution": offer.attribution, "delete_after_days": offer.delete_after_days}
    terms.update(changes or {})
    return terms


def request_preview_agreement(req: AccessRequest, changes: dict | None = None) -> Agreement:
    """An unsaved agreement with the terms an approval would create: what the steward previews before granting."""
    return Agreement(provider=req.provider, uid=f"urn:gridtwin:preview:request:{req.pk}", status=Agreement.Status.DRAFT,
                     **request_terms(req, changes))


def _locked(req: AccessRequest, allowed: tuple[str, ...], step: str) -> AccessRequest:
    rows = AccessRequest.objects.select_for_update(of=("self",)).select_related("offer__grid", "provider", "consumer", "agreement")
    req = rows.get(pk=req.pk)
    if req.status not in allowed:
        raise RequestError("invalid_transition", f"a request that is {req.status} cannot be {step}")
    return req


def _as_steward(req: AccessRequest, actor: Participant) -> None:
    if actor.pk != req.provider_id:
        raise RequestError("steward_required", "only a steward of the provider reviews a request", status=403)


def _as_consumer(req: AccessRequest, actor: Participant) -> None:
    if actor.pk != req.consumer_id:
        raise RequestError("consumer_required", "only the requesting consumer answers or withdraws a request", status=403)


def _agreement_for(req: AccessRequest, *, user, credential: str, changes: dict | None = None) -> Agreement:
    agreement = services.agreement_create(provider=req.provider, user=user, credential=credential, **request_terms(req, changes))
    return services.agreement_transition(agreement=agreement, step="offer", actor=req.provider, user=user, credential=credential)


def _decided(req: AccessRequest, status: str, user) -> None:
    req.status, req.decided_at = status, timezone.now()
    req.decided_by = user if getattr(user, "pk", None) else None


def _answered(req: AccessRequest, status: str) -> None:
    req.status, req.answered_at = status, timezone.now()


def _saved(req: AccessRequest, *, actor: Participant, step: str, credential: str, details: dict | None = None) -> AccessRequest:
    """Store the step's outcome and audit it."""
    req.save()
    _audit(req, actor=actor, step=step, credential=credential, details=details)
    return req


@transaction.atomic
def request_approve(*, req: AccessRequest, actor: Participant, user=None, activate: bool = True, credential: str = "") -> AccessRequest:
    """Grant the request as asked: an agreement put in force now (`activate`), or offered for the consumer to accept."""
    _as_steward(req, actor)
    req = _locked(req, (Status.PENDING,), "approved")
    agreement = _agreement_for(req, user=user, credential=credential)
    if activate:
        agreement = services.agreement_transition(agreement=agreement, step="activate", actor=req.provider, user=user,
                                                  credential=credential)
    req.agreement = agreement
    _decided(req, Status.APPROVED if activate else Status.OFFERED, user)
    return _saved(req, actor=actor, step="approve", credential=credential)


@transaction.atomic
def request_counter(*, req: AccessRequest, actor: Participant, changes: dict, reason: str = "", user=None,
                    credential: str = "") -> AccessRequest:
    """Offer changed terms (only COUNTERABLE_TERMS): an offered agreement the consumer accepts or declines."""
    _as_steward(req, actor)
    unknown = sorted(set(changes) - set(COUNTERABLE_TERMS))
    if unknown or not changes:
        raise RequestError("invalid_counter_offer", f"a counter-offer changes some of {', '.join(COUNTERABLE_TERMS)}"
                           + (f"; not {', '.join(unknown)}" if unknown else ""), status=400)
    req = _locked(req, (Status.PENDING,), "counter-offered")
    req.agreement = _agreement_for(req, user=user, credential=credential, changes=changes)
    req.counter_terms = {name: value.isoformat() if isinstance(value, datetime) else value for name, value in changes.items()}
    req.reason = reason[:500]
    _decided(req, Status.COUNTERED, user)
    return _saved(req, actor=actor, step="counter", credential=credential, details={"changed": sorted(changes)})


@transaction.atomic
def request_reject(*, req: AccessRequest, actor: Participant, reason: str, user=None, credential: str = "") -> AccessRequest:
    """Refuse the request, saying why."""
    _as_steward(req, actor)
    if not reason.strip():
        raise RequestError("reason_required", "say why the request is rejected", status=400)
    req = _locked(req, (Status.PENDING,), "rejected")
    req.reason = reason[:500]
    _decided(req, Status.REJECTED, user)
    return _saved(req, actor=actor, step="reject", credential=credential)


@transaction.atomic
def request_accept(*, req: AccessRequest, actor: Participant, credential: str = "") -> AccessRequest:
    """The consumer accepts the steward's offer: the agreement goes in force, activated on the steward's behalf."""
    _as_consumer(req, actor)
    req = _locked(req, AWAITING_CONSUMER, "accepted")
    req.agreement = services.agreement_transition(agreement=req.agreement, step="activate", actor=req.provider, user=req.decided_by,
                                                  credential=credential)
    _answered(req, Status.APPROVED)
    return _saved(req, actor=actor, step="accept", credential=credential)


@transaction.atomic
def request_decline(*, req: AccessRequest, actor: Participant, reason: str = "", credential: str = "") -> AccessRequest:
    """The consumer declines the steward's offer: the offered agreement is revoked."""
    _as_consumer(req, actor)
    req = _locked(req, AWAITING_CONSUMER, "declined")
    why = f"declined by the consumer{': ' + reason if reason else ''}"
    req.agreement = services.agreement_transition(agreement=req.agreement, step="revoke", actor=req.provider, reason=why,
                                                  credential=credential)
    _answered(req, Status.DECLINED)
    return _saved(req, actor=actor, step="decline", credential=credential)


@transaction.atomic
def request_withdraw(*, req: AccessRequest, actor: Participant, credential: str = "") -> AccessRequest:
    """The consumer withdraws a request not yet in force (an offered agreement is revoked)."""
    _as_consumer(req, actor)
    req = _locked(req, (Status.PENDING, *AWAITING_CONSUMER), "withdrawn")
    if req.agreement_id:
        req.agreement = services.agreement_transition(agreement=req.agreement, step="revoke", actor=req.provider,
                                                      reason="request withdrawn by the consumer", credential=credential)
    _answered(req, Status.WITHDRAWN)
    return _saved(req, actor=actor, step="withdraw", credential=credential)
