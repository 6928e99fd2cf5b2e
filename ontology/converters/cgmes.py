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
* a set is complete or refused: EQ and TP, SSH for CGMES 2.4.15 / 3.0 (older CIM 16 sets may bring SV
  instead), every model a header depends on (the boundary set EQ_BD / TP_BD included); a terminal on a
  TopologicalNode no file defines names its equipment and the missing boundary; the same mRID typed by two
  files of one profile (two models sharing mRIDs) is refused;
* boundary points (TP_BD) take the nominal voltage of the model-side node their line reaches when the two
  differ (a 400 kV boundary point on a 380 kV line): the twin holds per-unit voltages continuous along a line;
* two- and three-winding transformers: ends numbered from HV, each end's r, x (ohm at its own ratedU: the star
  values for three windings), g, b; CIM's magnetising b (y = g + jb, negative for an inductive branch) is
  flipped into the form's b ≥ 0 inductive; clocks relative to end 1; a winding on a node of another voltage
  level (its BaseVoltage, or ratedU off by more than a factor 1.5) is refused by name. Tap steps, and shunt
  sections, are the solved ones (SvTapStep, SvShuntCompensatorSections) where the set has an SV profile —
  the twin has no tap or shunt controllers, so these reproduce the SV solution — else SSH, else normal
  (`StateChoice`); a step or section count outside its range is refused naming the changer. Phase-shifting
  tap changers of two-winding transformers keep their class (linear, symmetrical, asymmetrical, tabular with its
  table); on three windings they are left out at their neutral step and refused off it (`write_phase_tap_changer`);
* the slack: the in-service ExternalNetworkInjections / SynchronousMachines with the best (lowest positive)
  referencePriority; else every ExternalNetworkInjection whose control is not switched off; else regulating
  EquivalentInjections; else the largest voltage-controlling machine. It is written as
  cim:ExternalNetworkInjection (the twin's solvers take their reference from one) at its voltage target and
  the SV angle of its bus;
* synchronous machines are cim:SynchronousMachine: PV at their RegulatingControl target (kV) when the control
  and RegulatingCondEq.controlEnabled are on, with reactive limits from the ReactiveCapabilityCurve at their p,
  else minQ/maxQ; PQ otherwise. A control on a remote node becomes local at the SV voltage of the machine's
  node (the form regulates the machine's own terminal); a control naming a terminal no file defines is refused;
* shunt compensators (linear, non-linear with their points), asynchronous machines (motors), EquivalentBranch,
  SeriesCompensator, EquivalentShunt and EquivalentInjection (PV when regulating) map onto the form of the same
  CIM class; loads, injections and machines take p/q from SSH, else from the SvPowerFlow at their terminal,
  else 0, in CIM's load sign convention. PowerElectronicsConnections (3.0) and non-slack
  ExternalNetworkInjections are static generators;
* equipment is out of service when SSH Equipment.inService, else SV SvStatus.inService, else EQ
  normallyInService says so (CGMES 3.0), or when any of its terminals is disconnected;
* SvVoltage (kV, degrees) on TopologicalNodes is kept.

Tabular tap changers keep their tables (RatioTapChangerTable, PhaseTapChangerTable; `write_tap_table`), static VAR
compensators their ratings and setpoint (`write_static_var_compensators`).
Equipment that carries power but has no place in gridtwin (HVDC, …) raises
`ConversionError` naming the object; diagram layout, geography, containers and other power-free classes are
ignored.
"""

from __future__ import annotations

import logging
import math
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
    "EnergySource",
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
    header_files: dict = field(default_factory=dict)
    boundary_keys: set = field(default_factory=set)
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


def parse_file(name: str, data: bytes, model: CimModel) -> tuple[set[str], set[str]]:
    """Parse one (checked) CGMES file into `model`; return (the CIM namespaces it uses, the keys it types)."""
    namespaces: set[str | None] = set()
    typed: set[str] = set()
    try:
        limits.check_depth(data, ox.RdfFormat.RDF_XML)  # deep nesting is refused before the native parser sees it
    except OntologyError as exc:
        raise ConversionError(f"{name}: {exc.message}", node=name) from exc
    try:
        for quad in ox.parse(data, format=ox.RdfFormat.RDF_XML, base_iri=BASE_IRI, without_named_graphs=True):
            prop, ns = local_name(quad.predicate.value)
            namespaces.add(ns)
            obj = quad.object
            key = mrid_key(quad.subject.value)
            if isinstance(obj, ox.Literal):
                value, is_ref = obj.value, False
            elif prop == RDF_TYPE:
                value, ns = local_name(obj.value)
                namespaces.add(ns)
                is_ref = False
                typed.add(key)
            else:
                value, is_ref = _object_key(obj.value), True
            model.add(key, prop, value, is_ref)
    except (SyntaxError, ValueError) as exc:
        raise ConversionError(f"{name}: not readable as RDF/XML: {exc}", node=name) from exc
    namespaces.discard(None)
    return namespaces, typed


def _profile_rank(text: str) -> int:
    """Where a file goes in the reading order, from the profile its header declares."""
    profiles = " ".join(re.findall(r"Model\.profile>([^<]+)<", text[:5000]))
    return next((i for i, name in enumerate(PROFILE_ORDER) if name in profiles), len(PROFILE_ORDER))


def read_model(paths: list[Path]) -> CimModel:
    """Check every file, then parse and merge them (EQ first, so its values win where profiles disagree).

    Two files of the same profile that both define one mRID (two models sharing mRIDs) are refused.
    """
    if not paths:
        raise ConversionError("no CGMES files given")
    files = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConversionError(f"{path.name}: cannot be read ({exc.strerror})", node=path.name) from exc
        text = check_xml(path, data)
        files.append((_profile_rank(text), path.name, data, "Boundary" in " ".join(re.findall(r"Model\.profile>([^<]+)<", text[:5000]))))
    model = CimModel()
    used: dict[str, list[str]] = defaultdict(list)
    defined: dict[tuple[int, str], str] = {}
    for rank, name, data, boundary in sorted(files, key=lambda f: f[:2]):
        headers_before = set(model.instances(MD + "FullModel", DCAT_DATASET))
        namespaces, typed = parse_file(name, data, model)
        for namespace in namespaces:
            used[namespace].append(name)
        for key in set(model.instances(MD + "FullModel", DCAT_DATASET)) - headers_before:
            model.header_files[key] = name
        _refuse_shared_mrids(model, rank, name, typed, defined)
        if boundary:
            model.boundary_keys |= typed
    if len(used) != 1:
        found = "; ".join(f"{ns} in {', '.join(names)}" for ns, names in used.items()) or "none"
        raise ConversionError(f"the files must use one CIM version (CGMES 2.4.15 or 3.0); found: {found}")
    model.namespace = next(iter(used))
    return model


def _refuse_shared_mrids(model: CimModel, rank: int, name: str, typed: set[str], defined: dict) -> None:
    """An object is described once per profile: the same mRID typed by two files of one profile is two models colliding."""
    if rank >= len(PROFILE_ORDER):
        return  # diagram, geography … : not read
    for key in sorted(typed):
        other = defined.setdefault((rank, key), name)
        if other != name and MD + "FullModel" not in model.types(key):
            cim_class = next((t for t in model.types(key) if not t.startswith("http")), "object")
            raise ConversionError(f"{cim_class} {key} is defined by both {other} and {name}: two models share this mRID", node=key)


def header_profiles(model: CimModel, key: str) -> list[str]:
    return model.objects[key].get(MD + "Model.profile", []) + model.objects[key].get(DCTERMS_CONFORMS_TO, [])


def eq_model_iris(model: CimModel) -> list[str]:
    """The FullModel IRIs (as mRID keys) of the equipment models, boundary sets excluded."""
    found = []
    for key in model.instances(MD + "FullModel", DCAT_DATASET):
        if any("Equipment" in p and "Boundary" not in p for p in header_profiles(model, key)):
            found.append(key)
    return found


def check_profiles(model: CimModel) -> None:
    """A complete set: EQ and TP, SSH for CGMES (2.4.15 / 3.0; older CIM 16 sets may bring SV instead), and every
    model a header depends on (a boundary set EQ_BD / TP_BD included). Files without headers are not judged."""
    headers = model.instances(MD + "FullModel", DCAT_DATASET)
    if not headers:
        return
    profiles = " ".join(p for key in headers for p in header_profiles(model, key))
    non_boundary = " ".join(p for key in headers for p in header_profiles(model, key) if "Boundary" not in p)
    given = ", ".join(sorted(model.header_files.values()))
    cgmes = any(marker in profiles for marker in ("entsoe.eu/CIM/EquipmentCore", "CoreEquipment-EU"))
    required = {"Equipment (EQ)": ("Equipment",), "Topology (TP)": ("Topology",)}
    required["SteadyStateHypothesis (SSH)"] = ("SteadyStateHypothesis",) if cgmes else ("SteadyStateHypothesis", "StateVariables")
    for label, markers in required.items():
        if not any(m in non_boundary for m in markers):
            raise ConversionError(f"the CGMES set has no {label} profile; files given: {given}", node=label)
    for key in headers:
        for dependency in model.objects[key].get(MD + "Model.DependentOn", []):
            if dependency not in model.objects or MD + "FullModel" not in model.types(dependency):
                raise ConversionError(
                    f"{model.header_files.get(key, key)} depends on model {dependency}, which is not among the files given "
                    f"({given}); a boundary set (EQ_BD, TP_BD) or another profile is missing", node=dependency)


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
            label = describe(self.model, equipment)
            if node is not None or self.model.value(terminal, "Terminal.ConnectivityNode") is not None:
                named = node or self.model.value(terminal, "Terminal.ConnectivityNode")
                raise ConversionError(
                    f"terminal {terminal} of {label} connects to {named}, which no file defines as a TopologicalNode "
                    "(its boundary set EQ_BD / TP_BD is missing or belongs to another model)", node=equipment)
            raise ConversionError(f"terminal {terminal} of {label} has no TopologicalNode; include the TP profile", node=equipment)
        return node

    def connected(self, equipment: str) -> bool:
        return all(self.model.flag(t, "ACDCTerminal.connected", "Terminal.connected") is not False for t in self.terminals(equipment))


def describe(model: CimModel, key: str) -> str:
    """``Class mRID (name)`` of an object, for error messages."""
    cim_class = next((t for t in model.types(key) if not t.startswith("http")), "object")
    name = model.value(key, "IdentifiedObject.name")
    return f"{cim_class} {key}" + (f" ({name})" if name else "")


def in_service(model: CimModel, topology: Topology, key: str) -> bool:
    """Equipment.inService (3.0 SSH), else SvStatus.inService (3.0 SV), else normallyInService (3.0 EQ); and every
    terminal connected (an equipment open at one end carries nothing the twin can hold)."""
    state = model.flag(key, "Equipment.inService")
    if state is None:
        statuses = model.referrers("SvStatus.ConductingEquipment", key)
        state = model.flag(statuses[0], "SvStatus.inService") if statuses else None
    if state is None:
        state = model.flag(key, "Equipment.normallyInService")
    return state is not False and topology.connected(key)


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


def boundary_base_voltage(model: CimModel, topology: Topology, tn: str, base_voltage: str) -> str:
    """A boundary point takes the nominal voltage of the model-side node its line reaches when the two differ (a 400 kV
    boundary point on a 380 kV line): the twin, as pandapower, holds per-unit voltages continuous along a line, CGMES kV."""
    if tn not in model.boundary_keys:
        return base_voltage
    own_kv = model.number(base_voltage, "BaseVoltage.nominalVoltage")
    for terminal in sorted(model.referrers("Terminal.TopologicalNode", tn)):
        line = model.value(terminal, "Terminal.ConductingEquipment")
        if "ACLineSegment" not in model.types(line):
            continue
        for other in topology.terminals(line):
            node = topology.node(other)
            if node and node != tn and node not in model.boundary_keys and node in model.by_type["TopologicalNode"]:
                found = bus_base_voltage(model, node)
                if not math.isclose(model.number(found, "BaseVoltage.nominalVoltage"), own_kv, rel_tol=1e-6):
                    logger.info("boundary point %s (%g kV) takes the nominal voltage of %s", tn, own_kv, node)
                    return found
    return base_voltage


def write_buses(w: FormWriter, model: CimModel, topology: Topology) -> None:
    base_voltages = set()
    for tn in model.instances("TopologicalNode"):
        base_voltage = boundary_base_voltage(model, topology, tn, bus_base_voltage(model, tn))
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
    """The two or three ends of a transformer, HV first (higher ratedU; endNumber breaks ties)."""
    ends = model.referrers("PowerTransformerEnd.PowerTransformer", key)
    if len(ends) not in (2, 3):
        raise ConversionError(f"PowerTransformer {key} has {len(ends)} windings; gridtwin holds two- and three-winding transformers",
                              node=key)
    for end in ends:
        if model.number(end, "PowerTransformerEnd.ratedU") is None:
            raise ConversionError(f"PowerTransformerEnd {end} has no ratedU", node=end)

    def rank(end: str) -> tuple:
        return -model.number(end, "PowerTransformerEnd.ratedU"), model.integer(end, "TransformerEnd.endNumber") or 0, end

    return sorted(ends, key=rank)


def check_end_voltage_level(model: CimModel, topology: Topology, transformer: str, end: str, terminal: str) -> None:
    """A winding sits on a node of its own voltage level: the node's nominal voltage is the end's BaseVoltage (when the
    end names one) and lies within a factor 1.5 of its ratedU."""
    node = topology.connected_node(terminal, transformer)
    node_kv = model.number(bus_base_voltage(model, node), "BaseVoltage.nominalVoltage")
    end_kv = model.number(model.value(end, "TransformerEnd.BaseVoltage"), "BaseVoltage.nominalVoltage")
    rated_kv = model.number(end, "PowerTransformerEnd.ratedU")
    if (end_kv is not None and not math.isclose(end_kv, node_kv, rel_tol=1e-3)) or not 1 / 1.5 <= rated_kv / node_kv <= 1.5:
        raise ConversionError(
            f"PowerTransformerEnd {end} of PowerTransformer {transformer} (ratedU {rated_kv:g} kV"
            + (f", BaseVoltage {end_kv:g} kV" if end_kv is not None else "")
            + f") is on TopologicalNode {node} of another voltage level ({node_kv:g} kV)", node=end)


def write_transformers(w: FormWriter, topology: Topology, state: StateChoice) -> None:
    """Two- and three-winding transformers: ends numbered from HV, each with its own r, x (ohm at its ratedU), g, b on the
    ends as given (b flipped: the form's b ≥ 0 is inductive, CIM's y = g + jb has it negative), clocks relative to end 1."""
    model = topology.model
    for key in model.instances("PowerTransformer"):
        ends = transformer_ends(model, key)
        terminals = [model.value(end, "TransformerEnd.Terminal") for end in ends]
        if sorted(t or "" for t in terminals) != sorted(topology.terminals(key)):
            raise ConversionError(f"the ends of PowerTransformer {key} do not name its {len(ends)} terminals", node=key)
        for end, terminal in zip(ends, terminals, strict=True):
            check_end_voltage_level(model, topology, key, end, terminal)
        transformer = write_equipment(w, topology, key, CIM.PowerTransformer, terminals)
        rated_s_mva = [model.number(end, "PowerTransformerEnd.ratedS") for end in ends]
        clocks = [model.integer(end, "PowerTransformerEnd.phaseAngleClock") or 0 for end in ends]
        for number, (end, terminal) in enumerate(zip(ends, terminals, strict=True), start=1):
            node = w.node(w.iri(end), CIM.PowerTransformerEnd)
            w.graph.add((node, CIM["PowerTransformerEnd.PowerTransformer"], transformer))
            w.add(node, CIM["TransformerEnd.endNumber"], number)
            w.graph.add((node, CIM["TransformerEnd.Terminal"], w.iri(terminal)))
            w.add(node, CIM["PowerTransformerEnd.ratedU"], model.number(end, "PowerTransformerEnd.ratedU"))
            own_s = rated_s_mva[number - 1] if len(ends) == 3 else None
            w.add(node, CIM["PowerTransformerEnd.ratedS"], own_s or rated_s_mva[0] or next((s for s in rated_s_mva if s), None))
            for prop in ("r", "x", "g"):
                w.add(node, CIM[f"PowerTransformerEnd.{prop}"], model.number(end, f"PowerTransformerEnd.{prop}") or 0.0)
            w.add(node, CIM["PowerTransformerEnd.b"], 0.0 - (model.number(end, "PowerTransformerEnd.b") or 0.0))
            # the clock of ends 2, 3 relative to end 1 (CIM assumes end 1 at 0; re-refer when the ends were reordered)
            w.add(node, CIM["PowerTransformerEnd.phaseAngleClock"], 0 if number == 1 else (clocks[number - 1] - clocks[0]) % 12)
        write_tap_changer(w, model, key, ends, state)
        if len(ends) == 3:
            _magnetising_on_end_1(w, model, ends)


def _magnetising_on_end_1(w: FormWriter, model: CimModel, ends: list[str]) -> None:
    """The form keeps a three-winding transformer's g, b on end 1: another end's shunt is referred to end 1's voltage."""
    rated_kv = [model.number(end, "PowerTransformerEnd.ratedU") for end in ends]
    g_s = sum((model.number(e, "PowerTransformerEnd.g") or 0.0) * (u / rated_kv[0]) ** 2 for e, u in zip(ends, rated_kv, strict=True))
    b_s = sum((model.number(e, "PowerTransformerEnd.b") or 0.0) * (u / rated_kv[0]) ** 2 for e, u in zip(ends, rated_kv, strict=True))
    for number, end in enumerate(ends, start=1):
        node = w.iri(end)
        w.graph.remove((node, CIM["PowerTransformerEnd.g"], None))
        w.graph.remove((node, CIM["PowerTransformerEnd.b"], None))
        w.add(node, CIM["PowerTransformerEnd.g"], g_s if number == 1 else 0.0)
        w.add(node, CIM["PowerTransformerEnd.b"], 0.0 - b_s if number == 1 else 0.0)


def tap_position(model: CimModel, changer: str, state: StateChoice) -> float | None:
    """The step a tap changer stands at: the solved SvTapStep when the set has one (see `StateChoice`), else SSH."""
    sv_steps = model.referrers("SvTapStep.TapChanger", changer)
    solved = model.number(sv_steps[0], "SvTapStep.position") if sv_steps else None
    hypothesis = model.number(changer, "TapChanger.step")
    step = solved if state.prefer_solved and solved is not None else hypothesis if hypothesis is not None else solved
    low, high = model.integer(changer, "TapChanger.lowStep"), model.integer(changer, "TapChanger.highStep")
    for value in (solved, hypothesis):
        if value is not None and low is not None and high is not None and not low <= value <= high:
            raise ConversionError(f"{describe(model, changer)} stands at step {value:g}, outside its range {low} … {high}", node=changer)
    return step


def write_tap_changer(w: FormWriter, model: CimModel, transformer: str, ends: list[str], state: StateChoice) -> None:
    """The RatioTapChanger of a transformer (on at most one end); step from SV, else SSH, else normal (`tap_position`)."""
    changers = [(end, rtc) for end in ends for rtc in model.referrers("RatioTapChanger.TransformerEnd", end)]
    for end in ends:
        for changer in model.referrers("PhaseTapChanger.TransformerEnd", end):
            write_phase_tap_changer(w, model, transformer, end, changer, state)
    if not changers:
        return
    if len(changers) > 1:
        raise ConversionError(f"PowerTransformer {transformer} has tap changers on two ends; gridtwin keeps one", node=transformer)
    end, rtc = changers[0]
    steps = {name: model.integer(rtc, f"TapChanger.{name}") for name in ("lowStep", "highStep", "neutralStep")}
    for name, value in steps.items():
        if value is None:
            raise ConversionError(f"RatioTapChanger {rtc} has no {name}", node=rtc)
    normal = model.integer(rtc, "TapChanger.normalStep")
    normal = steps["neutralStep"] if normal is None else normal
    step = tap_position(model, rtc, state)
    node = w.node(w.iri(rtc), CIM.RatioTapChanger)
    w.graph.add((node, CIM["RatioTapChanger.TransformerEnd"], w.iri(end)))
    for name, value in steps.items():
        w.add(node, CIM[f"TapChanger.{name}"], value)
    w.add(node, CIM["TapChanger.normalStep"], normal)
    w.add(node, CIM["TapChanger.step"], float(normal if step is None else step))
    w.add(node, CIM["RatioTapChanger.stepVoltageIncrement"], model.number(rtc, "RatioTapChanger.stepVoltageIncrement") or 0.0)
    write_tap_table(w, model, rtc, node, float(normal if step is None else step), phase=False)


def phase_shift(model: CimModel, changer: str, step: float) -> tuple[float, float]:
    """(voltage ratio, phase shift in degrees) of a phase-shifting tap changer at `step`, as IEC 61970-301 defines them
    for linear, symmetrical and asymmetrical changers (tabular ones are refused)."""
    types = model.types(changer)
    n = step - (model.integer(changer, "TapChanger.neutralStep") or 0)
    if "PhaseTapChangerLinear" in types:
        return 1.0, n * (model.number(changer, "PhaseTapChangerLinear.stepPhaseShiftIncrement") or 0.0)
    if "PhaseTapChangerTabular" in types:
        raise ConversionError(f"tabular phase-shifting tap changer {changer} (PhaseTapChangerTabular) is not supported", node=changer)
    du = n * (model.number(changer, "PhaseTapChangerNonLinear.voltageStepIncrement") or 0.0) / 100
    if "PhaseTapChangerSymmetrical" in types:
        return 1.0, math.degrees(2 * math.atan(du / 2))
    theta = math.radians(model.number(changer, "PhaseTapChangerAsymmetrical.windingConnectionAngle") or 90.0)
    shifted = complex(1 + du * math.cos(theta), du * math.sin(theta))
    return abs(shifted), math.degrees(math.atan2(shifted.imag, shifted.real))


def write_phase_tap_changer(w: FormWriter, model: CimModel, transformer: str, end: str, changer: str, state: StateChoice) -> None:
    """A phase-shifting tap changer as the form holds it (two-winding transformers).

    Tabular, symmetrical and asymmetrical changers of two-winding transformers keep their class
    (`write_tabular_phase_tap_changer`, `write_nonlinear_phase_tap_changer`). Otherwise:
    a linear changer keeps its stepPhaseShiftIncrement; a symmetrical or asymmetrical one gets the increment that gives
    its exact shift at the step it stands at, and the voltage-magnitude change of an asymmetrical one, |1 + n·du·e^jθ|,
    is folded into the ratedU of its end (both exact at that step only: a later step change in the twin moves the
    angle linearly and keeps the ratio). At its neutral step it shifts nothing and is left out; off neutral on a three-winding
    transformer it is refused by name (the form holds phase shifters on two windings).
    """
    if "PhaseTapChangerTabular" in model.types(changer):
        return write_tabular_phase_tap_changer(w, model, transformer, end, changer, state)
    if NONLINEAR_PHASE_TAP_CLASSES & set(model.types(changer)) and len(model.referrers("PowerTransformerEnd.PowerTransformer",
                                                                                          transformer)) == 2:
        return write_nonlinear_phase_tap_changer(w, model, end, changer, state)
    step = tap_position(model, changer, state)
    normal = model.integer(changer, "TapChanger.normalStep")
    step = float(step if step is not None else normal if normal is not None else model.integer(changer, "TapChanger.neutralStep") or 0)
    ratio, shift_degree = phase_shift(model, changer, step)
    neutral = model.integer(changer, "TapChanger.neutralStep")
    if abs(shift_degree) < 1e-9 and abs(ratio - 1) < 1e-12:
        logger.info("phase-shifting tap changer %s of %s stands at its neutral step; left out", changer, transformer)
        return
    if len(model.referrers("PowerTransformerEnd.PowerTransformer", transformer)) != 2:
        raise ConversionError(f"{describe(model, changer)} of three-winding PowerTransformer {transformer} shifts {shift_degree:.4g}°: "
                              "phase shifters are held on two-winding transformers only", node=changer)
    if "PhaseTapChangerLinear" in model.types(changer):
        increment = model.number(changer, "PhaseTapChangerLinear.stepPhaseShiftIncrement") or 0.0
    else:
        increment = shift_degree / (step - neutral)
    if abs(ratio - 1) > 1e-12:
        rated_kv = model.number(end, "PowerTransformerEnd.ratedU") * ratio
        logger.warning("%s shifts %.6g° at step %g with a voltage ratio %.6g: folded into the ratedU of its end (%.6g kV)",
                       changer, shift_degree, step, ratio, rated_kv)
        w.graph.remove((w.iri(end), CIM["PowerTransformerEnd.ratedU"], None))
        w.add(w.iri(end), CIM["PowerTransformerEnd.ratedU"], rated_kv)
    node = w.node(w.iri(changer), CIM.PhaseTapChangerLinear)
    w.graph.add((node, CIM["PhaseTapChanger.TransformerEnd"], w.iri(end)))
    for name in ("lowStep", "highStep", "neutralStep"):
        w.add(node, CIM[f"TapChanger.{name}"], model.integer(changer, f"TapChanger.{name}"))
    w.add(node, CIM["TapChanger.normalStep"], normal if normal is not None else neutral)
    w.add(node, CIM["TapChanger.step"], step)
    w.add(node, CIM["PhaseTapChangerLinear.stepPhaseShiftIncrement"], float(increment))


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


# --- shunts -----------------------------------------------------------------------------------------


def shunt_sections(model: CimModel, key: str, state: StateChoice) -> float:
    """Sections in use: SvShuntCompensatorSections when solved state is preferred and given, else SSH, else normalSections."""
    solved = [model.number(sv, "SvShuntCompensatorSections.sections")
              for sv in model.referrers("SvShuntCompensatorSections.ShuntCompensator", key)]
    solved = next((s for s in solved if s is not None), None)
    hypothesis = model.number(key, "ShuntCompensator.sections")
    normal = model.number(key, "ShuntCompensator.normalSections")
    maximum = model.integer(key, "ShuntCompensator.maximumSections")
    for value in (solved, hypothesis):
        if value is not None and maximum is not None and not 0 <= value <= maximum:
            raise ConversionError(f"{describe(model, key)} has {value:g} sections in use, outside 0 … maximumSections {maximum}", node=key)
    chosen = solved if state.prefer_solved and solved is not None else hypothesis if hypothesis is not None else solved
    return float(chosen if chosen is not None else normal if normal is not None else maximum or 0)


def write_shunts(w: FormWriter, topology: Topology, state: StateChoice) -> None:
    """Linear and non-linear shunt compensators, with the sections in use (`shunt_sections`) and their points."""
    model = topology.model
    for key in model.instances("LinearShuntCompensator", "NonlinearShuntCompensator"):
        linear = "LinearShuntCompensator" in model.types(key)
        node = write_equipment(w, topology, key, CIM.LinearShuntCompensator if linear else CIM.NonlinearShuntCompensator,
                               exact_terminals(topology, key, 1))
        maximum = model.integer(key, "ShuntCompensator.maximumSections")
        nom_u_kv = model.number(key, "ShuntCompensator.nomU")
        if not maximum or maximum < 1 or not nom_u_kv:
            raise ConversionError(f"{describe(model, key)} needs maximumSections ≥ 1 and nomU", node=key)
        w.add(node, CIM["ShuntCompensator.nomU"], nom_u_kv)
        w.add(node, CIM["ShuntCompensator.sections"], shunt_sections(model, key, state))
        w.add(node, CIM["ShuntCompensator.maximumSections"], maximum)
        w.add(node, CIM["ShuntCompensator.normalSections"], model.integer(key, "ShuntCompensator.normalSections"))
        if linear:
            w.add(node, CIM["LinearShuntCompensator.bPerSection"], model.number(key, "LinearShuntCompensator.bPerSection") or 0.0)
            w.add(node, CIM["LinearShuntCompensator.gPerSection"], model.number(key, "LinearShuntCompensator.gPerSection") or 0.0)
            continue
        for point in model.referrers("NonlinearShuntCompensatorPoint.NonlinearShuntCompensator", key):
            subject = w.node(w.iri(point), CIM.NonlinearShuntCompensatorPoint)
            w.graph.add((subject, CIM["NonlinearShuntCompensatorPoint.NonlinearShuntCompensator"], node))
            number = model.integer(point, "NonlinearShuntCompensatorPoint.sectionNumber")
            w.add(subject, CIM["NonlinearShuntCompensatorPoint.sectionNumber"], number)
            w.add(subject, CIM["NonlinearShuntCompensatorPoint.b"], model.number(point, "NonlinearShuntCompensatorPoint.b") or 0.0)
            w.add(subject, CIM["NonlinearShuntCompensatorPoint.g"], model.number(point, "NonlinearShuntCompensatorPoint.g") or 0.0)


# --- equivalents and series compensators ------------------------------------------------------------


def write_equivalents(w: FormWriter, topology: Topology, slacks: set[str]) -> None:
    """EquivalentBranch, SeriesCompensator, EquivalentShunt and the EquivalentInjections that are not the slack."""
    model = topology.model
    for cim_class, props in (("EquivalentBranch", ("r", "x", "r21", "x21")), ("SeriesCompensator", ("r", "x"))):
        for key in model.instances(cim_class):
            node = write_equipment(w, topology, key, CIM[cim_class], exact_terminals(topology, key, 2))
            for prop in props:
                w.add(node, CIM[f"{cim_class}.{prop}"], model.number(key, f"{cim_class}.{prop}") or (0.0 if prop in ("r", "x") else None))
    for key in model.instances("EquivalentShunt"):
        node = write_equipment(w, topology, key, CIM.EquivalentShunt, exact_terminals(topology, key, 1))
        w.add(node, CIM["EquivalentShunt.g"], model.number(key, "EquivalentShunt.g") or 0.0)
        w.add(node, CIM["EquivalentShunt.b"], model.number(key, "EquivalentShunt.b") or 0.0)
    for key in model.instances("EquivalentInjection"):
        if key in slacks:
            continue
        node = write_equipment(w, topology, key, CIM.EquivalentInjection, exact_terminals(topology, key, 1))
        p_mw, q_mvar = terminal_power(model, topology, key, "EquivalentInjection")
        capable = bool(model.flag(key, "EquivalentInjection.regulationCapability"))
        target_kv = model.number(key, "EquivalentInjection.regulationTarget")
        regulating = capable and bool(model.flag(key, "EquivalentInjection.regulationStatus")) and bool(target_kv)
        w.add(node, CIM["EquivalentInjection.p"], p_mw)
        w.add(node, CIM["EquivalentInjection.q"], q_mvar)
        w.add(node, CIM["EquivalentInjection.regulationCapability"], capable)
        w.add(node, CIM["EquivalentInjection.regulationStatus"], regulating)
        if regulating:
            w.add(node, CIM["EquivalentInjection.regulationTarget"], target_kv)
            w.add(node, CIM["EquivalentInjection.minQ"], model.number(key, "EquivalentInjection.minQ"))
            w.add(node, CIM["EquivalentInjection.maxQ"], model.number(key, "EquivalentInjection.maxQ"))


# --- machines and the slack -------------------------------------------------------------------------


@dataclass
class StateChoice:
    """Which state a set's controllable positions are read from.

    The twin has no tap, shunt or generator-setpoint controllers, so the positions the controllers of the solver that
    wrote the SV profile reached (SvTapStep, SvShuntCompensatorSections) are the ones that reproduce that solution;
    with `prefer_solved` false (or no SV) the SSH hypothesis is read. Range checks apply to both.
    """

    prefer_solved: bool = True


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


def _priority(model: CimModel, key: str) -> int:
    return model.integer(key, "ExternalNetworkInjection.referencePriority", "SynchronousMachine.referencePriority") or 0


def choose_slacks(model: CimModel, topology: Topology) -> list[Slack]:
    """The reference: the in-service ExternalNetworkInjections / SynchronousMachines with the best (lowest positive)
    referencePriority; else ExternalNetworkInjections with control on; else regulating EquivalentInjections; else the
    largest voltage-controlling SynchronousMachine (by ratedS, then mRID)."""
    candidates = [k for k in model.instances("ExternalNetworkInjection", "SynchronousMachine") if in_service(model, topology, k)]
    ranked = sorted((_priority(model, k), k) for k in candidates if _priority(model, k) > 0)
    if ranked:
        return [Slack(k, _control_target_kv(model, k)[1]) for p, k in ranked if p == ranked[0][0]]
    slacks = [Slack(k, _control_target_kv(model, k)[1]) for k in model.instances("ExternalNetworkInjection")
              if model.flag(k, "RegulatingCondEq.controlEnabled") is not False]
    if not slacks:
        slacks = [
            Slack(k, model.number(k, "EquivalentInjection.regulationTarget"))
            for k in model.instances("EquivalentInjection")
            if model.flag(k, "EquivalentInjection.regulationCapability") is not False
            and model.flag(k, "EquivalentInjection.regulationStatus")
        ]
    if not slacks:
        machines = [(-(model.number(k, "RotatingMachine.ratedS") or 0.0), k) for k in candidates
                    if "SynchronousMachine" in model.types(k) and _control_target_kv(model, k)[1]
                    and model.flag(k, "RegulatingCondEq.controlEnabled") is not False]
        if machines:
            key = min(machines)[1]
            logger.warning("no referencePriority, ExternalNetworkInjection or regulating EquivalentInjection: "
                           "SynchronousMachine %s (largest voltage-controlling machine) is the slack", key)
            slacks = [Slack(key, _control_target_kv(model, key)[1])]
    if not slacks:
        logger.warning("the model has no slack (no ExternalNetworkInjection, regulating EquivalentInjection or "
                       "voltage-controlling machine)")
    return slacks


def slack_target_kv(model: CimModel, bus: str, slack: Slack) -> float:
    """The slack's voltage target: its control's, else the SV voltage at its bus, else the bus's nominal voltage."""
    if slack.target_kv is not None:
        return slack.target_kv
    sv = sv_voltage(model, bus)
    target_kv = model.number(sv, "SvVoltage.v") or model.number(bus_base_voltage(model, bus), "BaseVoltage.nominalVoltage")
    logger.warning("slack %s has no voltage target; using %.6g kV, %s", slack.key, target_kv,
                   "its bus's SV voltage" if sv else "its bus's nominal voltage")
    return target_kv


def write_voltage_control(w: FormWriter, node: URIRef, control_key: str | None, owner: str, terminal: str, target_kv: float,
                          enabled: bool | None = None) -> None:
    """A cim:RegulatingControl in voltage mode on the equipment's own terminal (the form's only kind)."""
    control = w.iri(control_key) if control_key else URIRef(f"{w.iri(owner)}#RegulatingControl")
    w.node(control, CIM.RegulatingControl)
    w.graph.add((node, CIM["RegulatingCondEq.RegulatingControl"], control))
    w.graph.add((control, CIM["RegulatingControl.mode"], CIM["RegulatingControlModeKind.voltage"]))
    w.graph.add((control, CIM["RegulatingControl.Terminal"], w.iri(terminal)))
    w.add(control, CIM["RegulatingControl.targetValue"], float(target_kv))
    w.add(control, CIM["RegulatingControl.enabled"], enabled)


def write_slack(w: FormWriter, topology: Topology, slack: Slack) -> None:
    """A slack ExternalNetworkInjection or EquivalentInjection as cim:ExternalNetworkInjection with its voltage and SV angle."""
    model = topology.model
    terminals = exact_terminals(topology, slack.key, 1)
    node = write_equipment(w, topology, slack.key, CIM.ExternalNetworkInjection, terminals)
    bus = topology.connected_node(terminals[0], slack.key)
    w.add(node, CIM["ExternalNetworkInjection.referencePriority"], _priority(model, slack.key) or 1)
    angle_degree = model.number(sv_voltage(model, bus), "SvVoltage.angle")
    if angle_degree:
        w.add(node, GT.voltageAngleSetpoint, angle_degree)
    control, target_kv = local_voltage_target(model, topology, slack.key, terminals[0])
    slack = Slack(slack.key, target_kv if "EquivalentInjection" not in model.types(slack.key) else slack.target_kv)
    write_voltage_control(w, node, control, slack.key, terminals[0], slack_target_kv(model, bus, slack))


def local_voltage_target(model: CimModel, topology: Topology, key: str, own_terminal: str) -> tuple[str | None, float | None]:
    """(RegulatingControl key, target kV at the equipment's own node) of a voltage control, as the form holds it.

    The form regulates the equipment's own terminal. A control on another terminal of the same node is the same control;
    one on a remote node becomes local at the SV voltage of the equipment's node (which keeps the remote node at its
    target in the solved state), or none without SV (a warning; the machine is then PQ). A control naming a terminal the
    model does not define is refused by name.
    """
    control, target_kv = _control_target_kv(model, key)
    terminal = model.value(control, "RegulatingControl.Terminal")
    if control is None or terminal is None:
        return control, target_kv
    if terminal not in model.objects or "Terminal" not in model.types(terminal):
        raise ConversionError(f"{describe(model, key)} is regulated by RegulatingControl {control}, whose terminal {terminal} "
                              "no file defines", node=key)
    own_node = topology.connected_node(own_terminal, key)
    regulated = topology.connected_node(terminal, model.value(terminal, "Terminal.ConductingEquipment") or control)
    if regulated == own_node:
        return control, target_kv
    solved_kv = model.number(sv_voltage(model, own_node), "SvVoltage.v")
    logger.warning("%s regulates the remote node %s to %s kV; held as local regulation at %s kV (SV voltage at its node)",
                   key, regulated, target_kv, solved_kv)
    return control, solved_kv


def reactive_limits(model: CimModel, key: str, p_mw: float) -> tuple[float | None, float | None]:
    """(minQ, maxQ) Mvar produced: the ReactiveCapabilityCurve at the machine's |p| when it has one, else minQ/maxQ when
    they span a range (some exporters write 0/0 for "see the curve"), else none."""
    curve = model.value(key, "SynchronousMachine.InitialReactiveCapabilityCurve")
    points = sorted((model.number(d, "CurveData.xvalue"), model.number(d, "CurveData.y1value"), model.number(d, "CurveData.y2value"))
                    for d in model.referrers("CurveData.Curve", curve)) if curve else []
    if points:
        xs = [p[0] for p in points]
        low = float(_interpolate(abs(p_mw), xs, [min(p[1], p[2]) for p in points]))
        high = float(_interpolate(abs(p_mw), xs, [max(p[1], p[2]) for p in points]))
        return low, high
    min_q, max_q = model.number(key, "SynchronousMachine.minQ"), model.number(key, "SynchronousMachine.maxQ")
    return (min_q, max_q) if min_q is not None and max_q is not None and min_q < max_q else (None, None)


def _interpolate(x: float, xs: list[float], ys: list[float]) -> float:
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True), strict=False):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
    return ys[-1]


def write_synchronous_machine(w: FormWriter, topology: Topology, key: str) -> None:
    """A cim:SynchronousMachine: PV at its RegulatingControl target when its voltage control is on (and local), else PQ."""
    model = topology.model
    terminals = exact_terminals(topology, key, 1)
    node = write_equipment(w, topology, key, CIM.SynchronousMachine, terminals)
    p_mw, q_mvar = terminal_power(model, topology, key, "RotatingMachine")
    rated_u_kv = model.number(key, "RotatingMachine.ratedU")
    bus = topology.connected_node(terminals[0], key)
    if not rated_u_kv:
        rated_u_kv = model.number(bus_base_voltage(model, bus), "BaseVoltage.nominalVoltage")
    control, target_kv = local_voltage_target(model, topology, key, terminals[0])
    enabled = model.flag(key, "RegulatingCondEq.controlEnabled") is not False
    enabled = enabled and model.flag(control, "RegulatingControl.enabled") is not False
    voltage_controlled = enabled and control is not None and target_kv is not None
    min_q, max_q = reactive_limits(model, key, p_mw)
    w.add(node, CIM["RotatingMachine.p"], p_mw)
    w.add(node, CIM["RotatingMachine.q"], 0.0 if voltage_controlled else q_mvar)
    rated_s_mva = model.number(key, "RotatingMachine.ratedS")
    w.add(node, CIM["RotatingMachine.ratedS"], rated_s_mva if rated_s_mva and rated_s_mva > 0 else None)
    w.add(node, CIM["RotatingMachine.ratedU"], rated_u_kv)
    w.add(node, CIM["SynchronousMachine.minQ"], min_q)
    w.add(node, CIM["SynchronousMachine.maxQ"], max_q)
    w.add(node, CIM["RegulatingCondEq.controlEnabled"], voltage_controlled)
    if voltage_controlled:
        write_voltage_control(w, node, control, key, terminals[0], target_kv, True)


def write_asynchronous_machines(w: FormWriter, topology: Topology) -> None:
    """Motors: cim:AsynchronousMachine with their SSH p, q (load sign) and nameplate."""
    model = topology.model
    for key in model.instances("AsynchronousMachine"):
        kind = model.value(key, "AsynchronousMachine.asynchronousMachineType") or "AsynchronousMachineKind.motor"
        if not kind.endswith("motor"):
            raise ConversionError(f"{describe(model, key)} is an asynchronous generator; gridtwin holds motors", node=key)
        node = write_equipment(w, topology, key, CIM.AsynchronousMachine, exact_terminals(topology, key, 1))
        p_mw, q_mvar = terminal_power(model, topology, key, "RotatingMachine")
        mechanical_mw = model.number(key, "AsynchronousMachine.ratedMechanicalPower")
        if not mechanical_mw or mechanical_mw <= 0:
            raise ConversionError(f"{describe(model, key)} has no positive ratedMechanicalPower", node=key)
        w.graph.add((node, CIM["AsynchronousMachine.asynchronousMachineType"], CIM["AsynchronousMachineKind.motor"]))
        w.add(node, CIM["RotatingMachine.p"], p_mw)
        w.add(node, CIM["RotatingMachine.q"], q_mvar)
        w.add(node, CIM["RotatingMachine.ratedU"], model.number(key, "RotatingMachine.ratedU"))
        w.add(node, CIM["AsynchronousMachine.ratedMechanicalPower"], mechanical_mw)
        for prop in ("AsynchronousMachine.efficiency", "AsynchronousMachine.iaIrRatio", "AsynchronousMachine.rxLockedRotorRatio"):
            w.add(node, CIM[prop], model.number(key, prop))
        w.add(node, CIM["AsynchronousMachine.ratedPowerFactor"], model.number(key, "RotatingMachine.ratedPowerFactor"))


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
    """The slack (as cim:ExternalNetworkInjection: the twin's solvers take their reference from an external grid, so a
    slack machine is written as one at its target voltage and SV angle), the other synchronous machines, the other
    external network injections (PQ), equivalents and power electronics."""
    model = topology.model
    slacks = choose_slacks(model, topology)
    for slack in slacks:
        write_slack(w, topology, slack)
    taken = {s.key for s in slacks}
    for key in model.instances("ExternalNetworkInjection"):
        if key not in taken:
            write_generator(w, topology, key, "ExternalNetworkInjection", URIRef(f"{w.iri(key)}#Unit"), GT.OtherGenerationUnit)
    for key in model.instances("SynchronousMachine"):
        if key not in taken:
            write_synchronous_machine(w, topology, key)
    write_equivalents(w, topology, taken)
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


# --- tap changer tables and static VAR compensators (issue 11) ------------------------------------------------------


TABLE_LINKS = {False: ("RatioTapChanger.RatioTapChangerTable", "RatioTapChangerTablePoint.RatioTapChangerTable", "Ratio"),
               True: ("PhaseTapChangerTabular.PhaseTapChangerTable", "PhaseTapChangerTablePoint.PhaseTapChangerTable", "Phase")}


def write_tap_table(w: FormWriter, model: CimModel, changer: str, node: URIRef, step: float | None, *, phase: bool) -> None:
    """A changer's RatioTapChangerTable / PhaseTapChangerTable with its points (step, ratio, r, x; angle for phase tables).

    The form holds no g, b deviations: a point with one other than 0 is refused by name, as is a changer standing at a
    step its table does not list.
    """
    changer_link, point_link, prefix = TABLE_LINKS[phase]
    table = model.value(changer, changer_link)
    if table is None:
        return
    points = model.referrers(point_link, table)
    if not points:
        raise ConversionError(f"{describe(model, changer)} names the table {table}, which has no points", node=changer)
    table_node = w.node(w.iri(table), CIM[f"{prefix}TapChangerTable"])
    w.graph.add((node, CIM[changer_link], table_node))
    steps = set()
    for point in points:
        for quantity in ("g", "b"):
            if model.number(point, f"TapChangerTablePoint.{quantity}") or 0.0:
                raise ConversionError(f"{prefix}TapChangerTablePoint {point} changes {quantity}: tap-dependent magnetising admittance "
                                      "is not supported (pandapower's trafo_characteristic_table has no column for it)", node=point)
        subject = w.node(w.iri(point), CIM[f"{prefix}TapChangerTablePoint"])
        w.graph.add((subject, CIM[point_link], table_node))
        steps.add(model.integer(point, "TapChangerTablePoint.step"))
        w.add(subject, CIM["TapChangerTablePoint.step"], model.integer(point, "TapChangerTablePoint.step"))
        w.add(subject, CIM["TapChangerTablePoint.ratio"], model.number(point, "TapChangerTablePoint.ratio") or 1.0)
        w.add(subject, CIM["TapChangerTablePoint.r"], model.number(point, "TapChangerTablePoint.r") or 0.0)
        w.add(subject, CIM["TapChangerTablePoint.x"], model.number(point, "TapChangerTablePoint.x") or 0.0)
        if phase:
            w.add(subject, CIM["PhaseTapChangerTablePoint.angle"], model.number(point, "PhaseTapChangerTablePoint.angle") or 0.0)
    if step is not None and step not in steps:
        raise ConversionError(f"{describe(model, changer)} stands at step {step:g}, which its table {table} does not list", node=changer)


NONLINEAR_PHASE_TAP_CLASSES = {"PhaseTapChangerSymmetrical", "PhaseTapChangerAsymmetrical"}


def _phase_tap_steps(w: FormWriter, model: CimModel, end: str, changer: str, state: StateChoice, cim_class) -> tuple[URIRef, float]:
    """The form's node of a phase tap changer with its end, step range, normal step and the step it stands at."""
    neutral = model.integer(changer, "TapChanger.neutralStep")
    normal = model.integer(changer, "TapChanger.normalStep")
    step = tap_position(model, changer, state)
    step = float(step if step is not None else normal if normal is not None else neutral or 0)
    node = w.node(w.iri(changer), cim_class)
    w.graph.add((node, CIM["PhaseTapChanger.TransformerEnd"], w.iri(end)))
    for name in ("lowStep", "highStep", "neutralStep"):
        w.add(node, CIM[f"TapChanger.{name}"], model.integer(changer, f"TapChanger.{name}"))
    w.add(node, CIM["TapChanger.normalStep"], normal if normal is not None else neutral)
    w.add(node, CIM["TapChanger.step"], step)
    return node, step


def write_nonlinear_phase_tap_changer(w: FormWriter, model: CimModel, end: str, changer: str, state: StateChoice) -> None:
    """A PhaseTapChangerSymmetrical / Asymmetrical of a two-winding transformer in its own class: exact at every step (the
    twin's load flow computes IEC 61970-301's shift and ratio from voltageStepIncrement and windingConnectionAngle)."""
    asymmetrical = "PhaseTapChangerAsymmetrical" in model.types(changer)
    node, _ = _phase_tap_steps(w, model, end, changer, state,
                               CIM.PhaseTapChangerAsymmetrical if asymmetrical else CIM.PhaseTapChangerSymmetrical)
    w.add(node, CIM["PhaseTapChangerNonLinear.voltageStepIncrement"],
          model.number(changer, "PhaseTapChangerNonLinear.voltageStepIncrement") or 0.0)
    if asymmetrical:
        w.add(node, CIM["PhaseTapChangerAsymmetrical.windingConnectionAngle"],
              model.number(changer, "PhaseTapChangerAsymmetrical.windingConnectionAngle") or 90.0)


def write_tabular_phase_tap_changer(w: FormWriter, model: CimModel, transformer: str, end: str, changer: str, state: StateChoice) -> None:
    """A PhaseTapChangerTabular as the form's (two-winding transformers): exact at every step of its table."""
    if len(model.referrers("PowerTransformerEnd.PowerTransformer", transformer)) != 2:
        raise ConversionError(f"{describe(model, changer)} of three-winding PowerTransformer {transformer}: tabular phase shifters are "
                              "held on two-winding transformers only", node=changer)
    if any(model.value(rtc, "RatioTapChanger.RatioTapChangerTable") for e in transformer_ends(model, transformer)
           for rtc in model.referrers("RatioTapChanger.TransformerEnd", e)):
        raise ConversionError(f"PowerTransformer {transformer} has a tabular ratio and a tabular phase tap changer: pandapower reads "
                              "one characteristic table per transformer", node=transformer)
    node, step = _phase_tap_steps(w, model, end, changer, state, CIM.PhaseTapChangerTabular)
    write_tap_table(w, model, changer, node, step, phase=True)


def write_static_var_compensators(w: FormWriter, topology: Topology) -> None:
    """StaticVarCompensators: ratings (ohm), control mode, setpoint (voltageSetPoint, else its RegulatingControl's target at
    its own node), q (SSH, load sign). A voltage droop (slope ≠ 0) is refused: the twin's load flow holds the setpoint."""
    model = topology.model
    for key in model.instances("StaticVarCompensator"):
        if model.number(key, "StaticVarCompensator.slope"):
            raise ConversionError(f"{describe(model, key)} has a voltage droop (slope {model.number(key, 'StaticVarCompensator.slope')} "
                                  "kV/Mvar): not supported, the load flow holds its setpoint exactly", node=key)
        terminals = exact_terminals(topology, key, 1)
        node = write_equipment(w, topology, key, CIM.StaticVarCompensator, terminals)
        mode = str(model.value(key, "StaticVarCompensator.sVCControlMode") or "voltage")
        voltage = not mode.endswith("reactivePower")
        target_kv = model.number(key, "StaticVarCompensator.voltageSetPoint")
        if target_kv is None:
            target_kv = local_voltage_target(model, topology, key, terminals[0])[1]
        enabled = model.flag(key, "RegulatingCondEq.controlEnabled") is not False and (target_kv is not None or not voltage)
        w.add(node, CIM["StaticVarCompensator.capacitiveRating"], model.number(key, "StaticVarCompensator.capacitiveRating"))
        w.add(node, CIM["StaticVarCompensator.inductiveRating"], model.number(key, "StaticVarCompensator.inductiveRating"))
        w.graph.add((node, CIM["StaticVarCompensator.sVCControlMode"],
                     CIM["SVCControlMode.voltage" if voltage else "SVCControlMode.reactivePower"]))
        w.add(node, CIM["RegulatingCondEq.controlEnabled"], enabled)
        w.add(node, CIM["StaticVarCompensator.voltageSetPoint"], target_kv)
        w.add(node, CIM["StaticVarCompensator.q"], model.number(key, "StaticVarCompensator.q") or 0.0)


def refuse_unsupported(model: CimModel) -> None:
    """Power-carrying equipment gridtwin cannot hold is an error, never silently dropped."""
    for cim_class in UNSUPPORTED_CLASSES:
        found = model.instances(cim_class)
        if found:
            name = model.value(found[0], "IdentifiedObject.name")
            label = f"{found[0]} ({name})" if name else found[0]
            raise ConversionError(f"{cim_class} {label} carries power but is not supported by gridtwin", node=found[0])


def cgmes_to_graph(
    paths: list[Path], *, grid_iri: str | None = None, grid_name: str | None = None, owner_iri: str | None = None,
    prefer_solved: bool = True,
) -> Graph:
    """Convert a set of CGMES files (EQ, TP, SSH, optional SV; other profiles are ignored) to the gridtwin form.

    The result describes one ``gt:Grid`` and is deterministic: the same files give the same triples.
    Raises `ConversionError` naming the file or object at fault (a DOCTYPE/ENTITY declaration included).
    """
    paths = [Path(p) for p in paths]
    model = read_model(paths)
    check_profiles(model)
    if not model.instances("TopologicalNode"):
        raise ConversionError("no TopologicalNode found; the TP profile is required")
    refuse_unsupported(model)
    state = StateChoice(prefer_solved=prefer_solved)
    grid_iri = grid_iri or default_grid_iri(model)
    w = FormWriter(Identity(grid_iri))
    grid = w.node(URIRef(grid_iri), GT.Grid, grid_name or default_grid_name(paths))
    if owner_iri:
        w.graph.add((grid, GT.owner, URIRef(owner_iri)))
    topology = Topology(model)
    write_buses(w, model, topology)
    write_lines(w, topology)
    write_transformers(w, topology, state)
    write_switches(w, topology)
    write_loads(w, topology)
    write_shunts(w, topology, state)
    write_asynchronous_machines(w, topology)
    write_injections(w, topology)
    write_static_var_compensators(w, topology)
    return w.graph


def cim_version(paths: list[Path]) -> str:
    """The CGMES version the files are written in ("CGMES 2.4.15" or "CGMES 3.0")."""
    return CIM_VERSIONS[read_model([Path(p) for p in paths]).namespace]
