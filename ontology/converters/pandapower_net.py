"""pandapower net → the RDF form of a grid (twin/rdf_codec.py), and SimBench codes through it.

Every IRI is minted from the grid IRI and the pandapower index (``{grid}/bus/7``, ``{grid}/line/3``,
helper objects as ``{asset}#T1``, ``#End2`` …), so converting the same net twice gives the same
graph and a re-import changes nothing. Conventions (all exact, so a load flow on the twin reproduces
pandapower's to rounding):

* lines: totals for the whole length with ``parallel`` folded in (r/x divided, b/g multiplied);
  ``b = 2π·f·c·length·parallel``; ``gt:ratedCurrent = max_i_ka · df · parallel``, the current
  pandapower measures ``loading_percent`` against;
* transformers: everything on end 1 (HV), referred to ``vn_hv_kv``, ``parallel`` units folded into
  one: ``z_base = vn_hv²/(sn_mva·parallel)``, ``r = vkr%·z_base``, ``x = √((vk%·z_base)² − r²)``,
  ``g = parallel·pfe/vn_hv²``, ``b = parallel·√((i0%·sn_mva)² − pfe²)/vn_hv²``; g and b are magnitudes
  (b ≥ 0 stands for the inductive magnetising susceptance pandapower models); end 2 carries zeros;
  ``ratedS = sn_mva·parallel·df``, what pandapower measures loading against;
  ``phaseAngleClock = shift_degree/30`` on end 2; a tap becomes a ``cim:RatioTapChanger`` also when
  ``tap_changer_type`` is unset (SimBench nets since pandapower 3.0, whose taps pandapower ignores);
* switches at a line or transformer end (``et`` 'l'/'t'): CIM has no switch on a branch end, so the
  end moves to an auxiliary ``cim:TopologicalNode`` (``{grid}/bus/switch-{index}``, the bus's base
  voltage and coordinates) and the switch joins bus and auxiliary node;
* loads, static generators and storage: ``scaling`` folded into p and q;
* ext_grid: ``RegulatingControl.targetValue = vm_pu · vn_kv``;
* SimBench ``subnet`` (or pandapower bus ``zone``) → one ``cim:Feeder`` per value;
  ``profile`` → ``gt:profile``; bus GeoJSON points → ``geo:long``/``geo:lat``.

Tables without an RDF counterpart raise ConversionError naming table and row; tables that carry no
grid physics (measurement, controller, substation, loadcases, costs, groups) are left out.
"""

from __future__ import annotations

import gc
import json
import math
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyoxigraph as ox
from rdflib import Graph, Literal, URIRef
from rdflib.namespace import RDF

from ontology.document import RdfDocument, ox_term, typed_literal
from ontology.errors import ConversionError
from ontology.namespaces import CIM, GEO, GT, PREFIXES


class Terms(dict):
    """Terms of one namespace by local name, each built once (an rdflib namespace lookup builds a new URIRef every time)."""

    def __init__(self, namespace):
        super().__init__()
        self.namespace = namespace

    def __missing__(self, name: str) -> URIRef:
        term = self[name] = self.namespace[name]
        return term


C, G = Terms(CIM), Terms(GT)
TYPE, GEO_LONG, GEO_LAT = RDF.type, GEO.long, GEO.lat

SUPPORTED_TABLES = {"bus", "line", "trafo", "switch", "load", "sgen", "storage", "ext_grid"}
NON_ELECTRICAL_TABLES = {"measurement", "controller", "substation", "loadcases", "poly_cost", "pwl_cost", "group",
                         "bus_geodata", "line_geodata", "trafo_characteristic_table", "characteristic"}
SWITCH_KINDS = {"CB": C["Breaker"], "LBS": C["LoadBreakSwitch"], "DS": C["Disconnector"]}
TAP_CHANGER_TYPES = {"Ratio", "", None}

NAME = C["IdentifiedObject.name"]
IN_SERVICE = C["Equipment.inService"]
T_EQUIPMENT = C["Terminal.ConductingEquipment"]
T_NODE = C["Terminal.TopologicalNode"]
T_SEQ = C["ACDCTerminal.sequenceNumber"]


class RdfBuilder:
    """Collects the triples of one grid (rdflib terms) fast: literals cached, helpers as twin.rdf_codec writes them."""

    def __init__(self, grid_iri: str):
        self.grid_iri = grid_iri
        self.triples: list[tuple] = []
        self.add = self.triples.append
        self._literals: dict[type, dict] = {float: {}, int: {}, bool: {}, str: {}}

    def iri(self, *path) -> URIRef:
        return URIRef("/".join([self.grid_iri, *map(str, path)]))

    def literal(self, value) -> Literal:
        """The literal the codec's writer produces (`typed_literal`), built once per distinct value."""
        cache = self._literals.get(type(value))
        if cache is None:
            value, cache = str(value), self._literals[str]
        key = value if value or not isinstance(value, float) else repr(value)  # keeps 0.0 and -0.0 apart
        found = cache.get(key)
        if found is None:
            found = cache[key] = typed_literal(value)
        return found

    def value(self, subject, predicate, value) -> None:
        """Add a literal triple unless the value is absent (None, NaN or empty)."""
        if value is None or value != value or value == "":  # value != value: NaN
            return
        self.add((subject, predicate, self.literal(value)))

    def node(self, subject: URIRef, rdf_class, name: str = "") -> URIRef:
        self.add((subject, TYPE, rdf_class))
        if name:
            self.add((subject, NAME, self.literal(name)))
        return subject

    def equipment(self, subject: URIRef, rdf_class, name: str, feeder, in_service: bool, nodes: Iterable) -> URIRef:
        """An equipment with name, feeder, in-service flag and one terminal per node, in sequence order."""
        self.node(subject, rdf_class, name)
        if feeder is not None:
            self.add((subject, G["feeder"], feeder))
        if not in_service:
            self.add((subject, IN_SERVICE, self.literal(False)))
        for number, node in enumerate(nodes, start=1):
            terminal = URIRef(f"{subject}#T{number}")
            self.add((terminal, TYPE, C["Terminal"]))
            self.add((terminal, T_EQUIPMENT, subject))
            self.add((terminal, T_NODE, node))
            self.add((terminal, T_SEQ, self.literal(number)))
        return subject


# --- reading the net ------------------------------------------------------------------------------


def _error(table: str, index, name, message: str, node: str | None = None) -> ConversionError:
    label = f"{table} {index}" + (f" ({name!r})" if isinstance(name, str) and name else "")
    return ConversionError(f"{label}: {message}", node=node or f"{table}[{index}]")


def _column(df: pd.DataFrame, name: str, default=np.nan) -> pd.Series:
    return df[name] if name in df else pd.Series(default, index=df.index)


def _names(df: pd.DataFrame) -> list[str]:
    return [str(n) if isinstance(n, str) or not pd.isna(n) else "" for n in _column(df, "name", "")]


def _strings(df: pd.DataFrame, name: str) -> list[str]:
    return [v if isinstance(v, str) else "" for v in _column(df, name, "")]


def _floats(values) -> list[float]:
    return np.asarray(values, dtype=float).tolist()


def _first_bad(df: pd.DataFrame, mask, table: str, message: str, grid_iri: str | None = None):
    """Raise ConversionError for the first row where `mask` holds."""
    mask = np.asarray(mask, dtype=bool)
    if mask.any():
        position = int(np.flatnonzero(mask)[0])
        index = df.index[position]
        name = _column(df, "name", "").iloc[position]
        raise _error(table, index, name, message, f"{grid_iri}/{table}/{index}" if grid_iri else None)


def check_tables(net) -> None:
    """Refuse nets with non-empty element tables the RDF form cannot represent."""
    for key, table in net.items():
        if not isinstance(table, pd.DataFrame) or key.startswith(("res_", "_", "std_types")) or table.empty:
            continue
        if key not in SUPPORTED_TABLES and key not in NON_ELECTRICAL_TABLES:
            raise _error(key, table.index[0], _column(table, "name", "").iloc[0],
                         f"pandapower table '{key}' ({len(table)} rows) has no counterpart in the gridtwin RDF form")


# --- grid skeleton: feeders, base voltages, buses -------------------------------------------------


class Skeleton:
    """IRIs of feeders and buses by pandapower key, built while writing them."""

    def __init__(self, b: RdfBuilder):
        self.b = b
        self.feeders: dict[str, URIRef] = {}
        self.bus: dict[int, URIRef] = {}
        self.bus_voltage: dict[int, URIRef] = {}
        self.bus_geo: dict[int, tuple[float, float]] = {}

    def feeder(self, subnet) -> URIRef | None:
        if not isinstance(subnet, str) or not subnet:
            return None
        iri = self.feeders.get(subnet)
        if iri is None:
            iri = self.feeders[subnet] = self.b.node(self.b.iri("feeder", quote(subnet, safe="")), C["Feeder"], subnet)
        return iri

    def feeders_of(self, df: pd.DataFrame) -> list:
        column = "subnet" if "subnet" in df else "zone"
        return [self.feeder(v) for v in _column(df, column, None)]

    def base_voltage(self, vn_kv: float, cache: dict) -> URIRef:
        iri = cache.get(vn_kv)
        if iri is None:
            iri = cache[vn_kv] = self.b.node(self.b.iri("base-voltage", f"{vn_kv:.12g}"), C["BaseVoltage"], f"{vn_kv:g} kV")
            self.b.value(iri, C["BaseVoltage.nominalVoltage"], vn_kv)
        return iri

    def write_buses(self, bus: pd.DataFrame) -> None:
        _first_bad(bus, ~(bus.vn_kv > 0), "bus", "vn_kv must be a voltage greater than 0", self.b.grid_iri)
        _first_bad(bus, ~bus.in_service.astype(bool), "bus", "out-of-service buses have no counterpart in CIM "
                   "(a cim:TopologicalNode has no in-service flag): take its equipment out of service instead", self.b.grid_iri)
        b, voltages = self.b, {}
        coordinates = bus_coordinates(bus)
        for index, name, vn_kv, feeder, geo in zip(bus.index.tolist(), _names(bus), _floats(bus.vn_kv), self.feeders_of(bus),
                                                   coordinates, strict=True):
            node = b.node(b.iri("bus", index), C["TopologicalNode"], name)
            self.bus[index] = node
            self.bus_voltage[index] = self.base_voltage(vn_kv, voltages)
            b.add((node, C["TopologicalNode.BaseVoltage"], self.bus_voltage[index]))
            if feeder is not None:
                b.add((node, G["feeder"], feeder))
            if geo is not None:
                self.bus_geo[index] = geo
                b.value(node, GEO_LONG, geo[0])
                b.value(node, GEO_LAT, geo[1])

    def write_aux_node(self, iri: URIRef, bus: int, name: str, feeder) -> URIRef:
        """An auxiliary node next to `bus` (same base voltage and place) that carries a switched branch end."""
        b = self.b
        b.node(iri, C["TopologicalNode"], name)
        b.add((iri, C["TopologicalNode.BaseVoltage"], self.bus_voltage[bus]))
        if feeder is not None:
            b.add((iri, G["feeder"], feeder))
        if bus in self.bus_geo:
            b.value(iri, GEO_LONG, self.bus_geo[bus][0])
            b.value(iri, GEO_LAT, self.bus_geo[bus][1])
        return iri


def bus_coordinates(bus: pd.DataFrame) -> list[tuple[float, float] | None]:
    """(longitude, latitude) per bus from pandapower 3's GeoJSON column `geo`.

    None where there is no point or it cannot be WGS84 degrees (pandapower nets often carry plain x/y drawing
    coordinates, which geo:long/geo:lat cannot hold).
    """
    found = []
    for geo in _column(bus, "geo", None):
        if isinstance(geo, str):
            geo = json.loads(geo)
        point = geo.get("coordinates") if isinstance(geo, dict) and geo.get("type") == "Point" else None
        lon, lat = (float(point[0]), float(point[1])) if point and len(point) >= 2 else (math.nan, math.nan)
        found.append((lon, lat) if abs(lon) <= 180 and abs(lat) <= 90 else None)
    return found


# --- switches and the branch ends they sit on ----------------------------------------------------


def switch_nodes(net, sk: Skeleton) -> tuple[list, dict]:
    """Second terminal node of every switch, and the auxiliary node per switched branch end.

    Returns (nodes in switch order, {(et, element, bus): auxiliary node}).
    """
    switch, b = net.switch, sk.b
    ends = {"l": (net.line, "from_bus", "to_bus"), "t": (net.trafo, "hv_bus", "lv_bus")}
    _first_bad(switch, ~switch.et.isin(["b", "l", "t"]), "switch", "only bus, line and transformer switches (et b/l/t) are supported",
               b.grid_iri)
    _first_bad(switch, ~switch.bus.isin(sk.bus.keys()), "switch", "its bus does not exist", b.grid_iri)
    bus_bus = (switch.et == "b").to_numpy()
    _first_bad(switch, bus_bus & ~switch.element.isin(sk.bus.keys()), "switch", "its element bus does not exist", b.grid_iri)
    _first_bad(switch, bus_bus & (switch.bus == switch.element), "switch", "joins a bus to itself", b.grid_iri)
    z_ohm = _column(switch, "z_ohm", 0.0).fillna(0.0).to_numpy(float)
    _first_bad(switch, bus_bus & (z_ohm != 0), "switch", "a bus-bus switch with an impedance (z_ohm > 0) cannot be represented",
               b.grid_iri)
    for et, (table, first, second) in ends.items():
        mask = (switch.et == et).to_numpy()
        _first_bad(switch, mask & ~switch.element.isin(table.index), "switch",
                   f"its {'line' if et == 'l' else 'transformer'} does not exist", b.grid_iri)
        at_end = (switch.bus.to_numpy() == table[first].reindex(switch.element).to_numpy()) | (
            switch.bus.to_numpy() == table[second].reindex(switch.element).to_numpy())
        _first_bad(switch, mask & ~at_end, "switch", "its bus is not an end of the switched element", b.grid_iri)
    keys = list(zip(switch.et, switch.element.tolist(), switch.bus.tolist(), strict=True))
    duplicated = pd.Series(keys).duplicated().to_numpy() & ~bus_bus
    _first_bad(switch, duplicated, "switch", "a second switch on the same branch end is not supported", b.grid_iri)

    nodes, aux = [], {}
    for index, name, key, feeder in zip(switch.index.tolist(), _names(switch), keys, sk.feeders_of(switch), strict=True):
        et, element, bus = key
        if et == "b":
            nodes.append(sk.bus[element])
            continue
        node = sk.write_aux_node(b.iri("bus", f"switch-{index}"), bus, f"{name} (branch end)" if name else "", feeder)
        aux[key] = node
        nodes.append(node)
    return nodes, aux


def write_switches(net, sk: Skeleton, nodes: list) -> None:
    switch, b = net.switch, sk.b
    open_ = (~switch.closed.astype(bool)).tolist()
    kinds = [SWITCH_KINDS.get(t, C["Switch"]) for t in _column(switch, "type", None)]
    rows = zip(switch.index.tolist(), _names(switch), switch.bus.tolist(), nodes, kinds, open_, sk.feeders_of(switch), strict=True)
    for index, name, bus, other, kind, is_open, feeder in rows:
        node = b.equipment(b.iri("switch", index), kind, name, feeder, True, (sk.bus[bus], other))
        b.value(node, C["Switch.normalOpen"], is_open)
        b.value(node, C["Switch.open"], is_open)


def _end_nodes(sk: Skeleton, aux: dict, et: str, table: pd.DataFrame, column: str) -> list:
    """The node each branch end connects to: its bus, or the auxiliary node of the switch on that end."""
    return [aux.get((et, index, bus)) or sk.bus[bus] for index, bus in zip(table.index.tolist(), table[column].tolist(), strict=True)]


def _check_buses(table: pd.DataFrame, name: str, columns: Iterable[str], sk: Skeleton) -> None:
    for column in columns:
        _first_bad(table, ~table[column].isin(sk.bus.keys()), name, f"{column} does not exist", sk.b.grid_iri)


# --- branches -----------------------------------------------------------------------------------------


def write_lines(net, sk: Skeleton, aux: dict) -> None:
    line, b = net.line, sk.b
    _check_buses(line, "line", ("from_bus", "to_bus"), sk)
    _first_bad(line, line.from_bus == line.to_bus, "line", "both ends connect to the same bus", b.grid_iri)
    _first_bad(line, ~(line.length_km > 0), "line", "length_km must be greater than 0", b.grid_iri)
    length, parallel = line.length_km.to_numpy(float), line.parallel.to_numpy(float)
    _first_bad(line, ~(parallel >= 1), "line", "parallel must be 1 or more", b.grid_iri)
    omega = 2 * math.pi * net.f_hz
    r_ohm = line.r_ohm_per_km.to_numpy(float) * length / parallel
    x_ohm = line.x_ohm_per_km.to_numpy(float) * length / parallel
    b_s = omega * line.c_nf_per_km.to_numpy(float) * 1e-9 * length * parallel
    g_s = _column(line, "g_us_per_km", 0.0).fillna(0.0).to_numpy(float) * 1e-6 * length * parallel
    for label, values in (("r_ohm_per_km", r_ohm), ("x_ohm_per_km", x_ohm), ("c_nf_per_km", b_s), ("g_us_per_km", g_s)):
        _first_bad(line, ~(values >= 0), "line", f"{label} must be a number, 0 or more", b.grid_iri)
    max_i_ka = line.max_i_ka.to_numpy(float) * _column(line, "df", 1.0).fillna(1.0).to_numpy(float) * parallel
    max_i_ka = np.where(max_i_ka > 0, max_i_ka, np.nan)
    rows = zip(line.index.tolist(), _names(line), _end_nodes(sk, aux, "l", line, "from_bus"), _end_nodes(sk, aux, "l", line, "to_bus"),
               line.in_service.astype(bool).tolist(), sk.feeders_of(line), _floats(length), _floats(r_ohm), _floats(x_ohm),
               _floats(b_s), _floats(g_s), _floats(max_i_ka), strict=True)
    for index, name, from_node, to_node, in_service, feeder, length_km, r, x, bch, gch, rated in rows:
        node = b.equipment(b.iri("line", index), C["ACLineSegment"], name, feeder, in_service, (from_node, to_node))
        b.value(node, C["Conductor.length"], length_km)
        b.value(node, C["ACLineSegment.r"], r)
        b.value(node, C["ACLineSegment.x"], x)
        b.value(node, C["ACLineSegment.bch"], bch)
        b.value(node, C["ACLineSegment.gch"], gch)
        b.value(node, G["ratedCurrent"], rated)


def transformer_parameters(trafo: pd.DataFrame, grid_iri: str) -> pd.DataFrame:
    """End-1 (HV-side) series and shunt parameters in ohm / siemens, rated power and clock number."""
    _check_trafo_model(trafo, grid_iri)
    parallel = trafo.parallel.to_numpy(float)
    df = _column(trafo, "df", 1.0).fillna(1.0).to_numpy(float)
    sn_mva, vn_hv_kv = trafo.sn_mva.to_numpy(float), trafo.vn_hv_kv.to_numpy(float)
    z_base_ohm = vn_hv_kv**2 / (sn_mva * parallel)
    z_ohm = trafo.vk_percent.to_numpy(float) / 100 * z_base_ohm
    r_ohm = trafo.vkr_percent.to_numpy(float) / 100 * z_base_ohm
    pfe_mw = trafo.pfe_kw.to_numpy(float) / 1000
    magnetising_mva = trafo.i0_percent.to_numpy(float) / 100 * sn_mva
    b_mva = np.sqrt(np.maximum(magnetising_mva**2 - pfe_mw**2, 0.0))
    return pd.DataFrame({
        "rated_s_mva": sn_mva * parallel * df,
        "r_ohm": r_ohm,
        "x_ohm": np.sqrt(np.maximum(z_ohm**2 - r_ohm**2, 0.0)),
        "g_s": pfe_mw / vn_hv_kv**2 * parallel,
        "b_s": b_mva / vn_hv_kv**2 * parallel,
        "clock": np.rint(trafo.shift_degree.fillna(0.0).to_numpy(float) / 30).astype(int) % 12,
    }, index=trafo.index)


def _check_trafo_model(trafo: pd.DataFrame, grid_iri: str) -> None:
    def bad(mask, message):
        _first_bad(trafo, mask, "trafo", message, grid_iri)

    for column in ("sn_mva", "vn_hv_kv", "vn_lv_kv"):
        bad(~(trafo[column] > 0), f"{column} must be greater than 0")
    bad(~(trafo.parallel >= 1), "parallel must be 1 or more")
    bad(~(trafo.vkr_percent >= 0) | ~(trafo.vk_percent >= trafo.vkr_percent), "needs 0 <= vkr_percent <= vk_percent")
    bad(~(trafo.pfe_kw >= 0) | ~(trafo.i0_percent >= 0), "pfe_kw and i0_percent must be 0 or more")
    shift = trafo.shift_degree.fillna(0.0).to_numpy(float)
    bad(np.abs(shift / 30 - np.rint(shift / 30)) > 1e-9, "shift_degree must be a multiple of 30° (a vector-group clock number)")
    changer = [None if pd.isna(v) else v for v in _column(trafo, "tap_changer_type", None)]
    bad([c not in TAP_CHANGER_TYPES for c in changer], "only ratio tap changers (tap_changer_type 'Ratio' or unset) are supported")
    bad(_column(trafo, "tap_step_degree", 0.0).fillna(0.0) != 0, "phase-shifting taps (tap_step_degree) are not supported")
    bad(_column(trafo, "tap_dependency_table", False).fillna(False).astype(bool), "tap-dependent impedance tables are not supported")
    bad(_column(trafo, "tap2_side", None).notna() & _column(trafo, "tap2_pos", np.nan).notna(), "a second tap changer is not supported")


def tap_changers(trafo: pd.DataFrame, grid_iri: str) -> list[dict | None]:
    """Ratio tap changer per transformer (None where there is none): side, integer steps, position, step %."""
    has_tap = (_column(trafo, "tap_side", None).isin(["hv", "lv"]) & _column(trafo, "tap_step_percent").notna()).to_numpy()
    neutral = _column(trafo, "tap_neutral").fillna(0.0)
    position = _column(trafo, "tap_pos").fillna(neutral)
    low, high = _column(trafo, "tap_min").fillna(position), _column(trafo, "tap_max").fillna(position)
    steps = pd.DataFrame({"low": low, "high": high, "neutral": neutral})
    _first_bad(trafo, has_tap & (steps != steps.round()).any(axis=1).to_numpy(), "trafo",
               "tap_min, tap_max and tap_neutral must be integers", grid_iri)
    _first_bad(trafo, has_tap & ~((low <= position) & (position <= high)).to_numpy(), "trafo", "tap_pos lies outside tap_min … tap_max",
               grid_iri)
    rows = zip(has_tap, _column(trafo, "tap_side", None), steps.low, steps.high, steps.neutral, _floats(position),
               _floats(_column(trafo, "tap_step_percent")), strict=True)
    return [
        {"side": side, "low": int(lo), "high": int(hi), "neutral": int(ne), "pos": pos, "step_percent": step} if tap else None
        for tap, side, lo, hi, ne, pos, step in rows
    ]


def write_transformers(net, sk: Skeleton, aux: dict) -> None:
    trafo, b = net.trafo, sk.b
    _check_buses(trafo, "trafo", ("hv_bus", "lv_bus"), sk)
    params = transformer_parameters(trafo, b.grid_iri)
    taps = tap_changers(trafo, b.grid_iri)
    rows = zip(trafo.index.tolist(), _names(trafo), _end_nodes(sk, aux, "t", trafo, "hv_bus"), _end_nodes(sk, aux, "t", trafo, "lv_bus"),
               trafo.in_service.astype(bool).tolist(), sk.feeders_of(trafo), _floats(trafo.vn_hv_kv), _floats(trafo.vn_lv_kv),
               params.itertuples(index=False), taps, strict=True)
    for index, name, hv_node, lv_node, in_service, feeder, vn_hv_kv, vn_lv_kv, p, tap in rows:
        node = b.equipment(b.iri("trafo", index), C["PowerTransformer"], name, feeder, in_service, (hv_node, lv_node))
        end1 = _transformer_end(b, node, 1, vn_hv_kv, p.rated_s_mva, (p.r_ohm, p.x_ohm, p.g_s, p.b_s), 0)
        end2 = _transformer_end(b, node, 2, vn_lv_kv, p.rated_s_mva, (0.0, 0.0, 0.0, 0.0), int(p.clock))
        if tap is not None:
            _tap_changer(b, node, end1 if tap["side"] == "hv" else end2, tap)


def _transformer_end(b: RdfBuilder, transformer: URIRef, number: int, rated_u_kv: float, rated_s_mva: float, rxgb, clock: int):
    end = b.node(URIRef(f"{transformer}#End{number}"), C["PowerTransformerEnd"])
    b.add((end, C["PowerTransformerEnd.PowerTransformer"], transformer))
    b.value(end, C["TransformerEnd.endNumber"], number)
    b.add((end, C["TransformerEnd.Terminal"], URIRef(f"{transformer}#T{number}")))
    b.value(end, C["PowerTransformerEnd.ratedU"], rated_u_kv)
    b.value(end, C["PowerTransformerEnd.ratedS"], rated_s_mva)
    for quantity, value in zip("rxgb", rxgb, strict=True):
        b.value(end, C[f"PowerTransformerEnd.{quantity}"], float(value))
    b.value(end, C["PowerTransformerEnd.phaseAngleClock"], clock)
    return end


def _tap_changer(b: RdfBuilder, transformer: URIRef, end: URIRef, tap: dict) -> None:
    rtc = b.node(URIRef(f"{transformer}#RatioTapChanger"), C["RatioTapChanger"])
    b.add((rtc, C["RatioTapChanger.TransformerEnd"], end))
    b.value(rtc, C["TapChanger.lowStep"], tap["low"])
    b.value(rtc, C["TapChanger.highStep"], tap["high"])
    b.value(rtc, C["TapChanger.neutralStep"], tap["neutral"])
    b.value(rtc, C["TapChanger.normalStep"], round(tap["pos"]))
    b.value(rtc, C["TapChanger.step"], tap["pos"])
    b.value(rtc, C["RatioTapChanger.stepVoltageIncrement"], tap["step_percent"])


# --- injections -----------------------------------------------------------------------------------------


def _scaled(df: pd.DataFrame, column: str) -> np.ndarray:
    return df[column].to_numpy(float) * _column(df, "scaling", 1.0).fillna(1.0).to_numpy(float)


def _injection_rows(df: pd.DataFrame, table: str, sk: Skeleton):
    _check_buses(df, table, ("bus",), sk)
    p_mw, q_mvar = _scaled(df, "p_mw"), _scaled(df, "q_mvar")
    _first_bad(df, ~np.isfinite(p_mw) | ~np.isfinite(q_mvar), table, "p_mw and q_mvar must be numbers", sk.b.grid_iri)
    return (df.index.tolist(), _names(df), [sk.bus[i] for i in df.bus.tolist()], df.in_service.astype(bool).tolist(),
            sk.feeders_of(df), _floats(p_mw), _floats(q_mvar), _strings(df, "profile"))


def write_loads(net, sk: Skeleton) -> None:
    load, b = net.load, sk.b
    voltage_dependent = sum((load[c].fillna(0.0) != 0 for c in load if c.startswith("const_") and c.endswith("_percent")),
                            start=pd.Series(False, index=load.index))
    _first_bad(load, voltage_dependent, "load", "voltage-dependent (constant impedance / current) loads are not supported", b.grid_iri)
    for index, name, bus, in_service, feeder, p_mw, q_mvar, profile in zip(*_injection_rows(load, "load", sk), strict=True):
        node = b.equipment(b.iri("load", index), C["EnergyConsumer"], name, feeder, in_service, (bus,))
        b.value(node, C["EnergyConsumer.p"], p_mw)
        b.value(node, C["EnergyConsumer.q"], q_mvar)
        b.value(node, G["profile"], profile)


def generation_unit_class(sgen_type) -> URIRef:
    """PV, wind or other, read from pandapower's / SimBench's sgen `type` ("PV", "PV_MV", "WP", "Wind_MV" …)."""
    tokens = re.split(r"[^A-Z0-9]+", sgen_type.upper()) if isinstance(sgen_type, str) else []
    if "PV" in tokens:
        return C["PhotoVoltaicUnit"]
    if "WP" in tokens or any(t.startswith("WIND") for t in tokens):
        return C["PowerElectronicsWindUnit"]
    return G["OtherGenerationUnit"]


def _power_electronics(b: RdfBuilder, iri: URIRef, row, unit_class, p_load_mw: float, q_load_mvar: float, sn_mva: float) -> URIRef:
    _, name, bus, in_service, feeder, _, _, profile = row
    node = b.equipment(iri, C["PowerElectronicsConnection"], name, feeder, in_service, (bus,))
    b.value(node, C["PowerElectronicsConnection.p"], p_load_mw)
    b.value(node, C["PowerElectronicsConnection.q"], q_load_mvar)
    b.value(node, C["PowerElectronicsConnection.ratedS"], sn_mva if sn_mva > 0 else None)
    b.value(node, G["profile"], profile)
    unit = b.node(URIRef(f"{iri}#Unit"), unit_class)
    b.add((unit, C["PowerElectronicsUnit.PowerElectronicsConnection"], node))
    return unit


def write_static_generators(net, sk: Skeleton) -> None:
    """pandapower's generator convention flips to CIM's load convention: p = -p_mw, exactly as the codec does."""
    sgen, b = net.sgen, sk.b
    units = [generation_unit_class(t) for t in _column(sgen, "type", None)]
    sn_mva = _floats(_column(sgen, "sn_mva"))
    for row, unit, sn in zip(zip(*_injection_rows(sgen, "sgen", sk), strict=True), units, sn_mva, strict=True):
        _power_electronics(b, b.iri("sgen", row[0]), row, unit, -row[5], -row[6], sn)


def write_storages(net, sk: Skeleton) -> None:
    storage, b = net.storage, sk.b
    max_e_mwh = storage.max_e_mwh.to_numpy(float)
    _first_bad(storage, ~(max_e_mwh > 0), "storage", "max_e_mwh must be greater than 0", b.grid_iri)
    stored_e_mwh = _column(storage, "soc_percent").to_numpy(float) / 100 * max_e_mwh
    sn_mva = _floats(_column(storage, "sn_mva"))
    rows = zip(zip(*_injection_rows(storage, "storage", sk), strict=True), _floats(max_e_mwh), _floats(stored_e_mwh), sn_mva, strict=True)
    for row, max_e, stored_e, sn in rows:
        unit = _power_electronics(b, b.iri("storage", row[0]), row, C["BatteryUnit"], row[5], row[6], sn)
        b.value(unit, C["BatteryUnit.ratedE"], max_e)
        b.value(unit, C["BatteryUnit.storedE"], stored_e)


def write_external_grids(net, sk: Skeleton) -> None:
    ext_grid, b = net.ext_grid, sk.b
    _check_buses(ext_grid, "ext_grid", ("bus",), sk)
    vm_target_kv = ext_grid.vm_pu.to_numpy(float) * net.bus.vn_kv.reindex(ext_grid.bus).to_numpy(float)
    _first_bad(ext_grid, ~(vm_target_kv > 0), "ext_grid", "vm_pu must be greater than 0", b.grid_iri)
    va_degree = (_column(ext_grid, "va_degree", 0.0).fillna(0.0).to_numpy(float) + 180) % 360 - 180
    rows = zip(ext_grid.index.tolist(), _names(ext_grid), ext_grid.bus.tolist(), ext_grid.in_service.astype(bool).tolist(),
               sk.feeders_of(ext_grid), _floats(vm_target_kv), _floats(va_degree), strict=True)
    for index, name, bus, in_service, feeder, target_kv, va in rows:
        node = b.equipment(b.iri("ext_grid", index), C["ExternalNetworkInjection"], name, feeder, in_service, (sk.bus[bus],))
        b.value(node, C["ExternalNetworkInjection.referencePriority"], 1)
        b.value(node, G["voltageAngleSetpoint"], va or None)
        control = b.node(URIRef(f"{node}#RegulatingControl"), C["RegulatingControl"])
        b.add((node, C["RegulatingCondEq.RegulatingControl"], control))
        b.add((control, C["RegulatingControl.mode"], C["RegulatingControlModeKind.voltage"]))
        b.add((control, C["RegulatingControl.Terminal"], URIRef(f"{node}#T1")))
        b.value(control, C["RegulatingControl.targetValue"], target_kv)


# --- entry points -------------------------------------------------------------------------------------


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: building ~10⁶ terms and triples otherwise spends 30–50 % in it, for nothing."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def net_triples(net, *, grid_iri: str, grid_name: str, owner_iri: str | None = None) -> list[tuple]:
    """The triples (rdflib terms) of a pandapower net in the gridtwin RDF form: one gt:Grid `grid_iri` and its assets.

    Raises ConversionError (naming table and row) for anything the form cannot represent.
    """
    check_tables(net)
    b = RdfBuilder(grid_iri.rstrip("/"))
    grid = b.node(URIRef(b.grid_iri), G["Grid"], grid_name)
    if owner_iri:
        b.add((grid, G["owner"], URIRef(owner_iri)))
    with gc_paused():
        sk = Skeleton(b)
        sk.write_buses(net.bus)
        other_nodes, aux = switch_nodes(net, sk)
        write_switches(net, sk, other_nodes)
        write_lines(net, sk, aux)
        write_transformers(net, sk, aux)
        write_loads(net, sk)
        write_static_generators(net, sk)
        write_storages(net, sk)
        write_external_grids(net, sk)
    return b.triples


def net_to_graph(net, *, grid_iri: str, grid_name: str, owner_iri: str | None = None) -> Graph:
    """The net as an rdflib Graph (see `net_triples`). Filling rdflib costs ~6 µs per triple: for imports,
    `net_to_document` is 3–4× faster and what validation and the codec read anyway."""
    triples = net_triples(net, grid_iri=grid_iri, grid_name=grid_name, owner_iri=owner_iri)
    graph = Graph()
    for prefix, namespace in PREFIXES.items():
        graph.bind(prefix, namespace)
    with gc_paused():
        for triple in triples:
            graph.add(triple)
    return graph


def net_to_document(net, *, grid_iri: str, grid_name: str, owner_iri: str | None = None) -> RdfDocument:
    """The net as an RdfDocument (pyoxigraph quads, see `net_triples`), without ever filling an rdflib Graph."""
    triples = net_triples(net, grid_iri=grid_iri, grid_name=grid_name, owner_iri=owner_iri)
    cache: dict = {}
    with gc_paused():
        return RdfDocument([ox.Quad(ox_term(s, cache), ox_term(p, cache), ox_term(o, cache)) for s, p, o in triples])


def simbench_net(code: str):
    """A SimBench grid from the simbench package (offline; 4–5 s of CSV reading); unknown codes are ConversionErrors."""
    import simbench

    try:
        return simbench.get_simbench_net(code)
    except Exception as exc:  # simbench raises assorted errors for unknown codes
        raise ConversionError(f"cannot load SimBench grid {code!r}: {exc}", node=code) from exc


def simbench_graph(code: str, *, base_iri: str, owner_iri: str | None = None) -> Graph:
    """A SimBench grid as an rdflib Graph; grid IRI `{base_iri}simbench/{code}`."""
    return net_to_graph(simbench_net(code), grid_iri=f"{base_iri}simbench/{code}", grid_name=f"SimBench {code}", owner_iri=owner_iri)


def simbench_document(code: str, *, base_iri: str, owner_iri: str | None = None) -> RdfDocument:
    """A SimBench grid as an RdfDocument (the fast way into `grid_import_graph`); grid IRI `{base_iri}simbench/{code}`."""
    return net_to_document(simbench_net(code), grid_iri=f"{base_iri}simbench/{code}", grid_name=f"SimBench {code}",
                           owner_iri=owner_iri)
