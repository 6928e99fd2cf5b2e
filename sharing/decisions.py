"""The one policy decision point: (principal, action, resource, purpose) → allowed or not, the restricted rows, obligations.

Every API request is decided here, through `sharing.api.base.PolicyViewSet`. Policies, in order:

1. **owner** — a participant's operators (users' tokens and sessions, or API clients with the `operator` scope)
   read and write what their participant owns: its grids and everything in them, its load-flow runs, its
   batches, and the readings its own gateways sent (provenance, `Meter.telemetry_owner`).
2. **gateway** — a gateway key sends telemetry batches and follows its own batches; nothing else.
3. **agreement** — a consumer (an API client with `shared:read`, or a user of the consumer participant) reads the
   `shared.*` views inside one agreement in force (active, within its validity period) that names the declared
   purpose and grants the data category; the rows are the agreement's scope, the obligations its terms.
4. **deny** — everything else. Out of scope is 404, indistinguishable from absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils import timezone

from sharing import scope
from sharing.models import DROPPABLE_FIELDS, AccessRequest, Agreement, AuditEntry, DataCategory, DatasetOffer, Purpose
from sharing.principals import CONSUMER, GATEWAY, OPERATOR, STEWARD, Principal
from twin import models as twin
from twin.ids import parse_id
from twin.selectors import points_of

VIEW, ADD, CHANGE = "view", "add", "change"
PURPOSE_PARAMETER = "purpose"
AGREEMENT_PARAMETER = "agreement"

# Operator resources: the model and the lookup from a row to the participant that owns it.
OWNED = {
    "grid": (twin.Grid, "owner"),
    "asset": (None, "grid__owner"),
    "run": (twin.LoadFlowRun, "grid__owner"),
    "violation": (twin.Violation, "grid__owner"),
    "batch": (twin.TelemetryBatch, "participant"),
}
# Third-party views: the data categories each one needs (an agreement granting any of them serves the view).
SHARED = {
    "shared.asset": (DataCategory.ASSET_METADATA,),
    "shared.topology": (DataCategory.TOPOLOGY,),
    "shared.telemetry": (DataCategory.TELEMETRY,),
    "shared.run": (DataCategory.LOADFLOW_RESULTS,),
    "shared.violation": (DataCategory.VIOLATIONS,),
    "shared.hosting": (DataCategory.HOSTING_CAPACITY,),
    # SPARQL over the permitted graph: the asset metadata, topology, violations and hosting capacity the agreement grants
    "shared.sparql": (DataCategory.ASSET_METADATA, DataCategory.TOPOLOGY, DataCategory.VIOLATIONS, DataCategory.HOSTING_CAPACITY),
}
# Request actions beyond view and add: a steward of the provider reviews (approve, reject, counter-offer); the consumer
# answers an offer (accept, decline) or withdraws its request.
REVIEW, ANSWER = "review", "answer"
RESOURCES = [*OWNED, "point", "vocabulary", *SHARED, "shared.catalog", "agreement", "offer", "request", "audit", "decision",
             "owner_consent"]


@dataclass(frozen=True)
class Obligations:
    """What a response must respect: fields removed, finest resolution, aggregation groups and k, time window, duties."""

    drop_fields: frozenset[str] = frozenset()
    resolution: str | None = None
    group_by: str | None = None
    min_group_size: int | None = None
    data_start: datetime | None = None
    data_end: datetime | None = None
    attribution: str = ""
    delete_after_days: int | None = None

    def as_dict(self) -> dict:
        return {"drop_fields": sorted(self.drop_fields), "resolution": self.resolution, "group_by": self.group_by,
                "min_group_size": self.min_group_size, "data_start": self.data_start, "data_end": self.data_end,
                "attribution": self.attribution, "delete_after_days": self.delete_after_days}


NO_OBLIGATIONS = Obligations()


@dataclass
class Decision:
    """The answer of the decision point. Denied decisions carry the HTTP status and reason the client sees."""

    allowed: bool
    rule: str
    queryset: QuerySet | None = None
    obligations: Obligations = NO_OBLIGATIONS
    agreement: Agreement | None = None
    provider: twin.Participant | None = None
    status: int = 200
    reason: str = ""
    message: str = ""
    details: dict = field(default_factory=dict)

    def explain(self) -> dict:
        """The decision without data: which policy (and agreement) allowed or denied it, and the obligations."""
        return {"allowed": self.allowed, "rule": self.rule, "reason": self.reason or None, "message": self.message or None,
                "agreement": self.agreement.uid if self.agreement else None,
                "obligations": self.obligations.as_dict() if self.allowed else None}


def _deny(status: int, reason: str, message: str, rule: str = "deny", **details) -> Decision:
    return Decision(allowed=False, rule=rule, status=status, reason=reason, message=message, details=details)


NOT_FOUND = ("not_found", "Not found.")


def decide(principal: Principal, action: str, resource: str, *, purpose: str | None = None, model=None,
           agreement: str | None = None, at: datetime | None = None, preview: Agreement | None = None) -> Decision:
    """Decide one request. `model` names the twin model of `asset` / `shared.asset` requests; `agreement` (id or uid)
    picks one of several agreements in force; `at` is the time of the decision (now).

    `preview` is a steward's access preview: the shared view is decided as if that agreement (perhaps a draft, or
    the terms a request would get) were the only one in force for its consumer; everything else is the same path.
    """
    if principal.ambiguous:
        return _deny(400, "participant_required", "you act for several participants: name one with ?participant=IRI",
                     rule="deny:ambiguous_participant")
    if principal.participant is None:
        return _deny(404, *NOT_FOUND, rule="deny:no_participant")
    if resource == "vocabulary":
        return Decision(allowed=True, rule="public")
    if principal.has(GATEWAY):
        return _gateway(principal, action, resource)
    if resource in OWNED or resource == "point":
        return _owner(principal, action, resource, model)
    if resource in SHARED:
        return _agreement(principal, action, resource, purpose=purpose, model=model, wanted=agreement, at=at or timezone.now(),
                          preview=preview)
    if resource == "shared.catalog":
        return _catalog(principal, action)
    if resource == "request":
        return _request(principal, action)
    if resource == "offer":
        return _offer(principal, action)
    if resource in ("agreement", "audit", "decision", "owner_consent"):
        return _hub(principal, action, resource)
    return _deny(404, *NOT_FOUND, rule="deny:unknown_resource")


def _gateway(principal: Principal, action: str, resource: str) -> Decision:
    if resource == "batch" and action in (VIEW, ADD):
        batches = twin.TelemetryBatch.objects.filter(participant=principal.participant, source=principal.source)
        return Decision(allowed=True, rule="gateway", queryset=batches, provider=principal.participant)
    return _deny(403, "not_permitted", "a gateway key only sends telemetry batches and follows its own", rule="deny:gateway")


def _owner(principal: Principal, action: str, resource: str, model) -> Decision:
    if not principal.has(OPERATOR):
        return _deny(403, "not_permitted", "this credential does not act as an operator", rule="deny:not_operator")
    participant = principal.participant
    if resource == "point":
        return Decision(allowed=True, rule="owner", queryset=points_of([participant.pk]), provider=participant)
    if action in (ADD, CHANGE) and resource in ("run", "asset"):  # where one may add: the grids one owns
        return Decision(allowed=True, rule="owner", queryset=twin.Grid.objects.filter(owner=participant), provider=participant)
    if resource == "batch" and action != VIEW:
        return _deny(403, "not_permitted", "only a gateway key (Authorization: Gateway <key>) sends readings", rule="deny:not_gateway")
    owned_model, lookup = OWNED[resource]
    rows = (model or owned_model).objects.filter(**{lookup: participant})
    return Decision(allowed=True, rule="owner", queryset=rows, provider=participant)


def agreements_in_force(participant_id: int, at: datetime) -> QuerySet[Agreement]:
    """The agreements a participant consumes that are active and within their validity period at `at`."""
    return Agreement.objects.filter(consumer_id=participant_id, status=Agreement.Status.ACTIVE, valid_from__lte=at,
                                    valid_until__gt=at).select_related("provider")


def _pick(candidates: list[Agreement], wanted: str | None) -> Agreement | Decision:
    if wanted:
        chosen = [a for a in candidates if str(a.pk) == wanted or a.uid == wanted]
        return chosen[0] if chosen else _deny(404, *NOT_FOUND, rule="deny:no_agreement")
    if len(candidates) > 1:
        return _deny(400, "agreement_required", "several agreements grant this: name one with ?agreement=<id or uid>",
                     rule="deny:ambiguous", agreements=[a.pk for a in candidates])
    return candidates[0]


def _agreement(principal: Principal, action: str, resource: str, *, purpose: str | None, model, wanted: str | None,
               at: datetime, preview: Agreement | None = None) -> Decision:
    if action != VIEW or not principal.has(CONSUMER):
        return _deny(403, "not_permitted", "this credential does not read shared views", rule="deny:not_consumer")
    if preview is not None and not purpose:
        purpose = preview.purpose
    if not purpose:
        return _deny(400, "purpose_required", f"declare the purpose of this request with ?{PURPOSE_PARAMETER}= "
                     f"({', '.join(Purpose.values)})", rule="deny:no_purpose")
    if purpose not in Purpose.values:
        return _deny(400, "unknown_purpose", f"purpose is one of {', '.join(Purpose.values)}", rule="deny:no_purpose")
    categories = SHARED[resource]
    label = categories[0] if len(categories) == 1 else resource.removeprefix("shared.")
    considered = [preview] if preview is not None else agreements_in_force(principal.participant.pk, at)
    in_force = [a for a in considered if set(categories) & set(a.categories)]
    candidates = [a for a in in_force if a.purpose == purpose]
    if not candidates:
        if in_force:
            denied = _deny(403, "purpose_not_granted", f"no agreement in force grants {label} for the purpose {purpose}",
                           rule="deny:purpose")
        else:
            denied = _deny(404, *NOT_FOUND, rule="deny:no_agreement")
        return _attributed(denied, principal, wanted)
    chosen = candidates[0] if preview is not None else _pick(candidates, wanted)
    if isinstance(chosen, Decision):
        return chosen
    rule = f"{'preview:' if preview is not None else ''}agreement:{label}"
    return Decision(allowed=True, rule=rule, queryset=shared_rows(chosen, resource, model), obligations=obligations_of(chosen),
                    agreement=chosen, provider=chosen.provider)


def _attributed(denied: Decision, principal: Principal, wanted: str | None) -> Decision:
    """A refusal of a read under a named agreement of the caller's own (revoked, expired, suspended …) is recorded against
    that agreement and its provider, so the provider's audit shows the refused read; the answer itself is unchanged."""
    if wanted:
        own = Agreement.objects.filter(consumer_id=principal.participant_id).select_related("provider")
        named = own.filter(pk=number).first() if (number := parse_id(wanted)) is not None else own.filter(uid=wanted).first()
        if named is not None:
            denied.agreement, denied.provider = named, named.provider
    return denied


def _catalog(principal: Principal, action: str) -> Decision:
    """The catalog: any consumer discovers what its agreements grant and which offers it may request (no purpose asked)."""
    if action != VIEW or not principal.has(CONSUMER):
        return _deny(403, "not_permitted", "this credential does not read the catalog", rule="deny:not_consumer")
    return Decision(allowed=True, rule="catalog")


def _offer(principal: Principal, action: str) -> Decision:
    """A provider's offers: its stewards write and publish them, its operators read them (consumers find them in the catalog)."""
    if action != VIEW and not principal.has(STEWARD):
        return _deny(403, "steward_required", "only a steward of the provider writes its offers", rule="deny:not_steward")
    if not (principal.has(STEWARD) or principal.has(OPERATOR)):
        return _deny(403, "not_permitted", "this credential does not read offers; see the catalog", rule="deny:not_permitted")
    participant = principal.participant
    return Decision(allowed=True, rule="owner" if action == VIEW else "steward", queryset=DatasetOffer.objects.filter(provider=participant),
                    provider=participant)


def _request(principal: Principal, action: str) -> Decision:
    """Access requests: a consumer makes, follows, answers and withdraws its own; a steward of the provider reviews the
    requests made to it. Someone else's request is 404 (as if absent)."""
    participant = principal.participant
    if action == REVIEW:
        if not principal.has(STEWARD):
            return _deny(403, "steward_required", "only a steward of the provider reviews a request", rule="deny:not_steward")
        return Decision(allowed=True, rule="steward", queryset=AccessRequest.objects.filter(provider=participant), provider=participant)
    if action in (ADD, ANSWER, CHANGE):
        if not principal.has(CONSUMER):
            return _deny(403, "not_permitted", "this credential does not request access", rule="deny:not_consumer")
        return Decision(allowed=True, rule="consumer", queryset=AccessRequest.objects.filter(consumer=participant))
    if not (principal.has(CONSUMER) or principal.has(STEWARD)):
        return _deny(403, "not_permitted", "this credential does not read requests", rule="deny:not_permitted")
    mine = Q(consumer=participant) | (Q(provider=participant) if principal.has(STEWARD) else Q(pk__in=[]))
    return Decision(allowed=True, rule="owner", queryset=AccessRequest.objects.filter(mine))


def shared_rows(agreement: Agreement, resource: str, model=None) -> QuerySet:
    """The rows a shared view may show under an agreement."""
    if resource in ("shared.asset", "shared.topology"):
        return scope.scope_assets(agreement, model or twin.Bus)
    if resource == "shared.telemetry":
        return scope.scope_points(agreement)
    if resource == "shared.sparql":
        return scope.scope_grids(agreement)
    if resource in ("shared.run", "shared.hosting"):
        return scope.scope_runs(agreement)
    return scope.scope_violations(agreement)


def obligations_of(agreement: Agreement) -> Obligations:
    """An agreement's terms as the obligations a response must respect."""
    dropped = frozenset(name for key in agreement.dropped_fields for name in DROPPABLE_FIELDS[key])
    return Obligations(drop_fields=dropped, resolution=agreement.resolution, group_by=agreement.group_by,
                       min_group_size=agreement.min_group_size, data_start=agreement.data_start, data_end=agreement.data_end,
                       attribution=agreement.attribution, delete_after_days=agreement.delete_after_days)


def _hub(principal: Principal, action: str, resource: str) -> Decision:
    """Agreements: a participant sees those it provides or consumes; its stewards write them. Audit: the provider's own."""
    participant = principal.participant
    if resource == "decision":
        return Decision(allowed=True, rule="explain")
    if resource == "agreement":
        if action != VIEW and not principal.has(STEWARD):
            return _deny(403, "steward_required", "only a steward of the provider writes agreements", rule="deny:not_steward")
        if action == VIEW and not (principal.has(OPERATOR) or principal.has(CONSUMER) or principal.has(STEWARD)):
            return _deny(403, "not_permitted", "this credential does not read agreements", rule="deny:not_permitted")
        rows = Agreement.objects.filter(Q(provider=participant) | Q(consumer=participant))
        if action != VIEW:
            rows = rows.filter(provider=participant)
        return Decision(allowed=True, rule="owner" if action == VIEW else "steward", queryset=rows, provider=participant)
    if resource == "owner_consent":
        if not principal.has(OPERATOR):
            return _deny(403, "not_permitted", "this credential does not act as an operator", rule="deny:not_operator")
        return Decision(allowed=True, rule="owner", queryset=twin.OwnerConsent.objects.filter(owner=participant), provider=participant)
    if not (principal.has(STEWARD) or principal.has(OPERATOR)):
        return _deny(403, "not_permitted", "this credential does not read the audit", rule="deny:not_permitted")
    return Decision(allowed=True, rule="owner", queryset=AuditEntry.objects.filter(provider_iri=participant.iri), provider=participant)
