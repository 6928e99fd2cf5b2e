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


class RatioTapChangerFields(models.Model):
    """The ratio tap changer of a transformer (cim:RatioTapChanger): its side, step range and position, step in %.

    Shared by two- and three-winding transformers; each names its own `tap_side` choices.
    """

    tap_side = models.CharField(max_length=2, blank=True)
    tap_low = models.IntegerField(null=True, blank=True)
    tap_high = models.IntegerField(null=True, blank=True)
    tap_neutral = models.IntegerField(null=True, blank=True)
    tap_normal = models.IntegerField(null=True, blank=True)
    tap_pos = FiniteFloatField(null=True, blank=True)
    tap_step_percent = FiniteFloatField(null=True, blank=True)

    class Meta:
        abstract = True


class Transformer(Asset, RatioTapChangerFields):  # noqa: DJ008 (__str__ is GridPart's)
    """A two-winding transformer (cim:PowerTransformer with two ends); end 1 is the HV side.

    `r_ohm`…`b_s` belong to end 1 (referred to its rated voltage), `r2_ohm`…`b2_s` to end 2. The tap
    changer, when there is one, sits on `tap_side` and `tap_pos` is its current step; a tabular one
    (cim:RatioTapChangerTable) lists its steps in `tap_table` (`[{"step": …, "ratio": …, "r_percent": …,
    "x_percent": …}, …]`: voltage ratio of the tapped end, r and x deviations in % of the transformer's).

    The phase-shifting tap changer (`phase_tap_kind`) is linear (cim:PhaseTapChangerLinear, `phase_step_degree`
    per step; also how a fixed shift off the 30° clock arrives), symmetrical (cim:PhaseTapChangerSymmetrical,
    `phase_step_percent`: 2·atan(n·du/2)), asymmetrical (cim:PhaseTapChangerAsymmetrical, `phase_step_percent`
    at `phase_winding_angle_degree`) or tabular (cim:PhaseTapChangerTabular, `phase_tap_table` rows as `tap_table`
    with `angle_degree`).
    """

    TAP_SIDES = [("hv", "HV"), ("lv", "LV")]
    PHASE_TAP_KINDS = [("linear", "Linear"), ("symmetrical", "Symmetrical"), ("asymmetrical", "Asymmetrical"), ("tabular", "Tabular")]

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
    tap_table = models.JSONField(default=list, blank=True, help_text="Tabular ratio tap changer: ratio, r_percent, x_percent per step.")
    phase_tap_side = models.CharField(max_length=2, choices=TAP_SIDES, blank=True)
    phase_tap_kind = models.CharField(max_length=12, choices=PHASE_TAP_KINDS, default="linear")
    phase_tap_low = models.IntegerField(null=True, blank=True)
    phase_tap_high = models.IntegerField(null=True, blank=True)
    phase_tap_neutral = models.IntegerField(null=True, blank=True)
    phase_tap_normal = models.IntegerField(null=True, blank=True)
    phase_tap_pos = FiniteFloatField(null=True, blank=True)
    phase_step_degree = FiniteFloatField(null=True, blank=True, help_text="Phase shift per step, degrees (positive from the tap's side).")
    phase_step_percent = FiniteFloatField(null=True, blank=True, help_text="Symmetrical / asymmetrical: voltage step, % per step.")
    phase_winding_angle_degree = FiniteFloatField(null=True, blank=True, help_text="Asymmetrical: winding connection angle, degrees.")
    phase_tap_table = models.JSONField(default=list, blank=True,
                                       help_text="Tabular: angle_degree, ratio, r_percent, x_percent per step.")


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
    max_e_mwh = FiniteFloatField(null=True, blank=True, help_text="Energy rating, MWh; empty when unknown (load flows do not need it).")
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


ASSET_MODELS = [ExternalGrid, Line, Transformer, Switch, Load, StaticGenerator, Storage, EVCharger, Meter]


# --- elements of transmission and larger distribution grids (CIM classes named on each) ------------------------------


class ShuntCompensator(Asset):
    """A shunt capacitor or reactor bank in sections (cim:LinearShuntCompensator / cim:NonlinearShuntCompensator).

    CIM values: susceptance b (S, positive = capacitive) and conductance g (S) per section at `nom_u_kv`. A linear bank
    has the same b, g for every section; a non-linear one lists them per section in `points`
    (`[{"section": 1, "b_s": …, "g_s": …}, …]`, sections 1 … maximum); its admittance with n sections in use is the
    sum of the first n points. `sections` is the number in use (the solved state), `normal_sections` the normal one.
    """

    KINDS = [("linear", "Linear"), ("nonlinear", "Non-linear")]

    bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="shunt_compensators")
    kind = models.CharField(max_length=10, choices=KINDS, default="linear")
    nom_u_kv = FiniteFloatField(help_text="Voltage the section values are given at, kV.")
    sections = FiniteFloatField(default=1.0, help_text="Sections in use.")
    maximum_sections = models.PositiveIntegerField(default=1)
    normal_sections = models.IntegerField(null=True, blank=True)
    b_per_section_s = FiniteFloatField(null=True, blank=True, help_text="Linear: susceptance per section, S (positive = capacitive).")
    g_per_section_s = FiniteFloatField(null=True, blank=True, help_text="Linear: conductance per section, S.")
    points = models.JSONField(default=list, blank=True, help_text="Non-linear: b_s and g_s of each section.")


class SynchronousMachine(Asset):
    """A synchronous generator or condenser (cim:SynchronousMachine) that holds its terminal voltage when `control_enabled`.

    Generator convention as in pandapower: positive `p_mw` / `q_mvar` are produced (CIM's RotatingMachine.p/q are the
    negatives). With control enabled the bus is a PV bus at `vm_target_kv` (cim:RegulatingControl.targetValue) within
    `min_q_mvar` … `max_q_mvar` (cim:SynchronousMachine.minQ/maxQ, produced reactive power); otherwise it injects
    `q_mvar`. `reference_priority` > 0 makes it a slack candidate (cim:SynchronousMachine.referencePriority).
    """

    bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="synchronous_machines")
    p_mw = FiniteFloatField(default=0.0)
    q_mvar = FiniteFloatField(default=0.0)
    rated_s_mva = FiniteFloatField(null=True, blank=True)
    rated_u_kv = FiniteFloatField(help_text="Rated voltage, kV.")
    min_q_mvar = FiniteFloatField(null=True, blank=True)
    max_q_mvar = FiniteFloatField(null=True, blank=True)
    control_enabled = models.BooleanField(default=True)
    vm_target_kv = FiniteFloatField(null=True, blank=True, help_text="Voltage setpoint at its terminal, kV.")
    reference_priority = models.IntegerField(default=0)
    profile = models.CharField(max_length=100, blank=True)


class AsynchronousMachine(Asset):
    """An induction motor (cim:AsynchronousMachine), load convention: positive `p_mw` is consumption."""

    bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="asynchronous_machines")
    p_mw = FiniteFloatField(default=0.0)
    q_mvar = FiniteFloatField(default=0.0)
    rated_mechanical_p_mw = FiniteFloatField(help_text="Rated mechanical power, MW (cim:AsynchronousMachine.ratedMechanicalPower).")
    efficiency_percent = FiniteFloatField(default=100.0, help_text="Efficiency at rated operation, %.")
    rated_power_factor = FiniteFloatField(null=True, blank=True)
    rated_u_kv = FiniteFloatField()
    locked_rotor_current_ratio = FiniteFloatField(null=True, blank=True, help_text="Locked-rotor to rated current (cim:iaIrRatio).")
    locked_rotor_rx_ratio = FiniteFloatField(null=True, blank=True, help_text="R/X when locked (cim:rxLockedRotorRatio).")


class ThreeWindingTransformer(Asset, RatioTapChangerFields):  # noqa: DJ008 (__str__ is GridPart's)
    """A three-winding transformer (cim:PowerTransformer with ends 1 = HV, 2 = MV, 3 = LV).

    Series r, x of each end are its star-equivalent values referred to its own rated voltage (as CIM states them; a
    star branch may have a negative reactance); magnetising g, b sit on end 1. The tap changer sits on `tap_side`.
    """

    TAP_SIDES = [("hv", "HV"), ("mv", "MV"), ("lv", "LV")]

    hv_bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="transformers3w_hv")
    mv_bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="transformers3w_mv")
    lv_bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="transformers3w_lv")
    sn_hv_mva = FiniteFloatField()
    sn_mv_mva = FiniteFloatField()
    sn_lv_mva = FiniteFloatField()
    vn_hv_kv = FiniteFloatField()
    vn_mv_kv = FiniteFloatField()
    vn_lv_kv = FiniteFloatField()
    r_ohm = FiniteFloatField()
    x_ohm = FiniteFloatField()
    r2_ohm = FiniteFloatField()
    x2_ohm = FiniteFloatField()
    r3_ohm = FiniteFloatField()
    x3_ohm = FiniteFloatField()
    g_s = FiniteFloatField(default=0.0)
    b_s = FiniteFloatField(default=0.0)
    phase_angle_clock2 = models.IntegerField(default=0)
    phase_angle_clock3 = models.IntegerField(default=0)
    tap_side = models.CharField(max_length=2, choices=TAP_SIDES, blank=True)

    class Meta(Asset.Meta):
        verbose_name = "three-winding transformer"


class EquivalentBranch(Asset):
    """A series impedance between two buses: a network equivalent (cim:EquivalentBranch) or a series capacitor / reactor
    (cim:SeriesCompensator, `kind` series_compensator). Ohms referred to the nominal voltage of `from_bus`; `r21_ohm`,
    `x21_ohm` are the direction 2 → 1 of an asymmetric equivalent (equal to r, x when symmetric)."""

    KINDS = [("equivalent", "Equivalent branch"), ("series_compensator", "Series compensator")]

    from_bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="equivalent_branches_from")
    to_bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="equivalent_branches_to")
    kind = models.CharField(max_length=20, choices=KINDS, default="equivalent")
    r_ohm = FiniteFloatField()
    x_ohm = FiniteFloatField()
    r21_ohm = FiniteFloatField(null=True, blank=True)
    x21_ohm = FiniteFloatField(null=True, blank=True)


class EquivalentInjection(Asset):
    """An injection standing for an external network (cim:EquivalentInjection), load convention (positive `p_mw` leaves
    the bus). With `regulation_status` it holds its bus at `vm_target_kv` (cim:EquivalentInjection.regulationTarget)."""

    bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="equivalent_injections")
    p_mw = FiniteFloatField(default=0.0)
    q_mvar = FiniteFloatField(default=0.0)
    regulation_capability = models.BooleanField(default=False)
    regulation_status = models.BooleanField(default=False)
    vm_target_kv = FiniteFloatField(null=True, blank=True)
    min_q_mvar = FiniteFloatField(null=True, blank=True)
    max_q_mvar = FiniteFloatField(null=True, blank=True)


class EquivalentShunt(Asset):
    """A shunt admittance standing for an external network (cim:EquivalentShunt): g and b in S (b positive = capacitive)."""

    bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="equivalent_shunts")
    g_s = FiniteFloatField(default=0.0)
    b_s = FiniteFloatField(default=0.0)


class StaticVarCompensator(Asset):
    """A static VAR compensator (cim:StaticVarCompensator): a controlled shunt reactance between its inductive and
    capacitive rating that holds its bus at `vm_target_kv` (cim:StaticVarCompensator.voltageSetPoint) when `control_mode`
    is voltage and control is enabled; otherwise it absorbs `q_mvar` (cim:StaticVarCompensator.q, load sign).

    Ratings as CIM states them: `capacitive_rating_ohm` > 0 (reactance at the largest capacitive output),
    `inductive_rating_ohm` < 0 (at the largest inductive one). The load flow (twin.pandapower_adapter) makes it a
    generator of P = 0 (a PV bus) with reactive limits V²/X at the setpoint; see `NetBuilder.generators` for why.
    """

    MODES = [("voltage", "Voltage"), ("reactive_power", "Reactive power")]

    bus = models.ForeignKey(Bus, on_delete=models.CASCADE, related_name="static_var_compensators")
    capacitive_rating_ohm = FiniteFloatField(help_text="Reactance at the largest capacitive output, ohm (> 0, cim:capacitiveRating).")
    inductive_rating_ohm = FiniteFloatField(help_text="Reactance at the largest inductive output, ohm (< 0, cim:inductiveRating).")
    control_mode = models.CharField(max_length=14, choices=MODES, default="voltage")
    control_enabled = models.BooleanField(default=True)
    vm_target_kv = FiniteFloatField(null=True, blank=True, help_text="Voltage setpoint, kV (cim:StaticVarCompensator.voltageSetPoint).")
    q_mvar = FiniteFloatField(default=0.0, help_text="Reactive power absorbed when not holding a voltage, Mvar (load sign).")

    class Meta(Asset.Meta):
        verbose_name = "static VAR compensator"


ASSET_MODELS += [ShuntCompensator, SynchronousMachine, AsynchronousMachine, ThreeWindingTransformer, EquivalentBranch,
                 EquivalentInjection, EquivalentShunt, StaticVarCompensator]
