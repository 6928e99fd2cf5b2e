"""The RDF form of a grid: one place that says how twin rows and RDF triples map onto each other.

Reading (`graph_to_rows`) turns a validated graph into plain rows keyed by IRI; writing
(`grid_to_graph`) turns stored rows back into triples. Both directions of every asset type sit next
to each other below, so the mapping is stated once. The form (CIM100 terms unless noted):

* grid: ``gt:Grid`` with ``cim:IdentifiedObject.name`` and optional ``gt:owner``;
* bus: ``cim:TopologicalNode`` → ``cim:TopologicalNode.BaseVoltage`` → ``cim:BaseVoltage``;
* equipment connects through ``cim:Terminal`` (``Terminal.ConductingEquipment``,
  ``Terminal.TopologicalNode``, ``ACDCTerminal.sequenceNumber``);
* transformer: ``cim:PowerTransformer`` with two ``cim:PowerTransformerEnd`` (end 1 = HV), an
  optional ``cim:RatioTapChanger`` on one end and an optional ``cim:PhaseTapChangerLinear`` on one end
  (``PhaseTapChanger.TransformerEnd``, ``TapChanger.*`` steps, ``PhaseTapChangerLinear.stepPhaseShiftIncrement``
  degrees: a shift of (step − neutralStep) · increment, positive from its end to the other); a ratio tap changer may
  name a ``cim:RatioTapChangerTable`` (``RatioTapChanger.RatioTapChangerTable``) of ``cim:RatioTapChangerTablePoint``
  (``…Point.RatioTapChangerTable``, ``TapChangerTablePoint.step``, ``.ratio``, ``.r``, ``.x`` in % deviation); the phase
  tap changer may instead be a ``cim:PhaseTapChangerSymmetrical`` (``PhaseTapChangerNonLinear.voltageStepIncrement`` %),
  a ``cim:PhaseTapChangerAsymmetrical`` (the same and ``.windingConnectionAngle`` degrees) or a
  ``cim:PhaseTapChangerTabular`` with a ``cim:PhaseTapChangerTable`` of ``cim:PhaseTapChangerTablePoint`` (as the ratio
  points, plus ``PhaseTapChangerTablePoint.angle`` degrees); the tap step of a tabular changer is one of its table's steps;
* PV / wind / battery: ``cim:PowerElectronicsConnection`` with one ``cim:PowerElectronicsUnit``;
* slack: ``cim:ExternalNetworkInjection`` with a ``cim:RegulatingControl`` (target in kV);
* meter: ``saref:Meter`` with ``gt:measures``; EV charger: ``gt:EVChargingStation``;
* shunt compensator: ``cim:LinearShuntCompensator`` (``ShuntCompensator.nomU`` kV, ``.sections`` in use,
  ``.maximumSections``, ``.normalSections``, ``LinearShuntCompensator.bPerSection`` / ``.gPerSection`` S per
  section, b > 0 capacitive) or ``cim:NonlinearShuntCompensator`` with one ``cim:NonlinearShuntCompensatorPoint``
  per section (``…Point.NonlinearShuntCompensator``, ``.sectionNumber`` 1 … maximumSections, ``.b``, ``.g`` S of
  that section; n sections in use give the sum of points 1 … n);
* synchronous machine: ``cim:SynchronousMachine`` (``RotatingMachine.p``/``.q`` MW/Mvar in load sign,
  ``.ratedS`` MVA, ``.ratedU`` kV, ``SynchronousMachine.minQ``/``.maxQ`` Mvar produced, ``.referencePriority`` > 0
  for a slack candidate, ``RegulatingCondEq.controlEnabled``) with a ``cim:RegulatingControl`` (``RegulatingCondEq.
  RegulatingControl``; mode voltage, ``targetValue`` kV, ``RegulatingControl.Terminal`` = its own terminal,
  ``enabled``): a PV bus; control disabled: a PQ injection of p, q;
* battery: ``BatteryUnit.ratedE`` may be left out (unknown energy rating, as pandapower's NaN);
* three-winding transformer: ``cim:PowerTransformer`` with three terminals and ends 1, 2, 3 (HV, MV, LV); each
  end's ``r``, ``x`` are its star-equivalent branch in ohm at its own ``ratedU`` (may be negative), ``g``, ``b``
  on end 1, ``phaseAngleClock`` on ends 2 and 3, an optional ``cim:RatioTapChanger`` on any end;
* motor: ``cim:AsynchronousMachine`` (``asynchronousMachineType`` motor, ``RotatingMachine.p``/``.q`` load sign,
  ``.ratedU``, ``AsynchronousMachine.ratedMechanicalPower`` MW, ``.efficiency`` %, ``.ratedPowerFactor``,
  ``.iaIrRatio``, ``.rxLockedRotorRatio``);
* network equivalents: ``cim:EquivalentBranch`` (two terminals; ``r``, ``x``, ``r21``, ``x21`` ohm, referred to
  the nominal voltage of terminal 1's node), ``cim:EquivalentShunt`` (``g``, ``b`` S), ``cim:EquivalentInjection``
  (``p``, ``q`` load sign; ``regulationCapability``, ``regulationStatus`` and ``regulationTarget`` kV for a
  voltage-holding source, ``minQ``/``maxQ``); series capacitor or reactor: ``cim:SeriesCompensator`` (``r``, ``x`` ohm);
* static VAR compensator: ``cim:StaticVarCompensator`` (``capacitiveRating`` > 0, ``inductiveRating`` < 0 ohm,
  ``sVCControlMode`` voltage or reactivePower, ``voltageSetPoint`` kV, ``q`` Mvar load sign, ``RegulatingCondEq.
  controlEnabled``; ``slope`` only 0).

Powers follow CIM's load sign convention in RDF (positive p leaves the node); generators are stored
with pandapower's generator convention, so their sign flips on the way in and out (exactly).
Transformer magnetising susceptance ``PowerTransformerEnd.b`` is written positive for an inductive branch (the
twin's convention since its first version; CGMES writes an inductive b as negative: a CGMES converter flips it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyoxigraph as ox
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import RDF, XSD

from ontology.document import RdfDocument, term_key, typed_literal
from ontology.namespaces import CIM, GEO, GT, PREFIXES, SAREF

NAME = CIM["IdentifiedObject.name"]
IN_SERVICE = CIM["Equipment.inService"]
T_EQUIPMENT = CIM["Terminal.ConductingEquipment"]
T_NODE = CIM["Terminal.TopologicalNode"]
T_SEQ = CIM["ACDCTerminal.sequenceNumber"]
END_TRAFO = CIM["PowerTransformerEnd.PowerTransformer"]
END_NUMBER = CIM["TransformerEnd.endNumber"]
END_TERMINAL = CIM["TransformerEnd.Terminal"]
RTC_END = CIM["RatioTapChanger.TransformerEnd"]
UNIT_CONNECTION = CIM["PowerElectronicsUnit.PowerElectronicsConnection"]
SV_NODE = CIM["SvVoltage.TopologicalNode"]
RC_TERMINAL = CIM["RegulatingControl.Terminal"]
REG_CONTROL = CIM["RegulatingCondEq.RegulatingControl"]

SWITCH_CLASSES = {
    "switch": CIM.Switch,
    "breaker": CIM.Breaker,
    "load_break_switch": CIM.LoadBreakSwitch,
    "disconnector": CIM.Disconnector,
    "fuse": CIM.Fuse,
}
GENERATION_UNIT_CLASSES = {"pv": CIM.PhotoVoltaicUnit, "wind": CIM.PowerElectronicsWindUnit, "other": GT.OtherGenerationUnit}
POINT_SHUNT = CIM["NonlinearShuntCompensatorPoint.NonlinearShuntCompensator"]
PTC_END = CIM["PhaseTapChanger.TransformerEnd"]
RATIO_POINT_TABLE = CIM["RatioTapChangerTablePoint.RatioTapChangerTable"]
PHASE_POINT_TABLE = CIM["PhaseTapChangerTablePoint.PhaseTapChangerTable"]
INVERSE_PREDICATES = (T_EQUIPMENT, END_TRAFO, RTC_END, UNIT_CONNECTION, SV_NODE, REG_CONTROL, POINT_SHUNT, PTC_END, RATIO_POINT_TABLE,
                      PHASE_POINT_TABLE)


class CodecError(ValueError):
    """The graph cannot be read as a grid; `node` names the offending RDF node."""

    def __init__(self, node: str, message: str):
        super().__init__(f"{node}: {message}")
        self.node = node
        self.message = message


# --- reading ----------------------------------------------------------------------------------


INTEGER_TYPES = {str(XSD[t]) for t in ("integer", "int", "long", "short", "nonNegativeInteger", "positiveInteger")}
FLOAT_TYPES = {str(XSD.double), str(XSD.float), str(XSD.decimal)}
BOOLEAN_TYPE = str(XSD.boolean)


def python_value(term):
    """An object term as the codec reads it: IRIs as URIRef, blank nodes as `_:id`, literals as Python values."""
    if isinstance(term, ox.NamedNode):
        return URIRef(term.value)
    if isinstance(term, ox.BlankNode):
        return f"_:{term.value}"
    datatype = term.datatype.value if term.language is None else None
    if datatype in FLOAT_TYPES:
        return float(term.value)
    if datatype in INTEGER_TYPES:
        return int(term.value)
    if datatype == BOOLEAN_TYPE:
        return term.value in ("true", "1")
    return term.value


class GraphIndex:
    """Subject → predicate → objects, plus the few inverse links the mapping follows.

    Nodes and predicates are keyed by their string (IRI, or `_:id` for blank nodes); every method takes
    rdflib terms or strings alike.
    """

    def __init__(self, graph: Graph | RdfDocument):
        self.out: dict = defaultdict(lambda: defaultdict(list))
        self.inverse: dict = defaultdict(list)
        self.by_type: dict = defaultdict(list)
        rdf_type = str(RDF.type)
        inverse = {str(p) for p in INVERSE_PREDICATES}
        for quad in RdfDocument.from_graph(graph).quads:
            subject, predicate, obj = term_key(quad.subject), quad.predicate.value, python_value(quad.object)
            self.out[subject][predicate].append(obj)
            if predicate == rdf_type:
                self.by_type[str(obj)].append(subject)
            elif predicate in inverse:
                self.inverse[(predicate, str(obj))].append(subject)

    def instances(self, rdf_class) -> list[str]:
        return sorted(set(self.by_type.get(str(rdf_class), [])))

    def types(self, node) -> set:
        return set(self.out[str(node)].get(str(RDF.type), []))

    def value(self, node, predicate, default=None):
        values = self.out[str(node)].get(str(predicate))
        return values[0] if values else default

    def ref(self, node, predicate) -> str | None:
        value = self.value(node, predicate)
        return str(value) if value is not None else None

    def referrers(self, predicate, node) -> list[str]:
        return sorted(self.inverse.get((str(predicate), str(node)), []))

    def terminals(self, equipment) -> list[tuple[str, str]]:
        """(terminal IRI, bus IRI) of an equipment, in sequence-number order."""
        found = []
        for terminal in self.referrers(T_EQUIPMENT, equipment):
            found.append((self.value(terminal, T_SEQ, 0), str(terminal), self.ref(terminal, T_NODE)))
        return [(t, bus) for _, t, bus in sorted(found)]


def _float(index: GraphIndex, node, predicate, default=None):
    value = index.value(node, predicate, default)
    return float(value) if value is not None else None


# Numbers that map one-to-one to a CIM property of the node, as (row field, predicate, default when absent): each such
# table is both the reading and the writing of those numbers (`_read_numbers`, `_write_numbers`), so a mapping is stated once.
Numbers = tuple[tuple[str, URIRef, float | None], ...]


def _read_numbers(index: GraphIndex, node, numbers: Numbers) -> dict:
    return {name: _float(index, node, predicate, default) for name, predicate, default in numbers}


def _write_numbers(w: TripleWriter, node, row: dict, numbers: Numbers) -> None:
    for name, predicate, _ in numbers:
        w.add(node, predicate, row[name])


def _common(index: GraphIndex, node, parts: dict | None = None) -> dict:
    row = {
        "iri": str(node),
        "name": str(index.value(node, NAME, "")),
        "feeder": index.ref(node, GT.feeder),
        "owner": index.ref(node, GT.owner),
        "in_service": bool(index.value(node, IN_SERVICE, True)),
    }
    if parts is not None:
        row["part_iris"] = parts
    return row


def _one_terminal(index: GraphIndex, node) -> tuple[dict, str]:
    terminals = index.terminals(node)
    if len(terminals) != 1:
        raise CodecError(str(node), f"expected exactly one terminal, found {len(terminals)}")
    terminal, bus = terminals[0]
    return {"T1": terminal}, bus


def _two_terminals(index: GraphIndex, node) -> tuple[dict, str, str]:
    terminals = index.terminals(node)
    if len(terminals) != 2:
        raise CodecError(str(node), f"expected exactly two terminals, found {len(terminals)}")
    (t1, bus1), (t2, bus2) = terminals
    return {"T1": t1, "T2": t2}, bus1, bus2


@dataclass
class GridRows:
    """A grid read from RDF: the grid's own attributes and, per twin model name, rows keyed by IRI."""

    grid: dict
    rows: dict[str, list[dict]] = field(default_factory=dict)

    def count(self) -> int:
        return sum(len(r) for r in self.rows.values())


def read_grid(index: GraphIndex) -> dict:
    grids = index.instances(GT.Grid)
    if len(grids) != 1:
        raise CodecError("gt:Grid", f"an upload describes exactly one gt:Grid, found {len(grids)}")
    node = grids[0]
    return {"iri": str(node), "name": str(index.value(node, NAME, "")), "owner": index.ref(node, GT.owner)}


def read_feeders(index: GraphIndex) -> Iterator[dict]:
    for node in index.instances(CIM.Feeder):
        yield {"iri": str(node), "name": str(index.value(node, NAME, ""))}


def read_base_voltages(index: GraphIndex) -> Iterator[dict]:
    for node in index.instances(CIM.BaseVoltage):
        yield {
            "iri": str(node),
            "name": str(index.value(node, NAME, "")),
            "nominal_voltage_kv": _float(index, node, CIM["BaseVoltage.nominalVoltage"]),
        }


def read_buses(index: GraphIndex) -> Iterator[dict]:
    for node in index.instances(CIM.TopologicalNode):
        sv = index.referrers(SV_NODE, node)
        yield {
            "iri": str(node),
            "name": str(index.value(node, NAME, "")),
            "base_voltage": index.ref(node, CIM["TopologicalNode.BaseVoltage"]),
            "feeder": index.ref(node, GT.feeder),
            "lon_degree": _float(index, node, GEO.long),
            "lat_degree": _float(index, node, GEO.lat),
            "sv_v_kv": _float(index, sv[0], CIM["SvVoltage.v"]) if sv else None,
            "sv_angle_degree": _float(index, sv[0], CIM["SvVoltage.angle"]) if sv else None,
            "part_iris": {"SvVoltage": str(sv[0])} if sv else {},
        }


def read_external_grids(index: GraphIndex) -> Iterator[dict]:
    for node in index.instances(CIM.ExternalNetworkInjection):
        parts, bus = _one_terminal(index, node)
        control = index.value(node, REG_CONTROL)
        if control is None:
            raise CodecError(str(node), "an external grid needs a cim:RegulatingControl with its voltage setpoint")
        parts["RegulatingControl"] = str(control)
        yield {
            **_common(index, node, parts),
            "bus": bus,
            "vm_target_kv": _float(index, control, CIM["RegulatingControl.targetValue"]),
            "va_degree": _float(index, node, GT.voltageAngleSetpoint, 0.0),
            "reference_priority": int(index.value(node, CIM["ExternalNetworkInjection.referencePriority"], 1)),
        }


def read_lines(index: GraphIndex) -> Iterator[dict]:
    for node in index.instances(CIM.ACLineSegment):
        parts, from_bus, to_bus = _two_terminals(index, node)
        yield {
            **_common(index, node, parts),
            "from_bus": from_bus,
            "to_bus": to_bus,
            "length_km": _float(index, node, CIM["Conductor.length"]),
            "r_ohm": _float(index, node, CIM["ACLineSegment.r"]),
            "x_ohm": _float(index, node, CIM["ACLineSegment.x"]),
            "b_s": _float(index, node, CIM["ACLineSegment.bch"], 0.0),
            "g_s": _float(index, node, CIM["ACLineSegment.gch"], 0.0),
            "max_i_ka": _float(index, node, GT.ratedCurrent),
        }


END_FIELDS = {"r": "ohm", "x": "ohm", "g": "s", "b": "s"}


def read_transformers(index: GraphIndex) -> Iterator[dict]:
    for node in index.instances(CIM.PowerTransformer):
        ends = {int(index.value(e, END_NUMBER, 0)): e for e in index.referrers(END_TRAFO, node)}
        if sorted(ends) == [1, 2, 3]:
            continue  # three windings: read_three_winding_transformers
        if sorted(ends) != [1, 2]:
            raise CodecError(str(node), "a transformer needs two ends numbered 1 and 2, or three numbered 1, 2 and 3")
        row = _common(index, node, {})
        for number, end in ends.items():
            terminal = index.value(end, END_TERMINAL)
            suffix = "" if number == 1 else "2"
            row["part_iris"][f"End{number}"] = str(end)
            row["part_iris"][f"T{number}"] = str(terminal)
            row["hv_bus" if number == 1 else "lv_bus"] = index.ref(terminal, T_NODE)
            row["vn_hv_kv" if number == 1 else "vn_lv_kv"] = _float(index, end, CIM["PowerTransformerEnd.ratedU"])
            for quantity, unit in END_FIELDS.items():
                row[f"{quantity}{suffix}_{unit}"] = _float(index, end, CIM[f"PowerTransformerEnd.{quantity}"], 0.0)
        row["sn_mva"] = _float(index, ends[1], CIM["PowerTransformerEnd.ratedS"])
        row["phase_angle_clock"] = int(index.value(ends[2], CIM["PowerTransformerEnd.phaseAngleClock"], 0))
        row.update(_read_tap_changer(index, ends, row["part_iris"]))
        row.update(_read_tap_changer(index, ends, row["part_iris"], form=PHASE_TAP))
        row.update(_read_tap_tables(index, node, row))
        yield row


@dataclass(frozen=True)
class TapChangerForm:
    """How one kind of tap changer maps: its part name, CIM class, link to its end, row field prefix and step increment."""

    part: str
    rdf_class: URIRef
    end_link: URIRef
    prefix: str  # row fields {prefix}_side, _low, _high, _neutral, _normal, _pos
    increment: URIRef
    increment_field: str

    def empty(self) -> dict:
        return {f"{self.prefix}_side": "", **dict.fromkeys([*(f"{self.prefix}_{k}" for k in STEP_FIELDS), self.increment_field])}


STEP_FIELDS = {"low": "lowStep", "high": "highStep", "neutral": "neutralStep", "normal": "normalStep"}
RATIO_TAP = TapChangerForm("RatioTapChanger", CIM.RatioTapChanger, RTC_END, "tap", CIM["RatioTapChanger.stepVoltageIncrement"],
                           "tap_step_percent")
# shift (step − neutralStep) · increment degrees, positive from its end to the other
PHASE_TAP = TapChangerForm("PhaseTapChanger", CIM.PhaseTapChangerLinear, PTC_END, "phase_tap",
                           CIM["PhaseTapChangerLinear.stepPhaseShiftIncrement"], "phase_step_degree")


def _read_tap_changer(index: GraphIndex, ends: dict, parts: dict, sides: dict | None = None, form: TapChangerForm = RATIO_TAP) -> dict:
    """The tap changer fields of a transformer row; `sides` names the side of each end number (default 1 hv, 2 lv)."""
    sides = sides or {1: "hv", 2: "lv"}
    for number, end in sorted(ends.items()):
        changers = index.referrers(form.end_link, end)
        if changers:
            changer = changers[0]
            parts[form.part] = str(changer)
            neutral = index.value(changer, CIM["TapChanger.neutralStep"])
            steps = {f"{form.prefix}_{k}": int(index.value(changer, CIM[f"TapChanger.{name}"], neutral)) for k, name in STEP_FIELDS.items()}
            return {f"{form.prefix}_side": sides[number], **steps,
                    f"{form.prefix}_pos": _float(index, changer, CIM["TapChanger.step"], neutral),
                    form.increment_field: _float(index, changer, form.increment)}
    return form.empty()


PHASE_TAP_CLASSES = {"linear": CIM.PhaseTapChangerLinear, "symmetrical": CIM.PhaseTapChangerSymmetrical,
                     "asymmetrical": CIM.PhaseTapChangerAsymmetrical, "tabular": CIM.PhaseTapChangerTabular}
RATIO_TABLE = CIM["RatioTapChanger.RatioTapChangerTable"]
PHASE_TABLE = CIM["PhaseTapChangerTabular.PhaseTapChangerTable"]


def _read_table(index: GraphIndex, changer: str, table, link, parts: dict, prefix: str, angle: bool) -> list[dict]:
    """The points of a tap changer table, by step; the changer must stand at one of them."""
    parts[f"{prefix}TapChangerTable"] = str(table)
    points = []
    for point in index.referrers(link, table):
        step = int(index.value(point, CIM["TapChangerTablePoint.step"]))
        parts[f"{prefix}Point{step}"] = str(point)
        row = {"step": step, "ratio": _float(index, point, CIM["TapChangerTablePoint.ratio"]),
               "r_percent": _float(index, point, CIM["TapChangerTablePoint.r"], 0.0),
               "x_percent": _float(index, point, CIM["TapChangerTablePoint.x"], 0.0)}
        if angle:
            row["angle_degree"] = _float(index, point, CIM["PhaseTapChangerTablePoint.angle"], 0.0)
        points.append(row)
    position = index.value(changer, CIM["TapChanger.step"], index.value(changer, CIM["TapChanger.neutralStep"]))
    if position not in {p["step"] for p in points}:
        raise CodecError(changer, f"tap step {position} is no step of its table {table}")
    return sorted(points, key=lambda p: p["step"])


def _read_tap_tables(index: GraphIndex, node, row: dict) -> dict:
    """A transformer's tap tables and the kind of its phase tap changer (fields beyond `_read_tap_changer`)."""
    parts = row["part_iris"]
    found = {"tap_table": [], "phase_tap_kind": "linear", "phase_step_percent": None, "phase_winding_angle_degree": None,
             "phase_tap_table": []}
    ratio = parts.get(RATIO_TAP.part)
    if ratio and index.value(ratio, RATIO_TABLE) is not None:
        found["tap_table"] = _read_table(index, ratio, index.value(ratio, RATIO_TABLE), RATIO_POINT_TABLE, parts, "Ratio", angle=False)
    phase = parts.get(PHASE_TAP.part)
    if not phase:
        return found
    types = index.types(phase)
    found["phase_tap_kind"] = next((k for k, cls in PHASE_TAP_CLASSES.items() if cls in types), "linear")
    if found["phase_tap_kind"] in ("symmetrical", "asymmetrical"):
        found["phase_step_percent"] = _float(index, phase, CIM["PhaseTapChangerNonLinear.voltageStepIncrement"])
        found["phase_winding_angle_degree"] = _float(index, phase, CIM["PhaseTapChangerAsymmetrical.windingConnectionAngle"])
    elif found["phase_tap_kind"] == "tabular":
        found["phase_tap_table"] = _read_table(index, phase, index.value(phase, PHASE_TABLE), PHASE_POINT_TABLE, parts, "Phase", angle=True)
        if found["tap_table"]:
            raise CodecError(str(node), "a transformer with a tabular ratio and a tabular phase tap changer is not supported: "
                                        "pandapower reads one characteristic table (trafo_characteristic_table) per transformer")
    return found


def _write_tap_tables(w: TripleWriter, row: dict) -> None:
    for prefix, points, changer_link, link, table_class, point_class in (
            ("Ratio", row.get("tap_table"), RATIO_TABLE, RATIO_POINT_TABLE, CIM.RatioTapChangerTable, CIM.RatioTapChangerTablePoint),
            ("Phase", row.get("phase_tap_table"), PHASE_TABLE, PHASE_POINT_TABLE, CIM.PhaseTapChangerTable, CIM.PhaseTapChangerTablePoint)):
        if not points:
            continue
        part = RATIO_TAP.part if prefix == "Ratio" else PHASE_TAP.part
        table = w.node(part_iri(row, f"{prefix}TapChangerTable"), table_class)
        w.graph.add((URIRef(part_iri(row, part)), changer_link, table))
        for point in points:
            subject = w.node(part_iri(row, f"{prefix}Point{point['step']}"), point_class)
            w.graph.add((subject, link, table))
            w.add(subject, CIM["TapChangerTablePoint.step"], point["step"])
            w.add(subject, CIM["TapChangerTablePoint.ratio"], float(point["ratio"]))
            w.add(subject, CIM["TapChangerTablePoint.r"], float(point["r_percent"]))
            w.add(subject, CIM["TapChangerTablePoint.x"], float(point["x_percent"]))
            if "angle_degree" in point:
                w.add(subject, CIM["PhaseTapChangerTablePoint.angle"], float(point["angle_degree"]))


def read_switches(index: GraphIndex) -> Iterator[dict]:
    kinds = {cls: kind for kind, cls in SWITCH_CLASSES.items()}
    nodes = sorted({n for cls in SWITCH_CLASSES.values() for n in index.instances(cls)})
    for node in nodes:
        parts, bus, other_bus = _two_terminals(index, node)
        kind = next((kinds[t] for t in index.types(node) if t in kinds and t != CIM.Switch), "switch")
        normal_open = bool(index.value(node, CIM["Switch.normalOpen"], False))
        yield {
            **_common(index, node, parts),
            "bus": bus,
            "other_bus": other_bus,
            "kind": kind,
            "normal_open": normal_open,
            "open": bool(index.value(node, CIM["Switch.open"], normal_open)),
        }


def read_loads_and_chargers(index: GraphIndex) -> tuple[list[dict], list[dict]]:
    loads, chargers = [], []
    for node in index.instances(CIM.EnergyConsumer):
        parts, bus = _one_terminal(index, node)
        row = {
            **_common(index, node, parts),
            "bus": bus,
            "p_mw": _float(index, node, CIM["EnergyConsumer.p"], 0.0),
            "q_mvar": _float(index, node, CIM["EnergyConsumer.q"], 0.0),
            "profile": str(index.value(node, GT.profile, "")),
        }
        if GT.EVChargingStation in index.types(node):
            row["max_p_mw"] = _float(index, node, GT.maxChargingPower)
            row["connector_count"] = int(index.value(node, GT.connectorCount, 1))
            chargers.append(row)
        else:
            loads.append(row)
    return loads, chargers


def read_power_electronics(index: GraphIndex) -> tuple[list[dict], list[dict]]:
    generators, storages = [], []
    unit_kinds = {cls: kind for kind, cls in GENERATION_UNIT_CLASSES.items()}
    for node in index.instances(CIM.PowerElectronicsConnection):
        parts, bus = _one_terminal(index, node)
        units = index.referrers(UNIT_CONNECTION, node)
        if len(units) != 1:
            raise CodecError(str(node), f"expected exactly one power-electronics unit, found {len(units)}")
        unit = units[0]
        parts["Unit"] = str(unit)
        p = _float(index, node, CIM["PowerElectronicsConnection.p"], 0.0)
        q = _float(index, node, CIM["PowerElectronicsConnection.q"], 0.0)
        row = {
            **_common(index, node, parts),
            "bus": bus,
            "sn_mva": _float(index, node, CIM["PowerElectronicsConnection.ratedS"]),
            "profile": str(index.value(node, GT.profile, "")),
        }
        unit_types = index.types(unit)
        if CIM.BatteryUnit in unit_types:
            row.update(p_mw=p, q_mvar=q, max_e_mwh=_float(index, unit, CIM["BatteryUnit.ratedE"]),
                       stored_e_mwh=_float(index, unit, CIM["BatteryUnit.storedE"]))
            storages.append(row)
        else:
            kind = next((unit_kinds[t] for t in unit_types if t in unit_kinds), None)
            if kind is None:
                raise CodecError(str(unit), "unit must be a PV, wind, battery or other generation unit (see the shapes)")
            row.update(kind=kind, p_mw=-p, q_mvar=-q)
            generators.append(row)
    return generators, storages


def read_meters(index: GraphIndex) -> Iterator[dict]:
    for node in index.instances(SAREF.Meter):
        yield {
            **_common(index, node, {}),
            "measured_iri": index.ref(node, GT.measures),
            "kind": str(index.value(node, GT.meterKind, "smart_meter")),
        }


def graph_to_rows(graph: Graph | RdfDocument, *, require_grid: bool = True) -> GridRows:
    """Read a (validated) graph into rows per twin model, every reference still an IRI.

    A whole-grid upload describes exactly one gt:Grid; a partial change (`require_grid=False`) none.
    """
    index = GraphIndex(graph)
    loads, chargers = read_loads_and_chargers(index)
    generators, storages = read_power_electronics(index)
    return GridRows(
        grid=read_grid(index) if require_grid else {},
        rows={
            "Feeder": list(read_feeders(index)),
            "BaseVoltage": list(read_base_voltages(index)),
            "Bus": list(read_buses(index)),
            "ExternalGrid": list(read_external_grids(index)),
            "Line": list(read_lines(index)),
            "Transformer": list(read_transformers(index)),
            "Switch": list(read_switches(index)),
            "Load": loads,
            "StaticGenerator": generators,
            "Storage": storages,
            "EVCharger": chargers,
            "Meter": list(read_meters(index)),
            **{name: list(reader(index)) for name, reader in ELEMENT_READERS.items()},
        },
    )


# --- writing ----------------------------------------------------------------------------------


class TripleWriter:
    """Collects triples of one grid; `None` values are left out so absence keeps meaning "not given"."""

    def __init__(self):
        self.graph = Graph()
        for prefix, namespace in PREFIXES.items():
            self.graph.bind(prefix, namespace)

    def add(self, subject, predicate, value) -> None:
        if value is None or value == "":
            return
        obj = value if isinstance(value, URIRef | Literal | BNode) else typed_literal(value)
        self.graph.add((subject, predicate, obj))

    def ref(self, subject, predicate, iri: str | None) -> None:
        if iri:
            self.graph.add((subject, predicate, URIRef(iri)))

    def node(self, iri: str, rdf_class, name: str = "") -> URIRef:
        subject = URIRef(iri)
        self.graph.add((subject, RDF.type, rdf_class))
        self.add(subject, NAME, name)
        return subject

    def equipment(self, row: dict, rdf_class, iris: dict[int, str]) -> URIRef:
        """An equipment with its name, feeder, owner, in-service flag and its terminals on `iris` buses."""
        subject = self.node(row["iri"], rdf_class, row["name"])
        self.ref(subject, GT.feeder, iris.get("feeder"))
        self.ref(subject, GT.owner, iris.get("owner"))
        if not row["in_service"]:
            self.add(subject, IN_SERVICE, False)
        for number, bus_iri in sorted((k, v) for k, v in iris.items() if isinstance(k, int)):
            terminal = self.terminal_iri(row, number)
            self.node(terminal, CIM.Terminal)
            self.graph.add((URIRef(terminal), T_EQUIPMENT, subject))
            self.graph.add((URIRef(terminal), T_NODE, URIRef(bus_iri)))
            self.add(URIRef(terminal), T_SEQ, number)
        return subject

    @staticmethod
    def terminal_iri(row: dict, number: int) -> str:
        return part_iri(row, f"T{number}")


def part_iri(row: dict, part: str) -> str:
    """The IRI of a helper object of an asset: the one it arrived with, or one derived from the asset's."""
    return (row.get("part_iris") or {}).get(part) or f"{row['iri']}#{part}"


def write_buses(w: TripleWriter, rows: Iterable[dict], iri_of: dict) -> None:
    for row in rows:
        bus = w.node(row["iri"], CIM.TopologicalNode, row["name"])
        w.ref(bus, CIM["TopologicalNode.BaseVoltage"], iri_of["BaseVoltage"][row["base_voltage_id"]])
        w.ref(bus, GT.feeder, iri_of["Feeder"].get(row["feeder_id"]))
        w.add(bus, GEO.long, row["lon_degree"])
        w.add(bus, GEO.lat, row["lat_degree"])
        if row["sv_v_kv"] is not None:
            sv = w.node(part_iri(row, "SvVoltage"), CIM.SvVoltage)
            w.graph.add((sv, SV_NODE, bus))
            w.add(sv, CIM["SvVoltage.v"], row["sv_v_kv"])
            w.add(sv, CIM["SvVoltage.angle"], row["sv_angle_degree"])


def _iris(row: dict, iri_of: dict, *bus_fields: str) -> dict:
    iris = {i + 1: iri_of["Bus"][row[f"{name}_id"]] for i, name in enumerate(bus_fields)}
    iris["feeder"] = iri_of["Feeder"].get(row["feeder_id"])
    iris["owner"] = iri_of["Participant"].get(row["owner_id"])
    return iris


def write_external_grids(w: TripleWriter, rows, iri_of) -> None:
    for row in rows:
        node = w.equipment(row, CIM.ExternalNetworkInjection, _iris(row, iri_of, "bus"))
        w.add(node, CIM["ExternalNetworkInjection.referencePriority"], row["reference_priority"])
        if row["va_degree"]:
            w.add(node, GT.voltageAngleSetpoint, row["va_degree"])
        control = w.node(part_iri(row, "RegulatingControl"), CIM.RegulatingControl)
        w.graph.add((node, REG_CONTROL, control))
        w.graph.add((control, CIM["RegulatingControl.mode"], CIM["RegulatingControlModeKind.voltage"]))
        w.ref(control, RC_TERMINAL, w.terminal_iri(row, 1))
        w.add(control, CIM["RegulatingControl.targetValue"], row["vm_target_kv"])


def write_lines(w: TripleWriter, rows, iri_of) -> None:
    for row in rows:
        node = w.equipment(row, CIM.ACLineSegment, _iris(row, iri_of, "from_bus", "to_bus"))
        w.add(node, CIM["Conductor.length"], row["length_km"])
        w.add(node, CIM["ACLineSegment.r"], row["r_ohm"])
        w.add(node, CIM["ACLineSegment.x"], row["x_ohm"])
        w.add(node, CIM["ACLineSegment.bch"], row["b_s"])
        w.add(node, CIM["ACLineSegment.gch"], row["g_s"])
        w.add(node, GT.ratedCurrent, row["max_i_ka"])


def write_transformers(w: TripleWriter, rows, iri_of) -> None:
    for row in rows:
        node = w.equipment(row, CIM.PowerTransformer, _iris(row, iri_of, "hv_bus", "lv_bus"))
        for number in (1, 2):
            end = w.node(part_iri(row, f"End{number}"), CIM.PowerTransformerEnd)
            suffix = "" if number == 1 else "2"
            w.graph.add((end, END_TRAFO, node))
            w.add(end, END_NUMBER, number)
            w.ref(end, END_TERMINAL, w.terminal_iri(row, number))
            w.add(end, CIM["PowerTransformerEnd.ratedU"], row["vn_hv_kv" if number == 1 else "vn_lv_kv"])
            w.add(end, CIM["PowerTransformerEnd.ratedS"], row["sn_mva"])
            for quantity, unit in END_FIELDS.items():
                w.add(end, CIM[f"PowerTransformerEnd.{quantity}"], row[f"{quantity}{suffix}_{unit}"])
            w.add(end, CIM["PowerTransformerEnd.phaseAngleClock"], 0 if number == 1 else row["phase_angle_clock"])
        if row["tap_side"]:
            _write_tap_changer(w, row)
        if row.get("phase_tap_side"):
            kind = row.get("phase_tap_kind") or "linear"
            changer = _write_tap_changer(w, row, form=PHASE_TAP, rdf_class=PHASE_TAP_CLASSES[kind])
            w.add(changer, CIM["PhaseTapChangerNonLinear.voltageStepIncrement"], row.get("phase_step_percent"))
            w.add(changer, CIM["PhaseTapChangerAsymmetrical.windingConnectionAngle"], row.get("phase_winding_angle_degree"))
        _write_tap_tables(w, row)


def _write_tap_changer(w: TripleWriter, row: dict, end: str | None = None, form: TapChangerForm = RATIO_TAP,
                       rdf_class=None) -> URIRef:
    changer = w.node(part_iri(row, form.part), rdf_class or form.rdf_class)
    w.ref(changer, form.end_link, end or part_iri(row, "End1" if row[f"{form.prefix}_side"] == "hv" else "End2"))
    for key, name in STEP_FIELDS.items():
        w.add(changer, CIM[f"TapChanger.{name}"], row[f"{form.prefix}_{key}"])
    w.add(changer, CIM["TapChanger.step"], row[f"{form.prefix}_pos"])
    w.add(changer, form.increment, row[form.increment_field])
    return changer


def write_switches(w: TripleWriter, rows, iri_of) -> None:
    for row in rows:
        node = w.equipment(row, SWITCH_CLASSES[row["kind"]], _iris(row, iri_of, "bus", "other_bus"))
        w.add(node, CIM["Switch.normalOpen"], row["normal_open"])
        w.add(node, CIM["Switch.open"], row["open"])


def write_consumers(w: TripleWriter, rows, iri_of, charger: bool = False) -> None:
    for row in rows:
        node = w.equipment(row, CIM.EnergyConsumer, _iris(row, iri_of, "bus"))
        w.add(node, CIM["EnergyConsumer.p"], row["p_mw"])
        w.add(node, CIM["EnergyConsumer.q"], row["q_mvar"])
        w.add(node, GT.profile, row["profile"])
        if charger:
            w.graph.add((node, RDF.type, GT.EVChargingStation))
            w.add(node, GT.maxChargingPower, row["max_p_mw"])
            w.add(node, GT.connectorCount, row["connector_count"])


def _power_electronics(w: TripleWriter, row: dict, iri_of: dict, unit_class, p_mw: float, q_mvar: float):
    node = w.equipment(row, CIM.PowerElectronicsConnection, _iris(row, iri_of, "bus"))
    w.add(node, CIM["PowerElectronicsConnection.p"], p_mw)
    w.add(node, CIM["PowerElectronicsConnection.q"], q_mvar)
    w.add(node, CIM["PowerElectronicsConnection.ratedS"], row["sn_mva"])
    w.add(node, GT.profile, row["profile"])
    unit = w.node(part_iri(row, "Unit"), unit_class)
    w.graph.add((unit, UNIT_CONNECTION, node))
    return unit


def write_generators(w: TripleWriter, rows, iri_of) -> None:
    for row in rows:
        _power_electronics(w, row, iri_of, GENERATION_UNIT_CLASSES[row["kind"]], -row["p_mw"], -row["q_mvar"])


def write_storages(w: TripleWriter, rows, iri_of) -> None:
    for row in rows:
        unit = _power_electronics(w, row, iri_of, CIM.BatteryUnit, row["p_mw"], row["q_mvar"])
        w.add(unit, CIM["BatteryUnit.ratedE"], row["max_e_mwh"])
        w.add(unit, CIM["BatteryUnit.storedE"], row["stored_e_mwh"])


def write_meters(w: TripleWriter, rows, iri_of) -> None:
    for row in rows:
        node = w.node(row["iri"], SAREF.Meter, row["name"])
        w.ref(node, GT.measures, row["measured_iri"])
        w.add(node, GT.meterKind, row["kind"])
        w.ref(node, GT.feeder, iri_of["Feeder"].get(row["feeder_id"]))
        w.ref(node, GT.owner, iri_of["Participant"].get(row["owner_id"]))
        if not row["in_service"]:
            w.add(node, IN_SERVICE, False)



# --- elements of transmission and larger distribution grids: reading and writing side by side ---------------------

SHUNT_CLASSES = {"linear": CIM.LinearShuntCompensator, "nonlinear": CIM.NonlinearShuntCompensator}
BRANCH_CLASSES = {"equivalent": CIM.EquivalentBranch, "series_compensator": CIM.SeriesCompensator}
MOTOR_KIND = CIM["AsynchronousMachineKind.motor"]
SHUNT_NUMBERS: Numbers = (("nom_u_kv", CIM["ShuntCompensator.nomU"], None),
                          ("b_per_section_s", CIM["LinearShuntCompensator.bPerSection"], None),
                          ("g_per_section_s", CIM["LinearShuntCompensator.gPerSection"], None))
SYNCHRONOUS_MACHINE_NUMBERS: Numbers = (("rated_s_mva", CIM["RotatingMachine.ratedS"], None),
                                        ("rated_u_kv", CIM["RotatingMachine.ratedU"], None),
                                        ("min_q_mvar", CIM["SynchronousMachine.minQ"], None),
                                        ("max_q_mvar", CIM["SynchronousMachine.maxQ"], None))
MOTOR_NUMBERS: Numbers = (("p_mw", CIM["RotatingMachine.p"], 0.0), ("q_mvar", CIM["RotatingMachine.q"], 0.0),
                          ("rated_u_kv", CIM["RotatingMachine.ratedU"], None),
                          ("rated_mechanical_p_mw", CIM["AsynchronousMachine.ratedMechanicalPower"], None),
                          ("efficiency_percent", CIM["AsynchronousMachine.efficiency"], 100.0),
                          ("rated_power_factor", CIM["AsynchronousMachine.ratedPowerFactor"], None),
                          ("locked_rotor_current_ratio", CIM["AsynchronousMachine.iaIrRatio"], None),
                          ("locked_rotor_rx_ratio", CIM["AsynchronousMachine.rxLockedRotorRatio"], None))


def read_shunt_compensators(index: GraphIndex) -> Iterator[dict]:
    kinds = {cls: kind for kind, cls in SHUNT_CLASSES.items()}
    for node in sorted({n for cls in SHUNT_CLASSES.values() for n in index.instances(cls)}):
        parts, bus = _one_terminal(index, node)
        kind = next(kinds[t] for t in index.types(node) if t in kinds)
        points = []
        for point in index.referrers(POINT_SHUNT, node):
            number = int(index.value(point, CIM["NonlinearShuntCompensatorPoint.sectionNumber"]))
            parts[f"Point{number}"] = str(point)
            points.append({"section": number, "b_s": _float(index, point, CIM["NonlinearShuntCompensatorPoint.b"], 0.0),
                           "g_s": _float(index, point, CIM["NonlinearShuntCompensatorPoint.g"], 0.0)})
        maximum = int(index.value(node, CIM["ShuntCompensator.maximumSections"], 1))
        if kind == "nonlinear" and sorted(p["section"] for p in points) != list(range(1, maximum + 1)):
            raise CodecError(str(node), f"a non-linear shunt compensator needs one point per section 1 … {maximum} (maximumSections)")
        normal = index.value(node, CIM["ShuntCompensator.normalSections"])
        yield {
            **_common(index, node, parts),
            "bus": bus,
            "kind": kind,
            **_read_numbers(index, node, SHUNT_NUMBERS),
            "sections": _float(index, node, CIM["ShuntCompensator.sections"], normal if normal is not None else maximum),
            "maximum_sections": maximum,
            "normal_sections": int(normal) if normal is not None else None,
            "points": sorted(points, key=lambda p: p["section"]),
        }


def write_shunt_compensators(w: TripleWriter, rows, iri_of) -> None:
    for row in rows:
        node = w.equipment(row, SHUNT_CLASSES[row["kind"]], _iris(row, iri_of, "bus"))
        _write_numbers(w, node, row, SHUNT_NUMBERS)
        w.add(node, CIM["ShuntCompensator.sections"], row["sections"])
        w.add(node, CIM["ShuntCompensator.maximumSections"], row["maximum_sections"])
        w.add(node, CIM["ShuntCompensator.normalSections"], row["normal_sections"])
        for point in row["points"] or []:
            subject = w.node(part_iri(row, f"Point{point['section']}"), CIM.NonlinearShuntCompensatorPoint)
            w.graph.add((subject, POINT_SHUNT, node))
            w.add(subject, CIM["NonlinearShuntCompensatorPoint.sectionNumber"], point["section"])
            w.add(subject, CIM["NonlinearShuntCompensatorPoint.b"], float(point["b_s"]))
            w.add(subject, CIM["NonlinearShuntCompensatorPoint.g"], float(point["g_s"]))


def _regulated_terminal(index: GraphIndex, node, control, parts: dict) -> None:
    """A machine regulates its own terminal: a RegulatingControl on another terminal (remote regulation) is refused."""
    terminal = index.ref(control, RC_TERMINAL)
    if terminal is not None and terminal != parts["T1"]:
        raise CodecError(str(node), f"remote voltage regulation (cim:RegulatingControl.Terminal {terminal}) is not supported: "
                                    "a machine regulates its own terminal")


def read_synchronous_machines(index: GraphIndex) -> Iterator[dict]:
    for node in index.instances(CIM.SynchronousMachine):
        parts, bus = _one_terminal(index, node)
        control = index.value(node, REG_CONTROL)
        target_kv = None
        enabled = bool(index.value(node, CIM["RegulatingCondEq.controlEnabled"], control is not None))
        if control is not None:
            parts["RegulatingControl"] = str(control)
            _regulated_terminal(index, node, control, parts)
            target_kv = _float(index, control, CIM["RegulatingControl.targetValue"])
            enabled = enabled and bool(index.value(control, CIM["RegulatingControl.enabled"], True))
        if enabled and target_kv is None:
            raise CodecError(str(node), "a voltage-controlling machine needs a cim:RegulatingControl with its target in kV")
        yield {
            **_common(index, node, parts),
            "bus": bus,
            "p_mw": 0.0 - _float(index, node, CIM["RotatingMachine.p"], 0.0),  # 0.0 − x: a zero stays +0.0 both ways
            "q_mvar": 0.0 - _float(index, node, CIM["RotatingMachine.q"], 0.0),
            **_read_numbers(index, node, SYNCHRONOUS_MACHINE_NUMBERS),
            "control_enabled": enabled,
            "vm_target_kv": target_kv,
            "reference_priority": int(index.value(node, CIM["SynchronousMachine.referencePriority"], 0)),
            "profile": str(index.value(node, GT.profile, "")),
        }


def write_synchronous_machines(w: TripleWriter, rows, iri_of) -> None:
    for row in rows:
        node = w.equipment(row, CIM.SynchronousMachine, _iris(row, iri_of, "bus"))
        w.add(node, CIM["RotatingMachine.p"], 0.0 - row["p_mw"])
        w.add(node, CIM["RotatingMachine.q"], 0.0 - row["q_mvar"])
        _write_numbers(w, node, row, SYNCHRONOUS_MACHINE_NUMBERS)
        w.add(node, CIM["SynchronousMachine.referencePriority"], row["reference_priority"] or None)
        w.add(node, CIM["RegulatingCondEq.controlEnabled"], row["control_enabled"])
        w.add(node, GT.profile, row["profile"])
        if row["vm_target_kv"] is not None:
            control = w.node(part_iri(row, "RegulatingControl"), CIM.RegulatingControl)
            w.graph.add((node, REG_CONTROL, control))
            w.graph.add((control, CIM["RegulatingControl.mode"], CIM["RegulatingControlModeKind.voltage"]))
            w.ref(control, RC_TERMINAL, w.terminal_iri(row, 1))
            w.add(control, CIM["RegulatingControl.targetValue"], row["vm_target_kv"])
            w.add(control, CIM["RegulatingControl.enabled"], True)


def read_asynchronous_machines(index: GraphIndex) -> Iterator[dict]:
    for node in index.instances(CIM.AsynchronousMachine):
        parts, bus = _one_terminal(index, node)
        kind = index.value(node, CIM["AsynchronousMachine.asynchronousMachineType"], MOTOR_KIND)
        if str(kind) != str(MOTOR_KIND):
            raise CodecError(str(node), "only motors (cim:AsynchronousMachineKind.motor) are supported, not asynchronous generators")
        yield {
            **_common(index, node, parts),
            "bus": bus,
            **_read_numbers(index, node, MOTOR_NUMBERS),
        }


def write_asynchronous_machines(w: TripleWriter, rows, iri_of) -> None:
    for row in rows:
        node = w.equipment(row, CIM.AsynchronousMachine, _iris(row, iri_of, "bus"))
        w.graph.add((node, CIM["AsynchronousMachine.asynchronousMachineType"], MOTOR_KIND))
        _write_numbers(w, node, row, MOTOR_NUMBERS)


WINDINGS = (("hv", ""), ("mv", "2"), ("lv", "3"))  # end 1, 2, 3: bus prefix and impedance suffix


def read_three_winding_transformers(index: GraphIndex) -> Iterator[dict]:
    for node in index.instances(CIM.PowerTransformer):
        ends = {int(index.value(e, END_NUMBER, 0)): e for e in index.referrers(END_TRAFO, node)}
        if sorted(ends) == [1, 2, 3]:
            yield _three_winding_row(index, node, ends)


def _three_winding_row(index: GraphIndex, node, ends: dict) -> dict:
    row = _common(index, node, {})
    for number, (side, suffix) in enumerate(WINDINGS, start=1):
        end = ends[number]
        terminal = index.value(end, END_TERMINAL)
        row["part_iris"][f"End{number}"] = str(end)
        row["part_iris"][f"T{number}"] = str(terminal)
        row[f"{side}_bus"] = index.ref(terminal, T_NODE)
        row[f"vn_{side}_kv"] = _float(index, end, CIM["PowerTransformerEnd.ratedU"])
        row[f"sn_{side}_mva"] = _float(index, end, CIM["PowerTransformerEnd.ratedS"])
        row[f"r{suffix}_ohm"] = _float(index, end, CIM["PowerTransformerEnd.r"], 0.0)
        row[f"x{suffix}_ohm"] = _float(index, end, CIM["PowerTransformerEnd.x"], 0.0)
        if number == 1:
            row["g_s"] = _float(index, end, CIM["PowerTransformerEnd.g"], 0.0)
            row["b_s"] = _float(index, end, CIM["PowerTransformerEnd.b"], 0.0)
        else:
            row[f"phase_angle_clock{number}"] = int(index.value(end, CIM["PowerTransformerEnd.phaseAngleClock"], 0))
    row.update(_read_tap_changer(index, ends, row["part_iris"], sides={1: "hv", 2: "mv", 3: "lv"}))
    changer = row["part_iris"].get(RATIO_TAP.part)
    if changer and index.value(changer, RATIO_TABLE) is not None:
        raise CodecError(changer, "a tabular ratio tap changer (cim:RatioTapChangerTable) on a three-winding transformer is not "
                                  "supported: the form holds tap tables on two-winding transformers")
    return row


def write_three_winding_transformers(w: TripleWriter, rows, iri_of) -> None:
    for row in rows:
        node = w.equipment(row, CIM.PowerTransformer, _iris(row, iri_of, "hv_bus", "mv_bus", "lv_bus"))
        for number, (side, suffix) in enumerate(WINDINGS, start=1):
            end = w.node(part_iri(row, f"End{number}"), CIM.PowerTransformerEnd)
            w.graph.add((end, END_TRAFO, node))
            w.add(end, END_NUMBER, number)
            w.ref(end, END_TERMINAL, w.terminal_iri(row, number))
            w.add(end, CIM["PowerTransformerEnd.ratedU"], row[f"vn_{side}_kv"])
            w.add(end, CIM["PowerTransformerEnd.ratedS"], row[f"sn_{side}_mva"])
            w.add(end, CIM["PowerTransformerEnd.r"], row[f"r{suffix}_ohm"])
            w.add(end, CIM["PowerTransformerEnd.x"], row[f"x{suffix}_ohm"])
            w.add(end, CIM["PowerTransformerEnd.g"], row["g_s"] if number == 1 else 0.0)
            w.add(end, CIM["PowerTransformerEnd.b"], row["b_s"] if number == 1 else 0.0)
            w.add(end, CIM["PowerTransformerEnd.phaseAngleClock"], row[f"phase_angle_clock{number}"] if number > 1 else 0)
        if row["tap_side"]:
            end_number = {"hv": 1, "mv": 2, "lv": 3}[row["tap_side"]]
            _write_tap_changer(w, row, end=part_iri(row, f"End{end_number}"))


def read_equivalent_branches(index: GraphIndex) -> Iterator[dict]:
    kinds = {cls: kind for kind, cls in BRANCH_CLASSES.items()}
    for node in sorted({n for cls in BRANCH_CLASSES.values() for n in index.instances(cls)}):
        parts, from_bus, to_bus = _two_terminals(index, node)
        kind = next(kinds[t] for t in index.types(node) if t in kinds)
        cls = BRANCH_CLASSES[kind].fragment
        yield {
            **_common(index, node, parts),
            "from_bus": from_bus,
            "to_bus": to_bus,
            "kind": kind,
            "r_ohm": _float(index, node, CIM[f"{cls}.r"]),
            "x_ohm": _float(index, node, CIM[f"{cls}.x"]),
            "r21_ohm": _float(index, node, CIM["EquivalentBranch.r21"]) if kind == "equivalent" else None,
            "x21_ohm": _float(index, node, CIM["EquivalentBranch.x21"]) if kind == "equivalent" else None,
        }


def write_equivalent_branches(w: TripleWriter, rows, iri_of) -> None:
    for row in rows:
        rdf_class = BRANCH_CLASSES[row["kind"]]
        node = w.equipment(row, rdf_class, _iris(row, iri_of, "from_bus", "to_bus"))
        w.add(node, CIM[f"{rdf_class.fragment}.r"], row["r_ohm"])
        w.add(node, CIM[f"{rdf_class.fragment}.x"], row["x_ohm"])
        w.add(node, CIM["EquivalentBranch.r21"], row["r21_ohm"])
        w.add(node, CIM["EquivalentBranch.x21"], row["x21_ohm"])


INJECTION_NUMBERS: Numbers = (("p_mw", CIM["EquivalentInjection.p"], 0.0), ("q_mvar", CIM["EquivalentInjection.q"], 0.0),
                              ("vm_target_kv", CIM["EquivalentInjection.regulationTarget"], None),
                              ("min_q_mvar", CIM["EquivalentInjection.minQ"], None), ("max_q_mvar", CIM["EquivalentInjection.maxQ"], None))
EQUIVALENT_SHUNT_NUMBERS: Numbers = (("g_s", CIM["EquivalentShunt.g"], 0.0), ("b_s", CIM["EquivalentShunt.b"], 0.0))


def read_equivalent_injections(index: GraphIndex) -> Iterator[dict]:
    for node in index.instances(CIM.EquivalentInjection):
        parts, bus = _one_terminal(index, node)
        status = bool(index.value(node, CIM["EquivalentInjection.regulationStatus"], False))
        numbers = _read_numbers(index, node, INJECTION_NUMBERS)
        if status and numbers["vm_target_kv"] is None:
            raise CodecError(str(node), "a regulating equivalent injection needs cim:EquivalentInjection.regulationTarget in kV")
        yield {
            **_common(index, node, parts),
            "bus": bus,
            **numbers,
            "regulation_capability": bool(index.value(node, CIM["EquivalentInjection.regulationCapability"], status)),
            "regulation_status": status,
        }


def write_equivalent_injections(w: TripleWriter, rows, iri_of) -> None:
    for row in rows:
        node = w.equipment(row, CIM.EquivalentInjection, _iris(row, iri_of, "bus"))
        _write_numbers(w, node, row, INJECTION_NUMBERS)
        w.add(node, CIM["EquivalentInjection.regulationCapability"], row["regulation_capability"])
        w.add(node, CIM["EquivalentInjection.regulationStatus"], row["regulation_status"])


def read_equivalent_shunts(index: GraphIndex) -> Iterator[dict]:
    for node in index.instances(CIM.EquivalentShunt):
        parts, bus = _one_terminal(index, node)
        yield {**_common(index, node, parts), "bus": bus, **_read_numbers(index, node, EQUIVALENT_SHUNT_NUMBERS)}


def write_equivalent_shunts(w: TripleWriter, rows, iri_of) -> None:
    for row in rows:
        node = w.equipment(row, CIM.EquivalentShunt, _iris(row, iri_of, "bus"))
        _write_numbers(w, node, row, EQUIVALENT_SHUNT_NUMBERS)


SVC_MODES = {"voltage": CIM["SVCControlMode.voltage"], "reactive_power": CIM["SVCControlMode.reactivePower"]}
SVC_NUMBERS: Numbers = (("capacitive_rating_ohm", CIM["StaticVarCompensator.capacitiveRating"], None),
                        ("inductive_rating_ohm", CIM["StaticVarCompensator.inductiveRating"], None),
                        ("vm_target_kv", CIM["StaticVarCompensator.voltageSetPoint"], None), ("q_mvar", CIM["StaticVarCompensator.q"], 0.0))


def read_static_var_compensators(index: GraphIndex) -> Iterator[dict]:
    modes = {str(term): mode for mode, term in SVC_MODES.items()}
    for node in index.instances(CIM.StaticVarCompensator):
        parts, bus = _one_terminal(index, node)
        mode = modes[str(index.value(node, CIM["StaticVarCompensator.sVCControlMode"], SVC_MODES["voltage"]))]
        enabled = bool(index.value(node, CIM["RegulatingCondEq.controlEnabled"], True))
        numbers = _read_numbers(index, node, SVC_NUMBERS)
        if mode == "voltage" and enabled and numbers["vm_target_kv"] is None:
            raise CodecError(str(node), "a voltage-controlling static VAR compensator needs cim:StaticVarCompensator.voltageSetPoint in kV")
        yield {
            **_common(index, node, parts),
            "bus": bus,
            **numbers,
            "control_mode": mode,
            "control_enabled": enabled,
        }


def write_static_var_compensators(w: TripleWriter, rows, iri_of) -> None:
    for row in rows:
        node = w.equipment(row, CIM.StaticVarCompensator, _iris(row, iri_of, "bus"))
        _write_numbers(w, node, row, SVC_NUMBERS)
        w.graph.add((node, CIM["StaticVarCompensator.sVCControlMode"], SVC_MODES[row["control_mode"]]))
        w.add(node, CIM["RegulatingCondEq.controlEnabled"], row["control_enabled"])


ELEMENT_READERS = {
    "ThreeWindingTransformer": read_three_winding_transformers,
    "ShuntCompensator": read_shunt_compensators,
    "SynchronousMachine": read_synchronous_machines,
    "AsynchronousMachine": read_asynchronous_machines,
    "EquivalentBranch": read_equivalent_branches,
    "EquivalentInjection": read_equivalent_injections,
    "EquivalentShunt": read_equivalent_shunts,
    "StaticVarCompensator": read_static_var_compensators,
}


WRITERS = [
    ("ExternalGrid", write_external_grids),
    ("Line", write_lines),
    ("Transformer", write_transformers),
    ("Switch", write_switches),
    ("Load", write_consumers),
    ("StaticGenerator", write_generators),
    ("Storage", write_storages),
    ("EVCharger", lambda w, rows, iri_of: write_consumers(w, rows, iri_of, charger=True)),
    ("Meter", write_meters),
    ("ShuntCompensator", write_shunt_compensators),
    ("SynchronousMachine", write_synchronous_machines),
    ("AsynchronousMachine", write_asynchronous_machines),
    ("ThreeWindingTransformer", write_three_winding_transformers),
    ("EquivalentBranch", write_equivalent_branches),
    ("EquivalentInjection", write_equivalent_injections),
    ("EquivalentShunt", write_equivalent_shunts),
    ("StaticVarCompensator", write_static_var_compensators),
]


def rows_to_graph(grid: dict, rows: dict[str, list[dict]], iri_of: dict[str, dict]) -> Graph:
    """Write a grid's rows (as `QuerySet.values()` gives them) as triples.

    `iri_of` maps model name → primary key → IRI for everything rows refer to by foreign key
    (Participant, Feeder, BaseVoltage, Bus).
    """
    w = TripleWriter()
    node = w.node(grid["iri"], GT.Grid, grid["name"])
    w.ref(node, GT.owner, iri_of["Participant"].get(grid["owner_id"]))
    for row in rows["Feeder"]:
        w.node(row["iri"], CIM.Feeder, row["name"])
    for row in rows["BaseVoltage"]:
        base_voltage = w.node(row["iri"], CIM.BaseVoltage, row["name"])
        w.add(base_voltage, CIM["BaseVoltage.nominalVoltage"], row["nominal_voltage_kv"])
    write_buses(w, rows["Bus"], iri_of)
    for model_name, writer in WRITERS:
        writer(w, rows[model_name], iri_of)
    return w.graph

