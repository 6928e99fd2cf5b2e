"""CGMES 2.4.15 and 3.0 (EQ, TP, SSH, optional SV) → the gridtwin RDF form (see `twin.rdf_codec`).

CGMES is RDF/XML over CIM, split into profiles that describe the same objects by mRID. The files
are read with pyoxigraph (never fetching anything; a DOCTYPE or ENTITY declaration is refused before
any parser runs), merged by mRID, and mapped onto the CIM100 subset gridtwin speaks:

* identity: ``rdf:ID="_x"`` / ``rdf:about="#_x"`` / ``urn:uuid:x`` name the same object in every
  profile; a UUID mRID becomes ``urn:uuid:<mRID>``, any other mRID (some tools export ``N12``) a
  UUIDv5 of it scoped by the grid IRI. The grid IRI itself is a UUIDv5 of the EQ models' FullModel
  IRIs, so converting the same files twice gives the same graph;
* buses are TopologicalNodes (TP). Node-breaker terminals reach theirs through
  ``ConnectivityNode.TopologicalNode``; switches with both ends in one TopologicalNode are internal
  and dropped, the others become bus–bus switches;
* lines keep their total r, x, bch, gch; the rated current is the smallest PATL CurrentLimit on the
  line or its terminals (A → kA); a missing length becomes 1 km (it does not enter the load flow);
* transformers get the HV end as end 1 (phaseAngleClock re-referred to it) and keep r, x, g, b per
  end. CGMES states the magnetising susceptance ``b`` with the sign of its admittance (NEPLAN writes
  it negative), gridtwin keeps its magnitude: b ≥ 0 is the inductive magnetising branch, as in
  `ontology.converters.pandapower_net` and pandapower's own CIM converter (``i0`` from ``√(b² + g²)``).
  The RatioTapChanger step comes from SSH, else SvTapStep, else normalStep;
* the slack is every ExternalNetworkInjection whose control is not switched off; without one, a
  regulating EquivalentInjection, else the SynchronousMachine with the best (lowest positive)
  referencePriority. Its voltage setpoint is the RegulatingControl target (kV), else the SV voltage
  at its bus, else the bus's nominal voltage; its angle is the SV angle at its bus;
* loads, machines and injections take p/q from SSH, else from the SvPowerFlow at their terminal,
  else 0; powers keep CIM's load sign convention. Machines, PQ injections and CGMES 3.0
  PowerElectronicsConnections become inverter-style static generators; machine voltage control is not
  modelled (they are PQ injections at their SSH/SV setpoint);
* equipment is out of service when CGMES 3.0 says so (Equipment.inService / normallyInService) or
  when any of its terminals is disconnected;
* SvVoltage (kV, degrees) on TopologicalNodes is kept.

Equipment that carries power but has no place in gridtwin (three-winding transformers, shunt
compensators, phase shifters, HVDC, …) raises `ConversionError` naming the object; diagram layout,
geography, containers and other power-free classes are ignored.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pyoxigraph as ox
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import RDF

from ontology import limits
from ontology.document import typed_literal
from ontology.errors import ConversionError, OntologyError
from ontology.namespaces import CIM, CIM16, GT, PREFIXES

logger = logging.getLogger(__name__)

CIM_VERSIONS = {
    str(CIM16): "CGMES 2.4.15",
    "http://iec.ch/TC57/2012/CIM-schema-cim16#": "CGMES 2.4.15",  # older CIM16 namespace, e.g. NEPLAN exports
    str(CIM): "CGMES 3.0",
}
ENTSOE_NAMESPACES = ("http://entsoe.eu/CIM/SchemaExtension/3/1#", "http://entsoe.eu/Secretariat/ProfileExtension/2#")
MD = "http://iec.ch/TC57/61970-552/ModelDescription/1#"
DCAT_DATASET = "http://www.w3.org/ns/dcat#Dataset"
DCTERMS_CONFORMS_TO = "http://purl.org/dc/terms/conformsTo"
RDF_TYPE = str(RDF.type)
FORBIDDEN_XML = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
# Relative rdf:ID / rdf:about / rdf:resource values resolve against this and are never fetched.
BASE_IRI = "urn:gridtwin:cgmes:model"
PROFILE_ORDER = ("Equipment", "Topology", "SteadyStateHypothesis", "StateVariables")
DEFAULT_LINE_LENGTH_KM = 1.0

SWITCH_KINDS = {
    "Breaker": CIM.Breaker,
    "DisconnectingCircuitBreaker": CIM.Breaker,
    "Recloser": CIM.Breaker,
    "Disconnector": CIM.Disconnector,
    "LoadBreakSwitch": CIM.LoadBreakSwitch,
    "Fuse": CIM.Fuse,
    "Switch": CIM.Switch,
    "ProtectedSwitch": CIM.Switch,
    "Sectionaliser": CIM.Switch,
    "Jumper": CIM.Switch,
}
CONSUMER_CLASSES = ("EnergyConsumer", "ConformLoad", "NonConformLoad", "StationSupply")
UNSUPPORTED_CLASSES = (
    "LinearShuntCompensator",
    "NonlinearShuntCompensator",
    "StaticVarCompensator",
    "SeriesCompensator",
    "EquivalentBranch",
    "EquivalentShunt",
    "AsynchronousMachine",
    "EnergySource",
    "PhaseTapChangerLinear",
    "PhaseTapChangerSymmetrical",
    "PhaseTapChangerAsymmetrical",
    "PhaseTapChangerTabular",
    "ACDCConverter",
    "CsConverter",
    "VsConverter",
    "DCLineSegment",
    "Clamp",
    "Cut",
)
UNIT_CLASSES = {"PhotoVoltaicUnit": CIM.PhotoVoltaicUnit, "PowerElectronicsWindUnit": CIM.PowerElectronicsWindUnit}
GENERATING_UNIT_CLASSES = {"SolarGeneratingUnit": CIM.PhotoVoltaicUnit, "WindGeneratingUnit": CIM.PowerElectronicsWindUnit}


# --- reading the profiles -----------------------------------------------------------------------


@dataclass
class CimModel:
    """The objects of all profiles merged by mRID: key → property (CIM local name) → values.

    Literal values are kept as their lexical strings, references as the key of the object they name.
    CIM properties and classes are stored by local name (``ACLineSegment.r``), so CGMES 2.4.15 and 3.0
    read alike; ENTSO-E extensions get an ``entsoe:`` prefix, other namespaces keep the full IRI.
    """

    namespace: str = ""
    objects: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    by_type: dict = field(default_factory=lambda: defaultdict(set))
    inverse: dict = field(default_factory=lambda: defaultdict(set))

    def add(self, key: str, prop: str, value: str, is_ref: bool) -> None:
        values = self.objects[key][prop]
        if value in values:
            return
        values.append(value)
        if prop == RDF_TYPE:
            self.by_type[value].add(key)
        elif is_ref:
            self.inverse[(prop, value)].add(key)

    def instances(self, *classes: str) -> list[str]:
        return sorted(set().union(*(self.by_type.get(c, set()) for c in classes)))

    def types(self, key: str) -> list[str]:
        return self.objects[key].get(RDF_TYPE, []) if key in self.objects else []

    def value(self, key: str | None, *props: str) -> str | None:
        """The first value of the first of `props` the object has (alternatives across CIM versions)."""
        if key is None or key not in self.objects:
            return None
        for prop in props:
            values = self.objects[key].get(prop)
            if values:
                return values[0]
        return None

    def number(self, key: str | None, *props: str) -> float | None:
        text = self.value(key, *props)
        if text is None:
            return None
        try:
            return float(text)
        except ValueError:
            raise ConversionError(f"{props[0]} of {key} is not a number: {text!r}", node=key) from None

    def integer(self, key: str | None, *props: str) -> int | None:
        number = self.number(key, *props)
        return None if number is None else round(number)

    def flag(self, key: str | None, *props: str) -> bool | None:
        text = self.value(key, *props)
        return None if text is None else text.strip().lower() in {"true", "1"}

    def referrers(self, prop: str, key: str) -> list[str]:
        return sorted(self.inverse.get((prop, key), ()))


def check_xml(path: Path, data: bytes) -> str:
    """Refuse non-UTF-8 files and any DOCTYPE or ENTITY declaration before a parser sees the bytes."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConversionError(f"{path.name}: CGMES files must be UTF-8 (bad byte at {exc.start})", node=path.name) from exc
    match = FORBIDDEN_XML.search(text)
    if match:
        line = text.count("\n", 0, match.start()) + 1
        raise ConversionError(f"{path.name}: RDF/XML with a DOCTYPE or ENTITY declaration is refused", node=path.name, line=line)
    return text


@lru_cache(maxsize=65536)
def mrid_key(iri: str) -> str:
    """The mRID an IRI names: ``…#_abc`` and ``urn:uuid:abc`` are both ``abc`` (UUIDs in canonical form)."""
    if iri.lower().startswith("urn:uuid:"):
        key = iri[9:]
    elif "#" in iri:
        key = iri.rsplit("#", 1)[1].removeprefix("_")
    else:
        return iri
    try:
        return str(uuid.UUID(key))
    except ValueError:
        return key


@lru_cache(maxsize=4096)
def local_name(iri: str) -> tuple[str, str | None]:
    """(name used in the model, CIM namespace if the IRI is in one)."""
    for namespace in CIM_VERSIONS:
        if iri.startswith(namespace):
            return iri[len(namespace) :], namespace
    for namespace in ENTSOE_NAMESPACES:
        if iri.startswith(namespace):
            return "entsoe:" + iri[len(namespace) :], None
    return iri, None


def _object_key(iri: str) -> str:
    """References to CIM enumeration values keep their local name; object references become mRIDs."""
    name, namespace = local_name(iri)
    return name if namespace or name.startswith("entsoe:") else mrid_key(iri)


def parse_file(name: str, data: bytes, model: CimModel) -> set[str]:
    """Parse one (checked) CGMES file into `model`; return the CIM namespaces it uses."""
    namespaces: set[str | None] = set()
    try:
        limits.check_depth(data, ox.RdfFormat.RDF_XML)  # deep nesting is refused before the native parser sees it
    except OntologyError as exc:
        raise ConversionError(f"{name}: {exc.message}", node=name) from exc
    try:
        for quad in ox.parse(data, format=ox.RdfFormat.RDF_XML, base_iri=BASE_IRI, without_named_graphs=True):
            prop, ns = local_name(quad.predicate.value)
            namespaces.add(ns)
            obj = quad.object
            if isinstance(obj, ox.Literal):
                value, is_ref = obj.value, False
            elif prop == RDF_TYPE:
                value, ns = local_name(obj.value)
                namespaces.add(ns)
                is_ref = False
            else:
                value, is_ref = _object_key(obj.value), True
            model.add(mrid_key(quad.subject.value), prop, value, is_ref)
    except (SyntaxError, ValueError) as exc:
        raise ConversionError(f"{name}: not readable as RDF/XML: {exc}", node=name) from exc
    namespaces.discard(None)
    return namespaces


def _profile_rank(text: str) -> int:
    """Where a file goes in the reading order, from the profile its header declares."""
    profiles = " ".join(re.findall(r"Model\.profile>([^<]+)<", text[:5000]))
    return next((i for i, name in enumerate(PROFILE_ORDER) if name in profiles), len(PROFILE_ORDER))


def read_model(paths: list[Path]) -> CimModel:
    """Check every file, then parse and merge them (EQ first, so its values win where profiles disagree)."""
    if not paths:
        raise ConversionError("no CGMES files given")
    files = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConversionError(f"{path.name}: cannot be read ({exc.strerror})", node=path.name) from exc
        files.append((_profile_rank(check_xml(path, data)), path.name, data))
    model = CimModel()
    used: dict[str, list[str]] = defaultdict(list)
    for _, name, data in sorted(files, key=lambda f: f[:2]):
        for namespace in parse_file(name, data, model):
            used[namespace].append(name)
    if len(used) != 1:
        found = "; ".join(f"{ns} in {', '.join(names)}" for ns, names in used.items()) or "none"
        raise ConversionError(f"the files must use one CIM version (CGMES 2.4.15 or 3.0); found: {found}")
    model.namespace = next(iter(used))
    return model


def eq_model_iris(model: CimModel) -> list[str]:
    """The FullModel IRIs (as mRID keys) of the equipment models, boundary sets excluded."""
    headers = model.instances(MD + "FullModel", DCAT_DATASET)
    found = []
    for key in headers:
        profiles = model.objects[key].get(MD + "Model.profile", []) + model.objects[key].get(DCTERMS_CONFORMS_TO, [])
        if any("Equipment" in p and "Boundary" not in p for p in profiles):
            found.append(key)
    return found


# --- identity -----------------------------------------------------------------------------------


class Identity:
    """Stable IRIs: ``urn:uuid:<mRID>`` for UUID mRIDs, a UUIDv5 scoped by the grid for any other."""

    def __init__(self, grid_iri: str):
        self.grid_iri = grid_iri
        self.scope = uuid.uuid5(uuid.NAMESPACE_URL, grid_iri)
        self.minted: dict[str, URIRef] = {}

    def iri(self, key: str) -> URIRef:
        found = self.minted.get(key)
        if found is None:
            try:
                found = URIRef(f"urn:uuid:{uuid.UUID(key)}")
            except ValueError:
                found = URIRef(f"urn:uuid:{uuid.uuid5(self.scope, key)}")
            self.minted[key] = found
        return found


def default_grid_iri(model: CimModel) -> str:
    eq_models = eq_model_iris(model)
    if not eq_models:
        raise ConversionError("no Equipment (EQ) model header (md:FullModel) found; pass the EQ file or a grid IRI")
    seed = "gridtwin:cgmes:" + "|".join(sorted(eq_models))
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, seed)}"


def default_grid_name(paths: list[Path]) -> str:
    """The EQ file's name without its profile suffix, e.g. ``20191030T0924Z_YYY`` of ``…_YYY_EQ_.xml``."""
    stems = sorted(p.stem for p in paths)
    eq = next((s for s in stems if re.search(r"(^|[_-])EQ([_-]|$)", s, re.IGNORECASE)), stems[0])
    return re.sub(r"[_-]+EQ([_-].*)?$", "", eq, flags=re.IGNORECASE) or eq


# --- writing the gridtwin form --------------------------------------------------------------------


class FormWriter:
    """Triples typed as `twin.rdf_codec.TripleWriter` types them (the form must be exactly the same)."""

    def __init__(self, identity: Identity):
        self.graph = Graph()
        self.identity = identity
        for prefix, namespace in PREFIXES.items():
            self.graph.bind(prefix, namespace)

    def iri(self, key: str) -> URIRef:
        return self.identity.iri(key)

    def add(self, subject, predicate, value) -> None:
        if value is None or value == "":
            return
        obj = value if isinstance(value, URIRef | Literal | BNode) else typed_literal(value)
        self.graph.add((subject, predicate, obj))

    def node(self, subject: URIRef, rdf_class, name: str | None = None) -> URIRef:
        self.graph.add((subject, RDF.type, rdf_class))
        self.add(subject, CIM["IdentifiedObject.name"], name)
        return subject


# --- topology -------------------------------------------------------------------------------------


@dataclass
class Topology:
    """Where terminals connect: terminal key → TopologicalNode key (directly or through its ConnectivityNode)."""

    model: CimModel
    node_of_terminal: dict[str, str | None] = field(default_factory=dict)

    def node(self, terminal: str) -> str | None:
        if terminal not in self.node_of_terminal:
            tn = self.model.value(terminal, "Terminal.TopologicalNode")
            if tn is None:
                cn = self.model.value(terminal, "Terminal.ConnectivityNode")
                tn = self.model.value(cn, "ConnectivityNode.TopologicalNode")
            self.node_of_terminal[terminal] = tn
        return self.node_of_terminal[terminal]

    def terminals(self, equipment: str) -> list[str]:
        """The equipment's terminals in sequence-number order."""
        found = self.model.referrers("Terminal.ConductingEquipment", equipment)
        number = {t: self.model.integer(t, "ACDCTerminal.sequenceNumber", "Terminal.sequenceNumber") or 0 for t in found}
        return sorted(found, key=lambda t: (number[t], t))

    def connected_node(self, terminal: str, equipment: str) -> str:
        node = self.node(terminal)
        if node is None or node not in self.model.by_type["TopologicalNode"]:
            raise ConversionError(
                f"terminal {terminal} of {equipment} has no TopologicalNode; include the TP profile", node=equipment
            )
        return node

    def connected(self, equipment: str) -> bool:
        return all(self.model.flag(t, "ACDCTerminal.connected", "Terminal.connected") is not False for t in self.terminals(equipment))


def in_service(model: CimModel, topology: Topology, key: str) -> bool:
    """Equipment.inService (3.0 SSH), else normallyInService (3.0 EQ), else all terminals connected."""
    state = model.flag(key, "Equipment.inService")
    if state is None:
        state = model.flag(key, "Equipment.normallyInService")
    return topology.connected(key) if state is None else state


def write_equipment(w: FormWriter, topology: Topology, key: str, rdf_class, terminals: list[str]) -> URIRef:
    """An equipment with name, in-service flag and its terminals numbered 1… in the given order."""
    model = topology.model
    subject = w.node(w.iri(key), rdf_class, model.value(key, "IdentifiedObject.name"))
    if not in_service(model, topology, key):
        w.add(subject, CIM["Equipment.inService"], False)
    for number, terminal in enumerate(terminals, start=1):
        node = topology.connected_node(terminal, key)
        t = w.node(w.iri(terminal), CIM.Terminal)
        w.graph.add((t, CIM["Terminal.ConductingEquipment"], subject))
        w.graph.add((t, CIM["Terminal.TopologicalNode"], w.iri(node)))
        w.add(t, CIM["ACDCTerminal.sequenceNumber"], number)
    return subject


def exact_terminals(topology: Topology, key: str, count: int) -> list[str]:
    terminals = topology.terminals(key)
    if len(terminals) != count:
        raise ConversionError(f"{key} has {len(terminals)} terminals, expected {count}", node=key)
    return terminals


# --- buses ----------------------------------------------------------------------------------------


def bus_base_voltage(model: CimModel, tn: str) -> str:
    """TopologicalNode.BaseVoltage, else the BaseVoltage of its (or its ConnectivityNodes') VoltageLevel."""
    base_voltage = model.value(tn, "TopologicalNode.BaseVoltage")
    containers = [model.value(tn, "TopologicalNode.ConnectivityNodeContainer")]
    for cn in model.referrers("ConnectivityNode.TopologicalNode", tn):
        containers.append(model.value(cn, "ConnectivityNode.ConnectivityNodeContainer"))
    for container in containers:
        if base_voltage is not None:
            break
        base_voltage = model.value(container, "VoltageLevel.BaseVoltage")
    if base_voltage is None:
        base_voltage = _equipment_base_voltage(model, tn)
    if base_voltage is None or model.number(base_voltage, "BaseVoltage.nominalVoltage") is None:
        raise ConversionError(f"TopologicalNode {tn} has no BaseVoltage with a nominal voltage", node=tn)
    return base_voltage


def _equipment_base_voltage(model: CimModel, tn: str) -> str | None:
    """The BaseVoltage of the equipment (or transformer end) at a TopologicalNode, for nodes in line containers."""
    terminals = model.referrers("Terminal.TopologicalNode", tn)
    for cn in model.referrers("ConnectivityNode.TopologicalNode", tn):
        terminals += model.referrers("Terminal.ConnectivityNode", cn)
    for terminal in sorted(terminals):
        ends = model.referrers("TransformerEnd.Terminal", terminal)
        equipment = model.value(terminal, "Terminal.ConductingEquipment")
        found = model.value(ends[0], "TransformerEnd.BaseVoltage") if ends else model.value(equipment, "ConductingEquipment.BaseVoltage")
        if found is not None:
            return found
    return None


def sv_voltage(model: CimModel, tn: str) -> str | None:
    """The SvVoltage of a TopologicalNode, if the SV profile gives one with a magnitude."""
    found = [sv for sv in model.referrers("SvVoltage.TopologicalNode", tn) if model.value(sv, "SvVoltage.v") is not None]
    return found[0] if found else None


def write_buses(w: FormWriter, model: CimModel) -> None:
    base_voltages = set()
    for tn in model.instances("TopologicalNode"):
        base_voltage = bus_base_voltage(model, tn)
        base_voltages.add(base_voltage)
        bus = w.node(w.iri(tn), CIM.TopologicalNode, model.value(tn, "IdentifiedObject.name"))
        w.graph.add((bus, CIM["TopologicalNode.BaseVoltage"], w.iri(base_voltage)))
        sv = sv_voltage(model, tn)
        if sv is not None:
            node = w.node(w.iri(sv), CIM.SvVoltage)
            w.graph.add((node, CIM["SvVoltage.TopologicalNode"], bus))
            w.add(node, CIM["SvVoltage.v"], model.number(sv, "SvVoltage.v"))
            w.add(node, CIM["SvVoltage.angle"], model.number(sv, "SvVoltage.angle"))
    for base_voltage in sorted(base_voltages):
        node = w.node(w.iri(base_voltage), CIM.BaseVoltage, model.value(base_voltage, "IdentifiedObject.name"))
        w.add(node, CIM["BaseVoltage.nominalVoltage"], model.number(base_voltage, "BaseVoltage.nominalVoltage"))


# --- branches -------------------------------------------------------------------------------------


def _is_permanent(model: CimModel, limit_type: str | None) -> bool:
    """PATL: ENTSO-E limitType / CIM100 kind ``patl``, an infinite duration, or a type named PATL."""
    kind = model.value(limit_type, "entsoe:OperationalLimitType.limitType", "OperationalLimitType.kind") or ""
    name = model.value(limit_type, "IdentifiedObject.name") or ""
    infinite = bool(model.flag(limit_type, "OperationalLimitType.isInfiniteDuration"))
    return kind.lower().endswith("patl") or infinite or name.upper() == "PATL"


def rated_current_ka(model: CimModel, equipment: str, terminals: list[str]) -> float | None:
    """The smallest permanent (PATL) current limit on the equipment or its terminals, A → kA.

    Without a recognisable PATL, the smallest positive current limit of any duration is taken.
    """
    sets = set(model.referrers("OperationalLimitSet.Equipment", equipment))
    for terminal in terminals:
        sets.update(model.referrers("OperationalLimitSet.Terminal", terminal))
    limits = []
    for limit_set in sets:
        for limit in model.referrers("OperationalLimit.OperationalLimitSet", limit_set):
            value_a = model.number(limit, "CurrentLimit.value", "CurrentLimit.normalValue")
            if "CurrentLimit" in model.types(limit) and value_a and value_a > 0:
                limits.append((_is_permanent(model, model.value(limit, "OperationalLimit.OperationalLimitType")), value_a))
    permanent = [value for is_patl, value in limits if is_patl]
    chosen = permanent or [value for _, value in limits]
    return min(chosen) / 1000.0 if chosen else None


def write_lines(w: FormWriter, topology: Topology) -> None:
    model = topology.model
    for key in model.instances("ACLineSegment"):
        terminals = exact_terminals(topology, key, 2)
        line = write_equipment(w, topology, key, CIM.ACLineSegment, terminals)
        length_km = model.number(key, "Conductor.length")
        if not length_km or length_km <= 0:
            # r, x, bch, gch are totals for the segment, so the length does not enter the load flow.
            logger.warning("ACLineSegment %s has no positive length; using %s km", key, DEFAULT_LINE_LENGTH_KM)
            length_km = DEFAULT_LINE_LENGTH_KM
        w.add(line, CIM["Conductor.length"], length_km)
        for prop in ("r", "x"):
            value = model.number(key, f"ACLineSegment.{prop}")
            if value is None:
                raise ConversionError(f"ACLineSegment {key} has no {prop}", node=key)
            w.add(line, CIM[f"ACLineSegment.{prop}"], value)
        w.add(line, CIM["ACLineSegment.bch"], model.number(key, "ACLineSegment.bch") or 0.0)
        w.add(line, CIM["ACLineSegment.gch"], model.number(key, "ACLineSegment.gch") or 0.0)
        w.add(line, GT.ratedCurrent, rated_current_ka(model, key, terminals))


def transformer_ends(model: CimModel, key: str) -> list[str]:
    """The two ends of a transformer, HV first (higher ratedU; endNumber breaks ties)."""
    ends = model.referrers("PowerTransformerEnd.PowerTransformer", key)
    if len(ends) != 2:
        raise ConversionError(f"PowerTransformer {key} has {len(ends)} windings; only two-winding transformers are supported", node=key)
    for end in ends:
        if model.number(end, "PowerTransformerEnd.ratedU") is None:
            raise ConversionError(f"PowerTransformerEnd {end} has no ratedU", node=end)

    def rank(end: str) -> tuple:
        return -model.number(end, "PowerTransformerEnd.ratedU"), model.integer(end, "TransformerEnd.endNumber") or 0, end

    return sorted(ends, key=rank)


def write_transformers(w: FormWriter, topology: Topology) -> None:
    model = topology.model
    for key in model.instances("PowerTransformer"):
        ends = transformer_ends(model, key)
        terminals = [model.value(end, "TransformerEnd.Terminal") for end in ends]
        if sorted(t or "" for t in terminals) != sorted(topology.terminals(key)):
            raise ConversionError(f"the ends of PowerTransformer {key} do not name its two terminals", node=key)
        transformer = write_equipment(w, topology, key, CIM.PowerTransformer, terminals)
        rated_s_mva = model.number(ends[0], "PowerTransformerEnd.ratedS") or model.number(ends[1], "PowerTransformerEnd.ratedS")
        clocks = [model.integer(end, "PowerTransformerEnd.phaseAngleClock") or 0 for end in ends]
        for number, (end, terminal) in enumerate(zip(ends, terminals, strict=True), start=1):
            node = w.node(w.iri(end), CIM.PowerTransformerEnd)
            w.graph.add((node, CIM["PowerTransformerEnd.PowerTransformer"], transformer))
            w.add(node, CIM["TransformerEnd.endNumber"], number)
            w.graph.add((node, CIM["TransformerEnd.Terminal"], w.iri(terminal)))
            w.add(node, CIM["PowerTransformerEnd.ratedU"], model.number(end, "PowerTransformerEnd.ratedU"))
            w.add(node, CIM["PowerTransformerEnd.ratedS"], rated_s_mva)
            for prop in ("r", "x", "g"):
                w.add(node, CIM[f"PowerTransformerEnd.{prop}"], model.number(end, f"PowerTransformerEnd.{prop}") or 0.0)
            w.add(node, CIM["PowerTransformerEnd.b"], abs(model.number(end, "PowerTransformerEnd.b") or 0.0))
            # end 2's clock relative to end 1 (CIM assumes end 1 at 0; re-refer when the ends were swapped)
            w.add(node, CIM["PowerTransformerEnd.phaseAngleClock"], 0 if number == 1 else (clocks[1] - clocks[0]) % 12)
        write_tap_changer(w, model, key, ends)


def write_tap_changer(w: FormWriter, model: CimModel, transformer: str, ends: list[str]) -> None:
    """The RatioTapChanger of a transformer (on at most one end); step from SSH, else SV, else normal."""
    changers = [(end, rtc) for end in ends for rtc in model.referrers("RatioTapChanger.TransformerEnd", end)]
    for end in ends:
        for changer in model.referrers("PhaseTapChanger.TransformerEnd", end):
            raise ConversionError(f"phase-shifting tap changer {changer} of {transformer} is not supported", node=changer)
    if not changers:
        return
    if len(changers) > 1:
        raise ConversionError(f"PowerTransformer {transformer} has tap changers on both ends; gridtwin keeps one", node=transformer)
    end, rtc = changers[0]
    if model.value(rtc, "RatioTapChanger.RatioTapChangerTable") is not None:
        raise ConversionError(f"tabular ratio tap changer {rtc} is not supported", node=rtc)
    steps = {name: model.integer(rtc, f"TapChanger.{name}") for name in ("lowStep", "highStep", "neutralStep")}
    for name, value in steps.items():
        if value is None:
            raise ConversionError(f"RatioTapChanger {rtc} has no {name}", node=rtc)
    normal = model.integer(rtc, "TapChanger.normalStep")
    normal = steps["neutralStep"] if normal is None else normal
    sv_steps = model.referrers("SvTapStep.TapChanger", rtc)
    step = model.number(rtc, "TapChanger.step")
    if step is None and sv_steps:
        step = model.number(sv_steps[0], "SvTapStep.position")
    node = w.node(w.iri(rtc), CIM.RatioTapChanger)
    w.graph.add((node, CIM["RatioTapChanger.TransformerEnd"], w.iri(end)))
    for name, value in steps.items():
        w.add(node, CIM[f"TapChanger.{name}"], value)
    w.add(node, CIM["TapChanger.normalStep"], normal)
    w.add(node, CIM["TapChanger.step"], float(normal if step is None else step))
    w.add(node, CIM["RatioTapChanger.stepVoltageIncrement"], model.number(rtc, "RatioTapChanger.stepVoltageIncrement") or 0.0)


def write_switches(w: FormWriter, topology: Topology) -> None:
    """Switches between two TopologicalNodes; those inside one node (node-breaker detail) are dropped."""
    model = topology.model
    for key in model.instances(*SWITCH_KINDS):
        terminals = topology.terminals(key)
        if len(terminals) != 2:
            logger.info("switch %s with %d terminals skipped", key, len(terminals))
            continue
        if topology.connected_node(terminals[0], key) == topology.connected_node(terminals[1], key):
            continue
        kind = next(SWITCH_KINDS[t] for t in model.types(key) if t in SWITCH_KINDS)
        switch = write_equipment(w, topology, key, kind, terminals)
        normal_open = bool(model.flag(key, "Switch.normalOpen"))
        is_open = model.flag(key, "Switch.open")
        w.add(switch, CIM["Switch.normalOpen"], normal_open)
        w.add(switch, CIM["Switch.open"], normal_open if is_open is None else is_open)


# --- injections -----------------------------------------------------------------------------------


def terminal_power(model: CimModel, topology: Topology, key: str, cim_class: str) -> tuple[float, float]:
    """(p MW, q Mvar) in load sign convention: SSH values, else the SvPowerFlow at the terminal, else 0."""
    p, q = model.number(key, f"{cim_class}.p"), model.number(key, f"{cim_class}.q")
    if p is None or q is None:
        flows = [f for t in topology.terminals(key) for f in model.referrers("SvPowerFlow.Terminal", t)]
        if flows:
            p = model.number(flows[0], "SvPowerFlow.p") if p is None else p
            q = model.number(flows[0], "SvPowerFlow.q") if q is None else q
    if p is None or q is None:
        logger.warning("%s %s has no p/q in SSH or SV; using 0", cim_class, key)
    return p or 0.0, q or 0.0


def write_loads(w: FormWriter, topology: Topology) -> None:
    model = topology.model
    for key in model.instances(*CONSUMER_CLASSES):
        node = write_equipment(w, topology, key, CIM.EnergyConsumer, exact_terminals(topology, key, 1))
        p_mw, q_mvar = terminal_power(model, topology, key, "EnergyConsumer")
        w.add(node, CIM["EnergyConsumer.p"], p_mw)
        w.add(node, CIM["EnergyConsumer.q"], q_mvar)


@dataclass
class Slack:
    """An injection chosen as slack and its voltage target (kV) if it states one."""

    key: str
    target_kv: float | None


def _control_target_kv(model: CimModel, key: str) -> tuple[str | None, float | None]:
    """(RegulatingControl key, voltage target kV) of a regulating equipment, if it has a voltage control."""
    control = model.value(key, "RegulatingCondEq.RegulatingControl")
    mode = model.value(control, "RegulatingControl.mode") or ""
    target = model.number(control, "RegulatingControl.targetValue")
    if control is None or not mode.endswith("voltage") or not target or target <= 0:
        return None, None
    return control, target


def choose_slacks(model: CimModel) -> list[Slack]:
    """ExternalNetworkInjections with control on; else regulating EquivalentInjections; else the best machine."""
    slacks = [
        Slack(k, _control_target_kv(model, k)[1])
        for k in model.instances("ExternalNetworkInjection")
        if model.flag(k, "RegulatingCondEq.controlEnabled") is not False
    ]
    if not slacks:
        slacks = [
            Slack(k, model.number(k, "EquivalentInjection.regulationTarget"))
            for k in model.instances("EquivalentInjection")
            if model.flag(k, "EquivalentInjection.regulationCapability") is not False
            and model.flag(k, "EquivalentInjection.regulationStatus")
        ]
    if not slacks:
        ranked = [
            (model.integer(k, "SynchronousMachine.referencePriority"), k)
            for k in model.instances("SynchronousMachine")
            if (model.integer(k, "SynchronousMachine.referencePriority") or 0) > 0
        ]
        if ranked:
            key = min(ranked)[1]
            slacks = [Slack(key, _control_target_kv(model, key)[1])]
            logger.warning("no ExternalNetworkInjection; SynchronousMachine %s (best referencePriority) is the slack", key)
    if not slacks:
        logger.warning("the model has no slack (no ExternalNetworkInjection, regulating EquivalentInjection or prioritised machine)")
    return slacks


def write_slack(w: FormWriter, topology: Topology, slack: Slack) -> None:
    """The slack as cim:ExternalNetworkInjection with a voltage RegulatingControl (target in kV)."""
    model = topology.model
    terminals = exact_terminals(topology, slack.key, 1)
    node = write_equipment(w, topology, slack.key, CIM.ExternalNetworkInjection, terminals)
    bus = topology.connected_node(terminals[0], slack.key)
    sv = sv_voltage(model, bus)
    target_kv = slack.target_kv
    if target_kv is None:
        target_kv = model.number(sv, "SvVoltage.v") or model.number(bus_base_voltage(model, bus), "BaseVoltage.nominalVoltage")
        source = "its bus's SV voltage" if sv else "its bus's nominal voltage"
        logger.warning("slack %s has no voltage target; using %.6g kV, %s", slack.key, target_kv, source)
    priority = model.integer(slack.key, "ExternalNetworkInjection.referencePriority", "SynchronousMachine.referencePriority")
    w.add(node, CIM["ExternalNetworkInjection.referencePriority"], 1 if priority is None else priority)
    angle_degree = model.number(sv, "SvVoltage.angle")
    if angle_degree:
        w.add(node, GT.voltageAngleSetpoint, angle_degree)
    control_key = _control_target_kv(model, slack.key)[0]
    control = w.iri(control_key) if control_key else URIRef(f"{w.iri(slack.key)}#RegulatingControl")
    w.node(control, CIM.RegulatingControl)
    w.graph.add((node, CIM["RegulatingCondEq.RegulatingControl"], control))
    w.graph.add((control, CIM["RegulatingControl.mode"], CIM["RegulatingControlModeKind.voltage"]))
    w.graph.add((control, CIM["RegulatingControl.Terminal"], w.iri(terminals[0])))
    w.add(control, CIM["RegulatingControl.targetValue"], float(target_kv))


def write_generator(w: FormWriter, topology: Topology, key: str, cim_class: str, unit: URIRef, unit_class) -> URIRef:
    """A static generator: cim:PowerElectronicsConnection (load-sign p/q) with one unit."""
    model = topology.model
    node = write_equipment(w, topology, key, CIM.PowerElectronicsConnection, exact_terminals(topology, key, 1))
    p_mw, q_mvar = terminal_power(model, topology, key, cim_class)
    w.add(node, CIM["PowerElectronicsConnection.p"], p_mw)
    w.add(node, CIM["PowerElectronicsConnection.q"], q_mvar)
    rated_s_mva = model.number(key, "PowerElectronicsConnection.ratedS", "RotatingMachine.ratedS")
    w.add(node, CIM["PowerElectronicsConnection.ratedS"], rated_s_mva if rated_s_mva and rated_s_mva > 0 else None)
    w.node(unit, unit_class)
    w.graph.add((unit, CIM["PowerElectronicsUnit.PowerElectronicsConnection"], node))
    return node


def write_injections(w: FormWriter, topology: Topology) -> None:
    """Slacks, then every other machine or injection as a static generator."""
    model = topology.model
    slacks = choose_slacks(model)
    for slack in slacks:
        write_slack(w, topology, slack)
    taken = {s.key for s in slacks}
    for cim_class in ("ExternalNetworkInjection", "EquivalentInjection"):
        for key in model.instances(cim_class):
            if key not in taken:
                write_generator(w, topology, key, cim_class, URIRef(f"{w.iri(key)}#Unit"), GT.OtherGenerationUnit)
    for key in model.instances("SynchronousMachine"):
        if key not in taken:
            unit_types = model.types(model.value(key, "RotatingMachine.GeneratingUnit"))
            unit_class = next((GENERATING_UNIT_CLASSES[t] for t in unit_types if t in GENERATING_UNIT_CLASSES), GT.OtherGenerationUnit)
            write_generator(w, topology, key, "RotatingMachine", URIRef(f"{w.iri(key)}#Unit"), unit_class)
    for key in model.instances("PowerElectronicsConnection"):
        write_power_electronics(w, topology, key)


def write_power_electronics(w: FormWriter, topology: Topology, key: str) -> None:
    """A CGMES 3.0 PowerElectronicsConnection with exactly one PV, wind or battery unit."""
    model = topology.model
    units = model.referrers("PowerElectronicsUnit.PowerElectronicsConnection", key)
    if len(units) != 1:
        raise ConversionError(f"PowerElectronicsConnection {key} has {len(units)} units; gridtwin needs exactly one", node=key)
    unit = units[0]
    types = model.types(unit)
    if "BatteryUnit" in types:
        rated_e_mwh = model.number(unit, "BatteryUnit.ratedE")
        if not rated_e_mwh or rated_e_mwh <= 0:
            raise ConversionError(f"BatteryUnit {unit} has no positive ratedE", node=unit)
        write_generator(w, topology, key, "PowerElectronicsConnection", w.iri(unit), CIM.BatteryUnit)
        w.add(w.iri(unit), CIM["BatteryUnit.ratedE"], rated_e_mwh)
        w.add(w.iri(unit), CIM["BatteryUnit.storedE"], model.number(unit, "BatteryUnit.storedE"))
        return
    unit_class = next((UNIT_CLASSES[t] for t in types if t in UNIT_CLASSES), GT.OtherGenerationUnit)
    write_generator(w, topology, key, "PowerElectronicsConnection", w.iri(unit), unit_class)


# --- entry point ----------------------------------------------------------------------------------


def refuse_unsupported(model: CimModel) -> None:
    """Power-carrying equipment gridtwin cannot hold is an error, never silently dropped."""
    for cim_class in UNSUPPORTED_CLASSES:
        found = model.instances(cim_class)
        if found:
            name = model.value(found[0], "IdentifiedObject.name")
            label = f"{found[0]} ({name})" if name else found[0]
            raise ConversionError(f"{cim_class} {label} carries power but is not supported by gridtwin", node=found[0])


def cgmes_to_graph(
    paths: list[Path], *, grid_iri: str | None = None, grid_name: str | None = None, owner_iri: str | None = None
) -> Graph:
    """Convert a set of CGMES files (EQ, TP, SSH, optional SV; other profiles are ignored) to the gridtwin form.

    The result describes one ``gt:Grid`` and is deterministic: the same files give the same triples.
    Raises `ConversionError` naming the file or object at fault (a DOCTYPE/ENTITY declaration included).
    """
    paths = [Path(p) for p in paths]
    model = read_model(paths)
    if not model.instances("TopologicalNode"):
        raise ConversionError("no TopologicalNode found; the TP profile is required")
    refuse_unsupported(model)
    grid_iri = grid_iri or default_grid_iri(model)
    w = FormWriter(Identity(grid_iri))
    grid = w.node(URIRef(grid_iri), GT.Grid, grid_name or default_grid_name(paths))
    if owner_iri:
        w.graph.add((grid, GT.owner, URIRef(owner_iri)))
    topology = Topology(model)
    write_buses(w, model)
    write_lines(w, topology)
    write_transformers(w, topology)
    write_switches(w, topology)
    write_loads(w, topology)
    write_injections(w, topology)
    return w.graph


def cim_version(paths: list[Path]) -> str:
    """The CGMES version the files are written in ("CGMES 2.4.15" or "CGMES 3.0")."""
    return CIM_VERSIONS[read_model([Path(p) for p in paths]).namespace]
