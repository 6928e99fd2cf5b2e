"""The gridtwin RDF form (see `twin.rdf_codec`) → CGMES 2.4.15 or 3.0 profiles EQ, TP, SSH and, from a load-flow run, SV.

The export is bus-branch: every twin bus is a cim:TopologicalNode (TP) in a VoltageLevel of its own Substation
(EQ containers, which pandapower's ``from_cim`` needs to find a node's nominal voltage), under one
SubGeographicalRegion. Each profile is one RDF/XML file with its ``md:FullModel`` header (profile URIs,
``Model.DependentOn`` on the profiles it refers into, ``scenarioTime``, ``created``). Identity:

* an IRI ``urn:uuid:X`` keeps X as its mRID; any other twin IRI gets the UUIDv5 of the IRI, so exporting the same
  grid twice gives the same mRIDs, and the twin's importer (which maps a UUID mRID to ``urn:uuid:<mRID>``) reads
  them back as the same objects on every further round;
* objects are written ``rdf:ID="_<mRID>"`` in the profile that defines them and ``rdf:about="#_<mRID>"`` elsewhere.

Mapping (the twin form is CIM100 already; what changes is noted): lines, two- and three-winding transformers (ends with
``TransformerEnd.BaseVoltage`` and ``connectionKind``; the twin's ``PowerTransformerEnd.b`` ≥ 0 inductive is flipped
into CIM's y = g + jb), RatioTapChangers (with their RatioTapChangerTable) and PhaseTapChangerLinear / Symmetrical /
Asymmetrical / Tabular (with their PhaseTapChangerTable; steps in SSH), static VAR compensators, loads (EnergyConsumer, constant
power), external grids (ExternalNetworkInjection with its referencePriority and a voltage RegulatingControl),
synchronous machines (with a GeneratingUnit; PV through their RegulatingControl), linear and non-linear shunt
compensators, EquivalentBranch / EquivalentShunt / EquivalentInjection, SeriesCompensators, switches. Static
generators (PV, wind, battery) are cim:PowerElectronicsConnection with their unit in 3.0; CIM16 has no such class, so
in 2.4.15 (and for the twin's "other" units in both) they are ExternalNetworkInjections with their control off — what
both the twin's importer and pandapower read as a static generator. Out-of-service equipment has its terminals
disconnected (and ``Equipment.inService`` false in 3.0). Objects are written sorted by class and mRID, so export →
import → export gives the same files but for the header.

Motors (cim:AsynchronousMachine) are not written yet: they raise `ConversionError` naming the node, so an export never
silently drops power-carrying equipment.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

import pyoxigraph as ox
from rdflib import Graph
from rdflib.namespace import RDF

from ontology.document import RdfDocument
from ontology.errors import ConversionError
from ontology.namespaces import CIM, CIM16

MD = "http://iec.ch/TC57/61970-552/ModelDescription/1#"
RDF_NS = str(RDF)
VERSIONS = ("2.4.15", "3.0")
PROFILES = ("EQ", "TP", "SSH", "SV")
PROFILE_URIS = {
    "2.4.15": {
        "EQ": ("http://entsoe.eu/CIM/EquipmentCore/3/1", "http://entsoe.eu/CIM/EquipmentOperation/3/1"),
        "TP": ("http://entsoe.eu/CIM/Topology/4/1",),
        "SSH": ("http://entsoe.eu/CIM/SteadyStateHypothesis/1/1",),
        "SV": ("http://entsoe.eu/CIM/StateVariables/4/1",),
    },
    "3.0": {
        "EQ": ("http://iec.ch/TC57/ns/CIM/CoreEquipment-EU/3.0", "http://iec.ch/TC57/ns/CIM/Operation-EU/3.0"),
        "TP": ("http://iec.ch/TC57/ns/CIM/Topology-EU/3.0",),
        "SSH": ("http://iec.ch/TC57/ns/CIM/SteadyStateHypothesis-EU/3.0",),
        "SV": ("http://iec.ch/TC57/ns/CIM/StateVariables-EU/3.0",),
    },
}
DEPENDS_ON = {"EQ": (), "TP": ("EQ",), "SSH": ("EQ",), "SV": ("TP", "SSH")}
MRID_NAMESPACE = uuid.UUID("6f1c3e9a-52d4-4f0e-9b8a-9d3c1a7e2b10")
SWITCH_CLASSES = ("Switch", "Breaker", "LoadBreakSwitch", "Disconnector", "Fuse")
NOT_EXPORTED = ("AsynchronousMachine",)
# attributes CGMES readers expect even where the twin leaves them out, and where their value comes from
FALLBACK = {"EquivalentBranch.r21": "EquivalentBranch.r", "EquivalentBranch.x21": "EquivalentBranch.x"}
# classes written as the twin holds them: (EQ attributes, SSH attributes); a missing value is left out
PLAIN_EQUIPMENT = {
    "EquivalentBranch": (("EquivalentBranch.r", "EquivalentBranch.x", "EquivalentBranch.r21", "EquivalentBranch.x21"), ()),
    "SeriesCompensator": (("SeriesCompensator.r", "SeriesCompensator.x"), ()),
    "EquivalentShunt": (("EquivalentShunt.g", "EquivalentShunt.b"), ()),
    "EquivalentInjection": (
        ("EquivalentInjection.regulationCapability", "EquivalentInjection.minQ", "EquivalentInjection.maxQ"),
        ("EquivalentInjection.p", "EquivalentInjection.q", "EquivalentInjection.regulationStatus", "EquivalentInjection.regulationTarget"),
    ),
}
UNIT_CLASSES = ("PhotoVoltaicUnit", "PowerElectronicsWindUnit", "BatteryUnit")
PHASE_TAP_CLASSES = ("PhaseTapChangerLinear", "PhaseTapChangerSymmetrical", "PhaseTapChangerAsymmetrical", "PhaseTapChangerTabular")


def cim(name: str) -> str:
    return str(CIM[name])


def mrid(iri: str) -> str:
    """The CGMES mRID of a twin IRI: the UUID of a ``urn:uuid:`` IRI, else a UUIDv5 of the IRI."""
    if iri.startswith("urn:uuid:"):
        return iri[len("urn:uuid:") :]
    return str(uuid.uuid5(MRID_NAMESPACE, iri))


@dataclass
class BusState:
    """The solved voltage of one bus, as a load-flow run stored it."""

    vm_pu: float
    va_degree: float


@dataclass
class CimObject:
    """One object as a profile writes it: class, mRID and (local name → literal or ('ref'|'enum', target)) values."""

    cim_class: str
    mrid: str
    values: list[tuple[str, object]] = field(default_factory=list)
    defines: bool = True


class ProfileSet:
    """The objects of each profile, in the order they are added."""

    def __init__(self):
        self.objects: dict[str, dict[tuple[str, str], CimObject]] = {p: {} for p in PROFILES}

    def put(self, profile: str, cim_class: str, key: str, defines: bool = True, **values) -> CimObject:
        """Add values to object `key` (an mRID) in `profile`; None values are left out; ref values are (`ref`, mRID)."""
        obj = self.objects[profile].setdefault((cim_class, key), CimObject(cim_class, key, defines=defines))
        obj.values.extend((name.replace("__", "."), value) for name, value in values.items() if value is not None)
        return obj


def literal_value(term):
    """An object term as a Python value: IRIs (and blank nodes) as strings, typed literals as numbers and booleans."""
    if not isinstance(term, ox.Literal):
        return term.value if isinstance(term, ox.NamedNode) else f"_:{term.value}"
    datatype = term.datatype.value.rsplit("#", 1)[-1]
    if datatype in ("double", "float", "decimal"):
        return float(term.value)
    if datatype in ("integer", "int", "long", "short", "nonNegativeInteger", "positiveInteger"):
        return int(term.value)
    if datatype == "boolean":
        return term.value in ("true", "1")
    return term.value


class GridReader:
    """The twin form read as subject → predicate local name → values, with the terminal links."""

    def __init__(self, graph: Graph | RdfDocument):
        self.out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        self.by_type: dict[str, list[str]] = defaultdict(list)
        self.terminals_of: dict[str, list[str]] = defaultdict(list)
        self.referrers: dict[tuple[str, str], list[str]] = defaultdict(list)
        for quad in RdfDocument.from_graph(graph).quads:
            subject, predicate = quad.subject.value, quad.predicate.value
            value = literal_value(quad.object)
            if predicate == str(RDF.type):
                self.by_type[str(value).split("#")[-1]].append(subject)
                continue
            name = predicate.split("#")[-1] if predicate.startswith(str(CIM)) else predicate
            self.out[subject][name].append(value)
            if not isinstance(value, (int, float, bool)):
                self.referrers[(name, str(value))].append(subject)

    def instances(self, cim_class: str) -> list[str]:
        return sorted(set(self.by_type.get(cim_class, [])))

    def value(self, node: str, name: str, default=None):
        values = self.out[node].get(name)
        return values[0] if values else default

    def ref(self, node: str, name: str) -> str | None:
        value = self.value(node, name)
        return None if value is None else str(value)

    def inverse(self, name: str, node: str) -> list[str]:
        return sorted(self.referrers.get((name, node), []))

    def terminals(self, equipment: str) -> list[str]:
        found = self.inverse("Terminal.ConductingEquipment", equipment)
        return sorted(found, key=lambda t: self.value(t, "ACDCTerminal.sequenceNumber", 0))

    def in_service(self, node: str) -> bool:
        return self.value(node, "Equipment.inService") is not False


class Exporter:
    """Writes one grid's objects into the four profiles of one CGMES version."""

    def __init__(self, reader: GridReader, version: str):
        self.g = reader
        self.version = version
        self.p = ProfileSet()
        self.bus_voltage_level: dict[str, str] = {}
        self.base_voltage_of: dict[str, str] = {}
        # named by the buses, not the grid IRI, so that a grid read back from the export exports the same region
        self.region = mrid("region:" + min((mrid(b) for b in reader.instances("TopologicalNode")), default=""))

    # -- identity and common parts --

    def name(self, node: str) -> str:
        return self.g.value(node, "IdentifiedObject.name") or mrid(node)

    def identified(self, profile: str, cim_class: str, node: str, **values) -> CimObject:
        return self.p.put(
            profile, cim_class, mrid(node), IdentifiedObject__name=self.name(node), IdentifiedObject__mRID=mrid(node), **values
        )

    def equipment(self, cim_class: str, node: str, container: str | None = None, **values) -> CimObject:
        """An equipment in EQ in `container` (default its first terminal's VoltageLevel), with its terminals (EQ, TP, SSH)."""
        terminals = self.g.terminals(node)
        if not terminals:
            raise ConversionError(f"{cim_class} {node} has no terminal", node=node)
        container = container or self.bus_voltage_level[self.g.ref(terminals[0], "Terminal.TopologicalNode")]
        obj = self.identified("EQ", cim_class, node, Equipment__EquipmentContainer=("ref", container), **values)
        if cim_class != "PowerTransformer":  # a transformer's voltages are its ends'
            base = self.g.ref(self.g.ref(terminals[0], "Terminal.TopologicalNode"), "TopologicalNode.BaseVoltage")
            obj.values.append(("ConductingEquipment.BaseVoltage", ("ref", mrid(base))))
        if self.version == "3.0":
            self.p.put("SSH", cim_class, mrid(node), defines=False, Equipment__inService=self.g.in_service(node))
        for number, terminal in enumerate(terminals, 1):
            bus = self.g.ref(terminal, "Terminal.TopologicalNode")
            self.identified(
                "EQ", "Terminal", terminal, Terminal__ConductingEquipment=("ref", mrid(node)), ACDCTerminal__sequenceNumber=number
            )
            self.p.put("TP", "Terminal", mrid(terminal), defines=False, Terminal__TopologicalNode=("ref", mrid(bus)))
            self.p.put("SSH", "Terminal", mrid(terminal), defines=False, ACDCTerminal__connected=self.g.in_service(node))
        return obj

    def bus_of(self, node: str, number: int = 0) -> str:
        return self.g.ref(self.g.terminals(node)[number], "Terminal.TopologicalNode")

    def nominal_kv(self, bus: str) -> float:
        return float(self.g.value(self.g.ref(bus, "TopologicalNode.BaseVoltage"), "BaseVoltage.nominalVoltage"))

    # -- containers and nodes --

    def write_containers_and_nodes(self) -> None:
        region, sub_region = self.region, mrid(f"subregion:{self.region}")
        self.p.put("EQ", "GeographicalRegion", region, IdentifiedObject__name="gridtwin")
        self.p.put(
            "EQ", "SubGeographicalRegion", sub_region, IdentifiedObject__name="gridtwin", SubGeographicalRegion__Region=("ref", region)
        )
        for base in self.g.instances("BaseVoltage"):
            self.identified("EQ", "BaseVoltage", base, BaseVoltage__nominalVoltage=self.g.value(base, "BaseVoltage.nominalVoltage"))
        for bus in self.g.instances("TopologicalNode"):
            substation, level = mrid("substation:" + mrid(bus)), mrid("voltage-level:" + mrid(bus))
            base = mrid(self.g.ref(bus, "TopologicalNode.BaseVoltage"))
            self.p.put("EQ", "Substation", substation, IdentifiedObject__name=self.name(bus), Substation__Region=("ref", sub_region))
            self.p.put(
                "EQ",
                "VoltageLevel",
                level,
                IdentifiedObject__name=self.name(bus),
                VoltageLevel__BaseVoltage=("ref", base),
                VoltageLevel__Substation=("ref", substation),
            )
            self.bus_voltage_level[bus] = level
            self.identified(
                "TP",
                "TopologicalNode",
                bus,
                TopologicalNode__BaseVoltage=("ref", base),
                TopologicalNode__ConnectivityNodeContainer=("ref", level),
            )

    # -- equipment --

    def write_lines(self) -> None:
        for line in self.g.instances("ACLineSegment"):
            v = self.g.value
            self.equipment(
                "ACLineSegment",
                line,
                Conductor__length=v(line, "Conductor.length", 1.0),
                ACLineSegment__r=v(line, "ACLineSegment.r"),
                ACLineSegment__x=v(line, "ACLineSegment.x"),
                ACLineSegment__bch=v(line, "ACLineSegment.bch", 0.0),
                ACLineSegment__gch=v(line, "ACLineSegment.gch", 0.0),
            )

    def write_transformers(self) -> None:
        for transformer in self.g.instances("PowerTransformer"):
            ends = sorted(
                self.g.inverse("PowerTransformerEnd.PowerTransformer", transformer),
                key=lambda e: self.g.value(e, "TransformerEnd.endNumber"),
            )
            if len(ends) not in (2, 3):
                raise ConversionError(f"PowerTransformer {transformer} has {len(ends)} windings", node=transformer)
            self.equipment("PowerTransformer", transformer, container=mrid("substation:" + mrid(self.bus_of(transformer))))
            for end in ends:
                self.write_end(transformer, end)

    def write_end(self, transformer: str, end: str) -> None:
        v = self.g.value
        terminal = self.g.ref(end, "TransformerEnd.Terminal")
        bus = self.g.ref(terminal, "Terminal.TopologicalNode")
        self.identified(
            "EQ",
            "PowerTransformerEnd",
            end,
            PowerTransformerEnd__PowerTransformer=("ref", mrid(transformer)),
            TransformerEnd__endNumber=v(end, "TransformerEnd.endNumber"),
            TransformerEnd__Terminal=("ref", mrid(terminal)),
            TransformerEnd__BaseVoltage=("ref", mrid(self.g.ref(bus, "TopologicalNode.BaseVoltage"))),
            PowerTransformerEnd__ratedU=v(end, "PowerTransformerEnd.ratedU"),
            PowerTransformerEnd__ratedS=v(end, "PowerTransformerEnd.ratedS"),
            PowerTransformerEnd__r=v(end, "PowerTransformerEnd.r", 0.0),
            PowerTransformerEnd__x=v(end, "PowerTransformerEnd.x", 0.0),
            PowerTransformerEnd__g=v(end, "PowerTransformerEnd.g", 0.0),
            PowerTransformerEnd__b=-v(end, "PowerTransformerEnd.b", 0.0),  # twin: b ≥ 0 inductive; CIM: b < 0 inductive
            PowerTransformerEnd__phaseAngleClock=v(end, "PowerTransformerEnd.phaseAngleClock", 0),
            PowerTransformerEnd__connectionKind=("enum", "WindingConnection.Y"),
        )
        for changer in self.g.inverse("RatioTapChanger.TransformerEnd", end):
            self.write_ratio_tap_changer(changer, end)
        for changer in self.g.inverse("PhaseTapChanger.TransformerEnd", end):
            self.write_phase_tap_changer(changer, end)

    def tap_steps(self, changer: str, end: str) -> dict:
        """The EQ step range of a tap changer (neutral and normal default to 0 / neutral)."""
        neutral = self.g.value(changer, "TapChanger.neutralStep", 0)
        return {
            "TapChanger.lowStep": self.g.value(changer, "TapChanger.lowStep"),
            "TapChanger.highStep": self.g.value(changer, "TapChanger.highStep"),
            "TapChanger.neutralStep": neutral,
            "TapChanger.normalStep": self.g.value(changer, "TapChanger.normalStep", neutral),
            "TapChanger.neutralU": self.g.value(end, "PowerTransformerEnd.ratedU"),
            "TapChanger.ltcFlag": False,
        }

    def tap_state(self, cim_class: str, changer: str) -> None:
        step = self.g.value(changer, "TapChanger.step", self.g.value(changer, "TapChanger.neutralStep", 0))
        self.p.put("SSH", cim_class, mrid(changer), defines=False, TapChanger__step=float(step), TapChanger__controlEnabled=False)

    def write_phase_tap_changer(self, changer: str, end: str) -> None:
        """The phase tap changer in its own class: linear (increment per step), symmetrical / asymmetrical (voltage step, and
        winding angle), tabular (its PhaseTapChangerTable); x at every step is the end's (xMin = xMax)."""
        cim_class = next((c for c in PHASE_TAP_CLASSES if changer in self.g.instances(c)), "PhaseTapChangerLinear")
        v = self.g.value
        values = {"PhaseTapChanger__TransformerEnd": ("ref", mrid(end))}
        if cim_class == "PhaseTapChangerLinear":
            values["PhaseTapChangerLinear__stepPhaseShiftIncrement"] = v(changer, "PhaseTapChangerLinear.stepPhaseShiftIncrement")
        if cim_class in ("PhaseTapChangerSymmetrical", "PhaseTapChangerAsymmetrical"):
            values["PhaseTapChangerNonLinear__voltageStepIncrement"] = v(changer, "PhaseTapChangerNonLinear.voltageStepIncrement")
            values["PhaseTapChangerAsymmetrical__windingConnectionAngle"] = v(changer, "PhaseTapChangerAsymmetrical.windingConnectionAngle")
        if cim_class != "PhaseTapChangerTabular":
            prefix = "PhaseTapChangerLinear" if cim_class == "PhaseTapChangerLinear" else "PhaseTapChangerNonLinear"
            values[f"{prefix}__xMin"] = values[f"{prefix}__xMax"] = v(end, "PowerTransformerEnd.x", 0.0)
        obj = self.identified("EQ", cim_class, changer, **values)
        obj.values.extend(self.tap_steps(changer, end).items())
        self.write_tap_table(obj, changer, phase=True)
        self.tap_state(cim_class, changer)

    def write_tap_table(self, obj: CimObject, changer: str, *, phase: bool) -> None:
        """A changer's RatioTapChangerTable / PhaseTapChangerTable and its points (EQ)."""
        prefix = "Phase" if phase else "Ratio"
        link = "PhaseTapChangerTabular.PhaseTapChangerTable" if phase else "RatioTapChanger.RatioTapChangerTable"
        table = self.g.ref(changer, link)
        if table is None:
            return
        obj.values.append((link, ("ref", mrid(table))))
        self.identified("EQ", f"{prefix}TapChangerTable", table)
        for point in self.g.inverse(f"{prefix}TapChangerTablePoint.{prefix}TapChangerTable", table):
            values = {f"{prefix}TapChangerTablePoint.{prefix}TapChangerTable": ("ref", mrid(table))}
            values.update((f"TapChangerTablePoint.{q}", self.g.value(point, f"TapChangerTablePoint.{q}", 0.0)) for q in ("r", "x"))
            values.update({"TapChangerTablePoint.step": self.g.value(point, "TapChangerTablePoint.step"),
                           "TapChangerTablePoint.ratio": self.g.value(point, "TapChangerTablePoint.ratio"),
                           "TapChangerTablePoint.g": 0.0, "TapChangerTablePoint.b": 0.0})
            if phase:
                values["PhaseTapChangerTablePoint.angle"] = self.g.value(point, "PhaseTapChangerTablePoint.angle", 0.0)
            self.p.put("EQ", f"{prefix}TapChangerTablePoint", mrid(point)).values.extend(values.items())

    def write_ratio_tap_changer(self, changer: str, end: str) -> None:
        obj = self.identified(
            "EQ",
            "RatioTapChanger",
            changer,
            RatioTapChanger__TransformerEnd=("ref", mrid(end)),
            RatioTapChanger__stepVoltageIncrement=self.g.value(changer, "RatioTapChanger.stepVoltageIncrement"),
            RatioTapChanger__tculControlMode=("enum", "TransformerControlMode.volt"),
        )
        obj.values.extend(self.tap_steps(changer, end).items())
        self.write_tap_table(obj, changer, phase=False)
        self.tap_state("RatioTapChanger", changer)

    def write_switches(self) -> None:
        for cim_class in SWITCH_CLASSES:
            for switch in self.g.instances(cim_class):
                is_open = bool(self.g.value(switch, "Switch.open", False))
                self.equipment(
                    cim_class, switch, Switch__normalOpen=bool(self.g.value(switch, "Switch.normalOpen", is_open)), Switch__retained=False
                )
                self.p.put("SSH", cim_class, mrid(switch), defines=False, Switch__open=is_open)

    def write_loads(self) -> None:
        for load in self.g.instances("EnergyConsumer"):
            self.equipment("EnergyConsumer", load)
            self.p.put(
                "SSH",
                "EnergyConsumer",
                mrid(load),
                defines=False,
                EnergyConsumer__p=self.g.value(load, "EnergyConsumer.p", 0.0),
                EnergyConsumer__q=self.g.value(load, "EnergyConsumer.q", 0.0),
            )

    def write_shunts(self) -> None:
        """Linear (b, g per section) and non-linear (one point per section) shunt compensators; sections in use in SSH."""
        for cim_class in ("LinearShuntCompensator", "NonlinearShuntCompensator"):
            for shunt in self.g.instances(cim_class):
                v = self.g.value
                maximum = v(shunt, "ShuntCompensator.maximumSections", 1)
                obj = self.equipment(
                    cim_class,
                    shunt,
                    ShuntCompensator__nomU=v(shunt, "ShuntCompensator.nomU"),
                    ShuntCompensator__maximumSections=maximum,
                    ShuntCompensator__normalSections=v(shunt, "ShuntCompensator.normalSections", maximum),
                    ShuntCompensator__grounded=True,
                    ShuntCompensator__aVRDelay=0.0,
                )
                if cim_class == "LinearShuntCompensator":
                    obj.values.append(("LinearShuntCompensator.bPerSection", v(shunt, "LinearShuntCompensator.bPerSection")))
                    obj.values.append(("LinearShuntCompensator.gPerSection", v(shunt, "LinearShuntCompensator.gPerSection", 0.0)))
                self.write_shunt_points(shunt)
                sections = v(shunt, "ShuntCompensator.sections", v(shunt, "ShuntCompensator.normalSections", maximum))
                self.p.put("SSH", cim_class, mrid(shunt), defines=False, ShuntCompensator__sections=float(sections),
                           RegulatingCondEq__controlEnabled=False)

    def write_shunt_points(self, shunt: str) -> None:
        for point in self.g.inverse("NonlinearShuntCompensatorPoint.NonlinearShuntCompensator", shunt):
            self.p.put(
                "EQ",
                "NonlinearShuntCompensatorPoint",
                mrid(point),
                NonlinearShuntCompensatorPoint__NonlinearShuntCompensator=("ref", mrid(shunt)),
                NonlinearShuntCompensatorPoint__sectionNumber=self.g.value(point, "NonlinearShuntCompensatorPoint.sectionNumber"),
                NonlinearShuntCompensatorPoint__b=self.g.value(point, "NonlinearShuntCompensatorPoint.b", 0.0),
                NonlinearShuntCompensatorPoint__g=self.g.value(point, "NonlinearShuntCompensatorPoint.g", 0.0),
            )

    def write_static_var_compensators(self) -> None:
        """Ratings and a slope of 0 (EQ); control mode and voltage setpoint (EQ in 2.4.15, SSH in 3.0), q and the control switch (SSH)."""
        for svc in self.g.instances("StaticVarCompensator"):
            v = self.g.value
            obj = self.equipment("StaticVarCompensator", svc,
                                 StaticVarCompensator__capacitiveRating=v(svc, "StaticVarCompensator.capacitiveRating"),
                                 StaticVarCompensator__inductiveRating=v(svc, "StaticVarCompensator.inductiveRating"),
                                 StaticVarCompensator__slope=0.0)
            mode = str(v(svc, "StaticVarCompensator.sVCControlMode", "SVCControlMode.voltage")).rsplit("#", 1)[-1]
            setting = {"StaticVarCompensator.sVCControlMode": ("enum", mode),
                       "StaticVarCompensator.voltageSetPoint": v(svc, "StaticVarCompensator.voltageSetPoint")}
            state = self.p.put("SSH", "StaticVarCompensator", mrid(svc), defines=False,
                               StaticVarCompensator__q=v(svc, "StaticVarCompensator.q", 0.0),
                               RegulatingCondEq__controlEnabled=v(svc, "RegulatingCondEq.controlEnabled", True) is not False)
            (state if self.version == "3.0" else obj).values.extend((k, x) for k, x in setting.items() if x is not None)

    def write_plain_equipment(self) -> None:
        """Equivalents and series compensators: the twin's attributes as they are (EQ), their set points (SSH)."""
        for cim_class, (eq_names, ssh_names) in PLAIN_EQUIPMENT.items():
            for node in self.g.instances(cim_class):
                obj = self.equipment(cim_class, node)
                obj.values.extend(self.plain_values(node, eq_names))
                self.p.put("SSH", cim_class, mrid(node), defines=False).values.extend(self.plain_values(node, ssh_names))

    def plain_values(self, node: str, names: tuple[str, ...]) -> list[tuple[str, object]]:
        found = [(name, self.g.value(node, name, self.g.value(node, FALLBACK.get(name, name)))) for name in names]
        return [(name, value) for name, value in found if value is not None]

    def regulating_control(self, equipment: str, control: str | None, target_kv: float | None, enabled: bool) -> None:
        """A voltage RegulatingControl at the equipment's own terminal (EQ mode and terminal, SSH target and switch)."""
        if control is None or target_kv is None:
            return
        terminal = self.g.terminals(equipment)[0]
        self.identified(
            "EQ",
            "RegulatingControl",
            control,
            RegulatingControl__mode=("enum", "RegulatingControlModeKind.voltage"),
            RegulatingControl__Terminal=("ref", mrid(terminal)),
        )
        self.p.put(
            "SSH",
            "RegulatingControl",
            mrid(control),
            defines=False,
            RegulatingControl__enabled=enabled,
            RegulatingControl__discrete=False,
            RegulatingControl__targetDeadband=0.0,
            RegulatingControl__targetValue=float(target_kv),
            RegulatingControl__targetValueUnitMultiplier=("enum", "UnitMultiplier.k"),
        )

    def write_external_grids(self) -> None:
        for grid in self.g.instances("ExternalNetworkInjection"):
            control = self.g.ref(grid, "RegulatingCondEq.RegulatingControl")
            target_kv = self.g.value(control, "RegulatingControl.targetValue") if control else None
            enabled = control is not None and self.g.value(control, "RegulatingControl.enabled", True) is not False
            self.equipment(
                "ExternalNetworkInjection",
                grid,
                RegulatingCondEq__RegulatingControl=("ref", mrid(control)) if control else None,
                ExternalNetworkInjection__governorSCD=0.0,
                ExternalNetworkInjection__maxP=1e6,
                ExternalNetworkInjection__minP=-1e6,
                ExternalNetworkInjection__maxQ=1e6,
                ExternalNetworkInjection__minQ=-1e6,
            )
            self.regulating_control(grid, control, target_kv, enabled)
            self.p.put(
                "SSH",
                "ExternalNetworkInjection",
                mrid(grid),
                defines=False,
                ExternalNetworkInjection__p=0.0,
                ExternalNetworkInjection__q=0.0,
                ExternalNetworkInjection__referencePriority=self.g.value(grid, "ExternalNetworkInjection.referencePriority", 1),
                RegulatingCondEq__controlEnabled=enabled,
            )

    def write_synchronous_machines(self) -> None:
        for machine in self.g.instances("SynchronousMachine"):
            v = self.g.value
            control = self.g.ref(machine, "RegulatingCondEq.RegulatingControl")
            enabled = bool(v(machine, "RegulatingCondEq.controlEnabled", False)) and control is not None
            p_mw = v(machine, "RotatingMachine.p", 0.0)
            unit = mrid("generating-unit:" + mrid(machine))
            self.p.put(
                "EQ",
                "GeneratingUnit",
                unit,
                IdentifiedObject__name=self.name(machine),
                GeneratingUnit__maxOperatingP=max(abs(p_mw), 1e-3) * 10,
                GeneratingUnit__minOperatingP=0.0,
                GeneratingUnit__initialP=-p_mw,
                Equipment__EquipmentContainer=("ref", self.bus_voltage_level[self.bus_of(machine)]),
            )
            rated_u_kv = v(machine, "RotatingMachine.ratedU") or self.nominal_kv(self.bus_of(machine))
            self.equipment(
                "SynchronousMachine",
                machine,
                RotatingMachine__GeneratingUnit=("ref", unit),
                RotatingMachine__ratedS=v(machine, "RotatingMachine.ratedS") or max(abs(p_mw), 1e-3) * 10,
                RotatingMachine__ratedU=rated_u_kv,
                SynchronousMachine__minQ=v(machine, "SynchronousMachine.minQ", -1e6),
                SynchronousMachine__maxQ=v(machine, "SynchronousMachine.maxQ", 1e6),
                SynchronousMachine__type=("enum", "SynchronousMachineKind.generator"),
                RegulatingCondEq__RegulatingControl=("ref", mrid(control)) if control else None,
            )
            target_kv = v(control, "RegulatingControl.targetValue") if control else None
            self.regulating_control(machine, control, target_kv, enabled and v(control, "RegulatingControl.enabled", True) is not False)
            self.p.put(
                "SSH",
                "SynchronousMachine",
                mrid(machine),
                defines=False,
                RotatingMachine__p=p_mw,
                RotatingMachine__q=v(machine, "RotatingMachine.q", 0.0),
                RegulatingCondEq__controlEnabled=enabled,
                SynchronousMachine__referencePriority=v(machine, "SynchronousMachine.referencePriority", 0),
                SynchronousMachine__operatingMode=("enum", "SynchronousMachineOperatingMode.generator"),
            )

    def write_static_generators(self) -> None:
        for connection in self.g.instances("PowerElectronicsConnection"):
            units = self.g.inverse("PowerElectronicsUnit.PowerElectronicsConnection", connection)
            unit_class = next((c for c in UNIT_CLASSES for u in units if u in self.g.instances(c)), None)
            p_mw = self.g.value(connection, "PowerElectronicsConnection.p", 0.0)
            q_mvar = self.g.value(connection, "PowerElectronicsConnection.q", 0.0)
            if self.version == "3.0" and unit_class is not None:
                self.write_power_electronics(connection, units[0], unit_class, p_mw, q_mvar)
            else:
                self.equipment(
                    "ExternalNetworkInjection",
                    connection,
                    ExternalNetworkInjection__governorSCD=0.0,
                    ExternalNetworkInjection__maxP=1e6,
                    ExternalNetworkInjection__minP=-1e6,
                )
                self.p.put(
                    "SSH",
                    "ExternalNetworkInjection",
                    mrid(connection),
                    defines=False,
                    ExternalNetworkInjection__p=p_mw,
                    ExternalNetworkInjection__q=q_mvar,
                    ExternalNetworkInjection__referencePriority=0,
                    RegulatingCondEq__controlEnabled=False,
                )

    def write_power_electronics(self, connection: str, unit: str, unit_class: str, p_mw: float, q_mvar: float) -> None:
        rated_s_mva = self.g.value(connection, "PowerElectronicsConnection.ratedS") or max(math.hypot(p_mw, q_mvar), 1e-3)
        self.equipment(
            "PowerElectronicsConnection",
            connection,
            PowerElectronicsConnection__ratedS=rated_s_mva,
            PowerElectronicsConnection__ratedU=self.nominal_kv(self.bus_of(connection)),
        )
        self.identified(
            "EQ",
            unit_class,
            unit,
            PowerElectronicsUnit__PowerElectronicsConnection=("ref", mrid(connection)),
            PowerElectronicsUnit__maxP=rated_s_mva,
            PowerElectronicsUnit__minP=-rated_s_mva if unit_class == "BatteryUnit" else 0.0,
            Equipment__EquipmentContainer=("ref", self.bus_voltage_level[self.bus_of(connection)]),
            BatteryUnit__ratedE=self.g.value(unit, "BatteryUnit.ratedE") if unit_class == "BatteryUnit" else None,
        )
        self.p.put(
            "SSH",
            "PowerElectronicsConnection",
            mrid(connection),
            defines=False,
            PowerElectronicsConnection__p=p_mw,
            PowerElectronicsConnection__q=q_mvar,
            RegulatingCondEq__controlEnabled=False,
        )
        if unit_class == "BatteryUnit":
            self.p.put("SSH", "BatteryUnit", mrid(unit), defines=False, BatteryUnit__storedE=self.g.value(unit, "BatteryUnit.storedE", 0.0))

    def write_state(self, bus_states: dict[str, BusState]) -> None:
        """SvVoltage (kV, degrees) of every solved bus."""
        for bus, state in sorted(bus_states.items()):
            if state.vm_pu is None or bus not in self.bus_voltage_level:
                continue
            self.p.put(
                "SV",
                "SvVoltage",
                mrid("sv-voltage:" + mrid(bus)),
                SvVoltage__TopologicalNode=("ref", mrid(bus)),
                SvVoltage__v=state.vm_pu * self.nominal_kv(bus),
                SvVoltage__angle=state.va_degree,
            )


def refuse_unexported(reader: GridReader) -> None:
    for cim_class in NOT_EXPORTED:
        found = reader.instances(cim_class)
        if found:
            raise ConversionError(f"{cim_class} {found[0]} has no CGMES export yet", node=found[0])


# --- writing RDF/XML ----------------------------------------------------------------------------


def _xml_value(namespace: str, name: str, value) -> str:
    if isinstance(value, tuple):
        kind, target = value
        resource = f"#_{target}" if kind == "ref" else namespace + target
        return f"  <cim:{name} rdf:resource={quoteattr(resource)}/>"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = escape(str(value))
    return f"  <cim:{name}>{text}</cim:{name}>"


CIM100_ONLY = ("Equipment.inService", "IdentifiedObject.mRID")  # CIM16 has no inService; its mRID is an ENTSO-E extension


def _allowed(version: str, name: str) -> bool:
    return version != "2.4.15" or name not in CIM100_ONLY


def profile_xml(
    objects: dict, *, version: str, profile: str, model_ids: dict[str, str], scenario_time: datetime, created: datetime, description: str
) -> bytes:
    """One profile as CGMES RDF/XML: the FullModel header, then each object (rdf:ID where defined, rdf:about elsewhere)."""
    namespace = str(CIM16) if version == "2.4.15" else str(CIM)
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f"<rdf:RDF xmlns:cim={quoteattr(namespace)} xmlns:md={quoteattr(MD)} xmlns:rdf={quoteattr(RDF_NS)}>",
        f'  <md:FullModel rdf:about="urn:uuid:{model_ids[profile]}">',
        f"    <md:Model.created>{created.strftime('%Y-%m-%dT%H:%M:%SZ')}</md:Model.created>",
        f"    <md:Model.scenarioTime>{scenario_time.strftime('%Y-%m-%dT%H:%M:%SZ')}</md:Model.scenarioTime>",
        f"    <md:Model.description>{escape(description)}</md:Model.description>",
        "    <md:Model.version>1</md:Model.version>",
        *(f'    <md:Model.DependentOn rdf:resource="urn:uuid:{model_ids[d]}"/>' for d in DEPENDS_ON[profile] if d in model_ids),
        *(f"    <md:Model.profile>{uri}</md:Model.profile>" for uri in PROFILE_URIS[version][profile]),
        "    <md:Model.modelingAuthoritySet>https://gridtwin.example/</md:Model.modelingAuthoritySet>",
        "  </md:FullModel>",
    ]
    for obj in sorted(objects.values(), key=lambda o: (o.cim_class, o.mrid)):  # stable whatever the twin IRIs are
        identity = f'rdf:ID="_{obj.mrid}"' if obj.defines else f'rdf:about="#_{obj.mrid}"'
        lines.append(f"  <cim:{obj.cim_class} {identity}>")
        for name, value in obj.values:
            if _allowed(version, name):
                lines.append("  " + _xml_value(namespace, name, value))
        lines.append(f"  </cim:{obj.cim_class}>")
    lines.append("</rdf:RDF>\n")
    return "\n".join(lines).encode("utf-8")


def graph_to_cgmes(
    graph: Graph | RdfDocument,
    *,
    version: str = "3.0",
    bus_states: dict[str, BusState] | None = None,
    scenario_time: datetime | None = None,
    created: datetime | None = None,
) -> dict[str, bytes]:
    """The grid in `graph` (the twin form) as CGMES profiles: {"EQ": bytes, "TP": …, "SSH": …, "SV": … (with `bus_states`)}.

    `bus_states` maps bus IRIs to their solved voltage (a load-flow run's bus results). Raises `ConversionError`
    naming the node for an unknown version or equipment the export does not write.
    """
    if version not in VERSIONS:
        raise ConversionError(f"CGMES version {version!r} is not one of {', '.join(VERSIONS)}", node=version)
    reader = GridReader(graph)
    refuse_unexported(reader)
    exporter = Exporter(reader, version)
    exporter.write_containers_and_nodes()
    for step in (
        exporter.write_lines,
        exporter.write_transformers,
        exporter.write_switches,
        exporter.write_loads,
        exporter.write_shunts,
        exporter.write_plain_equipment,
        exporter.write_external_grids,
        exporter.write_synchronous_machines,
        exporter.write_static_generators,
        exporter.write_static_var_compensators,
    ):
        step()
    profiles = ["EQ", "TP", "SSH"]
    if bus_states is not None:
        exporter.write_state(bus_states)
        profiles.append("SV")
    grid = next(iter(reader.instances("Grid")), "urn:gridtwin:grid")
    model_ids = {p: str(uuid.uuid5(MRID_NAMESPACE, f"{grid}#{version}#{p}")) for p in profiles}
    scenario_time = scenario_time or datetime(2000, 1, 1, tzinfo=UTC)
    created = created or datetime.now(UTC)
    description = f"gridtwin export of {reader.value(grid, 'IdentifiedObject.name') or grid}"
    return {
        p: profile_xml(
            exporter.p.objects[p],
            version=version,
            profile=p,
            model_ids=model_ids,
            scenario_time=scenario_time,
            created=created,
            description=description,
        )
        for p in profiles
    }
