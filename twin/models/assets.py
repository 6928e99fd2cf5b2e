"""Grid assets. Field names carry their unit as pandapower's do; values follow CIM (CGMES) conventions.

Impedances are stored as CIM states them (total ohms / siemens of the element, transformer values
referred to the end that carries them), so the RDF form round-trips without any arithmetic.
"""

from django.db import models

from twin.models.fields import FiniteFloatField
from twin.models.grid import Bus, Feeder, GridPart, Participant


class Asset(GridPart):
    """Common fields of grid equipment: feeder membership, owner and in-service flag.

    `owner` empty means the grid's owner. `part_iris` keeps the IRIs of the CIM helper objects of the
    asset (terminals, transformer ends, tap changer, power-electronics unit, regulating control) so that
    an upload comes back with the IRIs it came with.
    """

    feeder = models.ForeignKey(Feeder, null=True, blank=True, on_delete=models.SET_NULL, related_name="%(class)ss")
    owner = models.ForeignKey(Participant, null=True, blank=True, on_delete=models.PROTECT, related_name="%(class)ss")
    in_service = models.BooleanField(default=True)
    part_iris = models.JSONField(default=dict, blank=True)

    class Meta(GridPart.Meta):
        abstract = True


class ExternalGrid(Asset):
    """Connection to the upstream grid, the slack (cim:ExternalNetworkInjection with a voltage control)."""

    bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="external_grids")
    vm_target_kv = FiniteFloatField(help_text="Voltage setpoint, kV.")
    va_degree = FiniteFloatField(default=0.0)
    reference_priority = models.IntegerField(default=1)


class Line(Asset):
    """An AC line or cable segment (cim:ACLineSegment); impedances are totals for the whole length."""

    from_bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="lines_from")
    to_bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="lines_to")
    length_km = FiniteFloatField()
    r_ohm = FiniteFloatField()
    x_ohm = FiniteFloatField()
    b_s = FiniteFloatField(default=0.0, help_text="Total positive-sequence shunt susceptance, S.")
    g_s = FiniteFloatField(default=0.0, help_text="Total positive-sequence shunt conductance, S.")
    max_i_ka = FiniteFloatField(null=True, blank=True)


class Transformer(Asset):
    """A two-winding transformer (cim:PowerTransformer with two ends); end 1 is the HV side.

    `r_ohm`…`b_s` belong to end 1 (referred to its rated voltage), `r2_ohm`…`b2_s` to end 2. The tap
    changer, when there is one, sits on `tap_side` and `tap_pos` is its current step.
    """

    TAP_SIDES = [("hv", "HV"), ("lv", "LV")]

    hv_bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="transformers_hv")
    lv_bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="transformers_lv")
    sn_mva = FiniteFloatField()
    vn_hv_kv = FiniteFloatField()
    vn_lv_kv = FiniteFloatField()
    r_ohm = FiniteFloatField()
    x_ohm = FiniteFloatField()
    g_s = FiniteFloatField(default=0.0)
    b_s = FiniteFloatField(default=0.0)
    r2_ohm = FiniteFloatField(default=0.0)
    x2_ohm = FiniteFloatField(default=0.0)
    g2_s = FiniteFloatField(default=0.0)
    b2_s = FiniteFloatField(default=0.0)
    phase_angle_clock = models.IntegerField(default=0, help_text="Vector group clock number of end 2 (times 30 degrees).")
    tap_side = models.CharField(max_length=2, choices=TAP_SIDES, blank=True)
    tap_low = models.IntegerField(null=True, blank=True)
    tap_high = models.IntegerField(null=True, blank=True)
    tap_neutral = models.IntegerField(null=True, blank=True)
    tap_normal = models.IntegerField(null=True, blank=True)
    tap_pos = FiniteFloatField(null=True, blank=True)
    tap_step_percent = FiniteFloatField(null=True, blank=True)


class Switch(Asset):
    """A switching device between two buses (cim:Switch and its kinds: breaker, load-break switch …)."""

    KINDS = [
        ("switch", "Switch"),
        ("breaker", "Breaker"),
        ("load_break_switch", "Load-break switch"),
        ("disconnector", "Disconnector"),
        ("fuse", "Fuse"),
    ]

    bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="switches")
    other_bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="switches_other")
    kind = models.CharField(max_length=20, choices=KINDS, default="switch")
    open = models.BooleanField(default=False)
    normal_open = models.BooleanField(default=False)


class Load(Asset):
    """A consumer (cim:EnergyConsumer), load convention: positive p_mw is consumption."""

    bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="loads")
    p_mw = FiniteFloatField()
    q_mvar = FiniteFloatField()
    profile = models.CharField(max_length=100, blank=True)


class StaticGenerator(Asset):
    """An inverter-connected generator (cim:PowerElectronicsConnection + PV / wind / other unit).

    Generator convention as in pandapower: positive p_mw is generation (CIM's p is its negative).
    """

    KINDS = [("pv", "Photovoltaic"), ("wind", "Wind"), ("other", "Other")]

    bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="static_generators")
    kind = models.CharField(max_length=10, choices=KINDS, default="pv")
    p_mw = FiniteFloatField()
    q_mvar = FiniteFloatField(default=0.0)
    sn_mva = FiniteFloatField(null=True, blank=True)
    profile = models.CharField(max_length=100, blank=True)


class Storage(Asset):
    """A battery (cim:PowerElectronicsConnection + cim:BatteryUnit); positive p_mw is charging."""

    bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="storages")
    p_mw = FiniteFloatField(default=0.0)
    q_mvar = FiniteFloatField(default=0.0)
    sn_mva = FiniteFloatField(null=True, blank=True)
    max_e_mwh = FiniteFloatField()
    stored_e_mwh = FiniteFloatField(null=True, blank=True)
    profile = models.CharField(max_length=100, blank=True)

    class Meta(Asset.Meta):
        verbose_name_plural = "storage units"


class EVCharger(Asset):
    """An EV charging station (gt:EVChargingStation, a cim:EnergyConsumer and a saref:Device)."""

    bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="ev_chargers")
    p_mw = FiniteFloatField(default=0.0)
    q_mvar = FiniteFloatField(default=0.0)
    max_p_mw = FiniteFloatField()
    connector_count = models.PositiveIntegerField(default=1)
    profile = models.CharField(max_length=100, blank=True)

    class Meta(Asset.Meta):
        verbose_name = "EV charger"


class Meter(Asset):
    """A meter or measurement point (saref:Meter) reporting the quantities of one bus or asset."""

    KINDS = [
        ("smart_meter", "Smart meter"),
        ("pv_inverter", "PV inverter"),
        ("ev_charger", "EV charger"),
        ("battery", "Battery management system"),
        ("grid_meter", "Grid meter"),
    ]

    measured_iri = models.CharField(max_length=500, help_text="IRI of the bus or asset this meter measures.")
    kind = models.CharField(max_length=20, choices=KINDS, default="smart_meter")
    telemetry_owner = models.ForeignKey(
        Participant, null=True, blank=True, editable=False, on_delete=models.PROTECT, related_name="+",
        help_text="Provenance: the participant whose gateway sent this meter's readings (fixed by the first one stored).")
    retired_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="Set when a re-publish dropped a meter that has readings: retired, never deleted, so its readings stay.")


ASSET_MODELS = [ExternalGrid, Line, Transformer, Switch, Load, StaticGenerator, Storage, EVCharger, Meter]
