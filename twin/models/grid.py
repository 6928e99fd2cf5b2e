"""Participants, grids and the grid's skeleton: feeders, base voltages and buses."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from twin.models.fields import FiniteFloatField


class Participant(models.Model):
    """An organisation taking part in the hub (utility, aggregator, researcher …), as org:Organization.

    `members` are the users who act for it (operators); `stewards` those of them who also hold its data
    steward role (they manage its agreements, API clients and audit).
    """

    class Role(models.TextChoices):
        DSO = "dso", "distribution system operator"
        AGGREGATOR = "aggregator", "aggregator"
        CHARGE_POINT_OPERATOR = "cpo", "charge-point operator"
        RESEARCHER = "researcher", "researcher"
        PEER_HUB = "peer_hub", "peer hub"

    iri = models.CharField(max_length=500, unique=True)
    name = models.CharField(max_length=200)
    roles = models.JSONField(default=list, blank=True, help_text="Roles of the organisation: dso, aggregator, cpo, researcher, peer_hub.")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="participants")
    stewards = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="stewarded_participants",
                                      help_text="Members holding the data steward role of this participant.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Grid(models.Model):
    """One published grid model, owned by one participant; `version` is the number of its latest `GridVersion`."""

    iri = models.CharField(max_length=500, unique=True)
    name = models.CharField(max_length=200)
    owner = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="grids")
    source = models.CharField(max_length=200, blank=True, help_text="Where the model came from (file, SimBench code, CGMES).")
    version = models.PositiveIntegerField(default=1)
    time_zone = models.CharField(max_length=64, default="UTC",
                                 help_text="IANA time zone of the grid: days of its aggregates are local days.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class GridPart(models.Model):
    """Common fields of everything that belongs to a grid and has its own stable IRI.

    A retired row (`retired_at`) is no longer part of the grid (not in its versions, exports, lists or load flows) but
    stays for what refers to it: readings, finished runs' results. Publishing its IRI again brings the same row back.
    """

    iri = models.CharField(max_length=500, unique=True)
    grid = models.ForeignKey(Grid, on_delete=models.CASCADE, related_name="%(class)ss")
    name = models.CharField(max_length=200, blank=True)
    retired_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="Set when a write removed a row that readings, results or other kept rows refer to: retired, never deleted.")

    class Meta:
        abstract = True
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name or self.iri

    def clean(self) -> None:
        """Judge the edited row by the SHACL shapes, as an upload would be (admin saves come through here)."""
        from twin.services import twin_object_check  # services import models

        if self.grid_id is None:
            return
        report = twin_object_check(self)
        if not report.conforms:
            raise ValidationError([f"{v.message} ({v.path or v.focus_node})" for v in report.violations])


class Feeder(GridPart):
    """A feeder (cim:Feeder): the part of a grid supplied from one substation outlet."""


class BaseVoltage(GridPart):
    """A nominal voltage level of the grid (cim:BaseVoltage), in kV."""

    nominal_voltage_kv = FiniteFloatField()


class Bus(GridPart):
    """A node of the grid (cim:TopologicalNode); `sv_*` keep a CGMES state-variable solution when given."""

    base_voltage = models.ForeignKey(BaseVoltage, on_delete=models.CASCADE, related_name="buses")
    feeder = models.ForeignKey(Feeder, null=True, blank=True, on_delete=models.SET_NULL, related_name="buses")
    lon_degree = FiniteFloatField(null=True, blank=True)
    lat_degree = FiniteFloatField(null=True, blank=True)
    sv_v_kv = FiniteFloatField(null=True, blank=True, help_text="Solved voltage magnitude from a CGMES SV profile, kV.")
    sv_angle_degree = FiniteFloatField(null=True, blank=True, help_text="Solved voltage angle from a CGMES SV profile.")
    part_iris = models.JSONField(default=dict, blank=True)

    class Meta(GridPart.Meta):
        verbose_name_plural = "buses"

    @property
    def vn_kv(self) -> float:
        return self.base_voltage.nominal_voltage_kv


class OwnerConsent(models.Model):
    """A participant's consent to be named as owner (`gt:owner`) of assets in another participant's grid.

    Ownership is provenance, not a writable field: a grid owner may name another participant as an asset's
    owner only when that participant has consented for that grid (e.g. a charge-point operator's chargers in a
    utility's grid). Keyed by the grid's IRI, so consenting reveals nothing about grids one cannot see.
    """

    owner = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="owner_consents")
    grid_iri = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "grid_iri"], name="owner_consent_unique")]

    def __str__(self) -> str:
        return f"{self.owner} may be named owner in {self.grid_iri}"
