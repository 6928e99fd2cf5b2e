"""The hub's own records: agreements (ODRL 2.2 policies), OAuth2 API clients of participants, and the audit.

Credentials of users and gateways are `twin.models.Credential`; what they may do is decided in
`sharing.decisions`, from the agreements here.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from twin.models import Participant

DPV = "https://w3id.org/dpv#"
GT = "https://w3id.org/gridtwin/ontology#"


class Purpose(models.TextChoices):
    """Why a consumer uses the data: DPV purposes, extended with the grid purposes of the gridtwin profile."""

    NETWORK_PLANNING = "network_planning", "network planning"
    FLEXIBILITY_PROCUREMENT = "flexibility_procurement", "flexibility procurement"
    CONNECTION_STUDY = "connection_study", "connection study"
    RESEARCH = "research", "research and development"
    SERVICE_PROVISION = "service_provision", "service provision"


PURPOSE_IRIS = {
    Purpose.NETWORK_PLANNING: GT + "NetworkPlanning",
    Purpose.FLEXIBILITY_PROCUREMENT: GT + "FlexibilityProcurement",
    Purpose.CONNECTION_STUDY: GT + "ConnectionStudy",
    Purpose.RESEARCH: DPV + "ResearchAndDevelopment",
    Purpose.SERVICE_PROVISION: DPV + "ServiceProvision",
}


class DataCategory(models.TextChoices):
    """What kind of data a permission covers."""

    ASSET_METADATA = "asset_metadata", "asset metadata"
    TOPOLOGY = "topology", "topology"
    TELEMETRY = "telemetry", "telemetry"
    LOADFLOW_RESULTS = "loadflow_results", "load-flow results"
    VIOLATIONS = "violations", "violations"
    HOSTING_CAPACITY = "hosting_capacity", "hosting capacity"


class Resolution(models.TextChoices):
    """Finest time resolution a consumer may read telemetry at (coarser is always allowed)."""

    RAW = "raw", "raw"
    MIN15 = "15min", "15 minutes"
    HOUR = "hour", "hour"
    DAY = "day", "day"


RESOLUTION_ORDER = [Resolution.RAW, Resolution.MIN15, Resolution.HOUR, Resolution.DAY]


class GroupBy(models.TextChoices):
    """The provider-defined groups telemetry aggregates are computed over (never sets the consumer picks)."""

    GRID = "grid", "grid"
    FEEDER = "feeder", "feeder"
    TRANSFORMER = "transformer", "secondary substation (transformer)"


# Asset types an agreement's scope can name (the twin's asset models); telemetry follows the measured asset's type.
ASSET_TYPES = ["bus", "external_grid", "line", "transformer", "switch", "load", "static_generator", "storage", "ev_charger", "meter"]
# Fields an agreement can drop, and the twin fields each stands for.
DROPPABLE_FIELDS = {
    "owner": ("owner", "owner_iri", "telemetry_owner"),
    "name": ("name",),
    "coordinates": ("lon_degree", "lat_degree"),
    "profile": ("profile",),
    "measured_iri": ("measured_iri",),
}
PROHIBITIONS = ["distribute", "sell", "reidentify"]


def choice_list_errors(instance, allowed_by_field: dict[str, list[str]]) -> dict[str, str]:
    """Field → error for each JSON list field of `instance` that is not a list of its allowed values."""
    errors = {}
    for name, allowed in allowed_by_field.items():
        values = getattr(instance, name)
        if not isinstance(values, list) or any(v not in allowed for v in values):
            errors[name] = f"a list of {', '.join(allowed)}"
    return errors


class Agreement(models.Model):
    """A data-sharing agreement: an ODRL 2.2 `odrl:Agreement` from a provider (assigner) to a consumer (assignee).

    It permits reading the data `categories` of its scope (grids, feeders, asset types, listed assets; empty
    lists mean "all of the provider's") for one `purpose`, while valid, with obligations: fields dropped,
    telemetry no finer than `resolution`, aggregated over `group_by` groups of at least `min_group_size`
    meters, only data time-stamped within [`data_start`, `data_end`). Lifecycle: draft → offered → active →
    suspended / revoked / expired; only a steward of the provider activates; terms are immutable once offered
    (an amendment is a new version, `previous` points at the one it replaces).
    """

    class Status(models.TextChoices):
        DRAFT = "draft"
        OFFERED = "offered"
        ACTIVE = "active"
        SUSPENDED = "suspended"
        REVOKED = "revoked"
        EXPIRED = "expired"

    TERMS = ("provider", "consumer", "purpose", "valid_from", "valid_until", "grid_iris", "feeder_iris", "asset_types", "asset_iris",
             "categories", "dropped_fields", "data_start", "data_end", "resolution", "group_by", "min_group_size", "prohibitions",
             "attribution", "delete_after_days")

    uid = models.CharField(max_length=500, unique=True, help_text="The policy's IRI (odrl:uid).")
    version = models.PositiveIntegerField(default=1)
    previous = models.OneToOneField("self", null=True, blank=True, on_delete=models.PROTECT, related_name="amendment")
    provider = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="agreements_provided")
    consumer = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="agreements_consumed")
    purpose = models.CharField(max_length=40, choices=Purpose.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    valid_from = models.DateTimeField()
    valid_until = models.DateTimeField()
    grid_iris = models.JSONField(default=list, blank=True, help_text="Grids in scope (IRIs); empty: all of the provider's.")
    feeder_iris = models.JSONField(default=list, blank=True, help_text="Feeders in scope (IRIs); empty: every feeder of those grids.")
    asset_types = models.JSONField(default=list, blank=True,
                                   help_text=f"Asset types in scope; empty: all. One of {', '.join(ASSET_TYPES)}.")
    asset_iris = models.JSONField(default=list, blank=True, help_text="Listed assets (IRIs); empty: every asset of the scope.")
    categories = models.JSONField(default=list, help_text="Data categories permitted.")
    dropped_fields = models.JSONField(default=list, blank=True, help_text=f"Fields removed: {', '.join(DROPPABLE_FIELDS)}.")
    data_start = models.DateTimeField(null=True, blank=True, help_text="Only data time-stamped at or after this.")
    data_end = models.DateTimeField(null=True, blank=True, help_text="Only data time-stamped before this.")
    resolution = models.CharField(max_length=10, choices=Resolution.choices, default=Resolution.HOUR)
    group_by = models.CharField(max_length=20, choices=GroupBy.choices, default=GroupBy.FEEDER)
    min_group_size = models.PositiveIntegerField(default=5, help_text="Aggregates over fewer meters than this are suppressed (k).")
    prohibitions = models.JSONField(default=list, blank=True, help_text=f"Prohibited actions: {', '.join(PROHIBITIONS)}.")
    attribution = models.CharField(max_length=500, blank=True, help_text="Duty: attribute the data with this text.")
    delete_after_days = models.PositiveIntegerField(null=True, blank=True, help_text="Duty: delete the data this many days after reading.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    offered_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["consumer", "status"], name="agreement_consumer_idx"),
                   models.Index(fields=["provider", "status"], name="agreement_provider_idx")]

    def __str__(self) -> str:
        return f"{self.provider} → {self.consumer}: {self.get_purpose_display()} v{self.version} ({self.status})"

    def save(self, *args, **kwargs):
        """Refuses to change the terms of an agreement that is no longer a draft: an amendment is a new version."""
        if self.pk is not None:
            columns = [self._meta.get_field(name).attname for name in self.TERMS]
            stored = type(self).objects.filter(pk=self.pk).values("status", *columns).first()
            if stored and stored["status"] != self.Status.DRAFT and any(stored[c] != getattr(self, c) for c in columns):
                raise ValidationError("the terms of an agreement are frozen once it is offered: amend it (a new version)")
        super().save(*args, **kwargs)

    def clean(self) -> None:
        """Field-level rules the admin and the API share (the ODRL shapes judge the policy as a whole)."""
        errors = {}
        if self.valid_until and self.valid_from and self.valid_until <= self.valid_from:
            errors["valid_until"] = "must be after valid_from"
        if self.provider_id and self.provider_id == self.consumer_id:
            errors["consumer"] = "the consumer must differ from the provider"
        errors.update(choice_list_errors(self, {"categories": DataCategory.values, "asset_types": ASSET_TYPES,
                                                "dropped_fields": list(DROPPABLE_FIELDS), "prohibitions": PROHIBITIONS}))
        for name in ("grid_iris", "feeder_iris", "asset_iris"):
            values = getattr(self, name)
            if not isinstance(values, list) or any(not isinstance(v, str) or not v or len(v) > 500 or "\x00" in v for v in values):
                errors[name] = "a list of IRIs"
        if isinstance(self.categories, list) and not self.categories:
            errors["categories"] = "permit at least one data category"
        if self.data_start and self.data_end and self.data_end <= self.data_start:
            errors["data_end"] = "must be after data_start"
        if errors:
            raise ValidationError(errors)


class ApiClient(models.Model):
    """A participant's machine client: an OAuth2 application (client credentials) with its scopes, expiry and revocation.

    The client secret is hashed by django-oauth-toolkit on save and shown once when issued; access tokens are
    stored as checksums only (RFC 9700 storage).
    """

    application = models.OneToOneField(settings.OAUTH2_PROVIDER_APPLICATION_MODEL, on_delete=models.CASCADE, related_name="api_client")
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="api_clients")
    scopes = models.CharField(max_length=200, default="shared:read", help_text="Space-separated scopes this client may be granted.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.application.name} ({self.participant})"

    @property
    def is_usable(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())


class AuditEntry(models.Model):
    """One decision and what it let out: append-only (the database refuses UPDATE and DELETE) and hash-chained.

    `entry_hash` is the SHA-256 of `previous_hash` and the entry's fields (`sharing.audit.entry_digest`), so any
    change, removal or insertion breaks the chain that `manage.py verify_audit` walks.
    """

    at = models.DateTimeField(default=timezone.now)
    participant_iri = models.CharField(max_length=500, blank=True, help_text="Who asked (empty: anonymous).")
    credential = models.CharField(max_length=100, blank=True, help_text="Which credential: kind and id.")
    action = models.CharField(max_length=40)
    resource = models.CharField(max_length=60)
    purpose = models.CharField(max_length=40, blank=True)
    allowed = models.BooleanField()
    rule = models.CharField(max_length=200, help_text="The rule that decided (owner, agreement, deny …).")
    agreement_uid = models.CharField(max_length=500, blank=True)
    provider_iri = models.CharField(max_length=500, blank=True, help_text="Whose data the request was about, when known.")
    method = models.CharField(max_length=10, blank=True)
    path = models.CharField(max_length=500, blank=True)
    query = models.JSONField(default=dict, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True)
    records = models.PositiveIntegerField(default=0, help_text="How many records went out.")
    preview = models.BooleanField(default=False)
    previous_hash = models.CharField(max_length=64)
    entry_hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["provider_iri", "at"], name="audit_provider_idx"),
                   models.Index(fields=["participant_iri", "at"], name="audit_participant_idx")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.participant_iri or 'anonymous'} {self.action} {self.resource}: " \
               f"{'allowed' if self.allowed else 'denied'}"


class DatasetOffer(models.Model):
    """A provider's published offer (an ODRL 2.2 `odrl:Offer`): datasets of one grid that consumers may request, and on
    which terms.

    Its datasets are one per data category and per listed feeder (or per grid when it lists none), as
    `sharing.datasets` names them. The catalog shows a published offer to every participant whose roles are in
    `audience` (empty: any participant but the provider); a request names datasets of one offer and asks for a
    purpose among `purposes`, a resolution no finer than `resolution` and a period of at most `max_days`. The
    obligations (groups, k, fields dropped, prohibitions, duties) of the agreement an approval creates are the offer's.
    """

    uid = models.CharField(max_length=500, unique=True, help_text="The offer's IRI (odrl:uid).")
    provider = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="offers")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=2000)
    grid = models.ForeignKey("twin.Grid", on_delete=models.PROTECT, related_name="offers")
    feeder_iris = models.JSONField(default=list, blank=True, help_text="Feeders offered (IRIs), one dataset each; empty: the grid.")
    categories = models.JSONField(default=list, help_text="Data categories offered.")
    purposes = models.JSONField(default=list, help_text="Purposes a consumer may ask for.")
    resolution = models.CharField(max_length=10, choices=Resolution.choices, default=Resolution.HOUR,
                                  help_text="Finest telemetry resolution offered.")
    group_by = models.CharField(max_length=20, choices=GroupBy.choices, default=GroupBy.FEEDER)
    min_group_size = models.PositiveIntegerField(default=5)
    dropped_fields = models.JSONField(default=list, blank=True)
    prohibitions = models.JSONField(default=list, blank=True)
    attribution = models.CharField(max_length=500, blank=True)
    delete_after_days = models.PositiveIntegerField(null=True, blank=True)
    max_days = models.PositiveIntegerField(default=365, help_text="Longest validity period a request may ask for, in days.")
    audience = models.JSONField(default=list, blank=True, help_text="Participant roles it is shown to; empty: every participant.")
    published = models.BooleanField(default=False, help_text="Shown in the catalog.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.provider}: {self.title}"

    def clean(self) -> None:
        """The offer's own rules: its lists hold known values, its grid and feeders are the provider's."""
        errors = choice_list_errors(self, {"categories": DataCategory.values, "purposes": Purpose.values,
                                           "dropped_fields": list(DROPPABLE_FIELDS), "prohibitions": PROHIBITIONS,
                                           "audience": Participant.Role.values})
        for name in ("categories", "purposes"):
            if isinstance(getattr(self, name), list) and not getattr(self, name):
                errors[name] = "name at least one"
        if self.grid_id and self.provider_id and self.grid.owner_id != self.provider_id:
            errors["grid"] = "a grid of the provider"
        if self.grid_id and isinstance(self.feeder_iris, list):
            known = set(self.grid.feeders.filter(iri__in=[i for i in self.feeder_iris if isinstance(i, str)]).values_list("iri", flat=True))
            if any(iri not in known for iri in self.feeder_iris):
                errors["feeder_iris"] = "feeders of the grid (IRIs)"
        if self.max_days is not None and self.max_days < 1:
            errors["max_days"] = "at least one day"
        if errors:
            raise ValidationError(errors)


class AccessRequest(models.Model):
    """A consumer's request for datasets of one offer, and its path to an agreement.

    pending → approved (the steward put an agreement in force) | offered (the steward made it an offer on the
    requested terms) | countered (an offer on changed terms) | rejected (with a reason) | withdrawn (by the
    consumer); offered / countered → approved (the consumer accepted) | declined. `agreement` is the agreement the
    approval or counter-offer created; every step is audited.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        OFFERED = "offered"
        COUNTERED = "countered"
        APPROVED = "approved"
        REJECTED = "rejected"
        DECLINED = "declined"
        WITHDRAWN = "withdrawn"

    consumer = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="requests_made")
    provider = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="requests_received")
    offer = models.ForeignKey(DatasetOffer, on_delete=models.PROTECT, related_name="requests")
    datasets = models.JSONField(default=list, help_text="Dataset ids of the offer (sharing.datasets).")
    purpose = models.CharField(max_length=40, choices=Purpose.choices)
    valid_from = models.DateTimeField()
    valid_until = models.DateTimeField()
    resolution = models.CharField(max_length=10, choices=Resolution.choices, default=Resolution.HOUR)
    message = models.CharField(max_length=2000, blank=True, help_text="What the consumer says to the steward.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    counter_terms = models.JSONField(default=dict, blank=True, help_text="The terms a counter-offer changed (term → value).")
    reason = models.CharField(max_length=500, blank=True, help_text="The steward's reason (rejection, counter-offer).")
    agreement = models.OneToOneField(Agreement, null=True, blank=True, on_delete=models.PROTECT, related_name="request")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    answered_at = models.DateTimeField(null=True, blank=True, help_text="When the consumer accepted or declined an offer.")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["provider", "status"], name="request_provider_idx"),
                   models.Index(fields=["consumer", "status"], name="request_consumer_idx")]

    def __str__(self) -> str:
        return f"request {self.pk} of {self.consumer} to {self.provider} ({self.status})"
