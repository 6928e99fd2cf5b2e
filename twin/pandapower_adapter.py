"""The twin as a pandapower net: the single place that turns stored grids into something a solver runs.

`grid_to_net` reads a stored grid with a handful of `.values()` queries; `rows_to_net` does the same
from `twin.rdf_codec.graph_to_rows` output, so a graph can be solved without the database. Both
invert the conventions of `ontology.converters.pandapower_net` exactly:

* buses: vn_kv from the base voltage; every switch is a bus–bus switch (open when open or out of
  service), which is how switches on branch ends arrive (through an auxiliary node);
* lines: per-km values are the stored totals divided by the length; `parallel = df = 1`, so
  `max_i_ka` is the stored rated current;
* transformers: both ends' impedances referred to the HV side and turned back into
  `vk_percent`, `vkr_percent`, `pfe_kw`, `i0_percent` on `sn_mva` = stored rated power;
  magnetising susceptance is taken as a magnitude (pandapower models it inductive);
  `shift_degree = 30 · phase_angle_clock`; a tap changer sets `tap_changer_type = "Ratio"` so
  pandapower applies its position (SimBench nets leave it unset, and pandapower then ignores taps);
* external grids: `vm_pu = vm_target_kv / vn_kv` of their bus;
* EV chargers are loads; storage `soc_percent` comes from stored/rated energy.

`NetIndex` maps IRIs to pandapower indices so results can be written back to the twin.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandapower as pp
import pandas as pd
from django.db.models import F

from twin import models

SWITCH_TYPES = {"breaker": "CB", "load_break_switch": "LBS", "disconnector": "DS", "fuse": "fuse", "switch": None}
SGEN_TYPES = {"pv": "PV", "wind": "WP", "other": "other"}
BUS_FIELDS = ("bus", "other_bus", "from_bus", "to_bus", "hv_bus", "lv_bus")
TRANSFORMER_FIELDS = ("sn_mva", "vn_hv_kv", "vn_lv_kv", "r_ohm", "x_ohm", "g_s", "b_s", "r2_ohm", "x2_ohm", "g2_s", "b2_s",
                      "phase_angle_clock", "tap_side", "tap_low", "tap_high", "tap_neutral", "tap_pos", "tap_step_percent")


@dataclass
class NetIndex:
    """Where twin objects went in the net: bus IRI → bus index, and per pandapower table asset IRI → row index."""

    bus: dict[str, int] = field(default_factory=dict)
    elements: dict[str, dict[str, int]] = field(default_factory=dict)

    def __getitem__(self, table: str) -> dict[str, int]:
        """IRI → index for one pandapower table: `index["bus"]`, `index["line"]` …"""
        return self.bus if table == "bus" else self.elements[table]

    def element(self, iri: str) -> tuple[str, int] | None:
        """(pandapower table, index) of an asset IRI, or None if it has no element in the net (e.g. a meter)."""
        for table, indices in self.elements.items():
            if iri in indices:
                return table, indices[iri]
        return None


# --- reading the twin -----------------------------------------------------------------------------


def grid_to_net(grid: models.Grid) -> tuple[pp.pandapowerNet, NetIndex]:
    """Build the pandapower net of a stored grid (f = 50 Hz, sn_mva = 1) and the IRI → index maps."""
    def rows(model, *fields, **expressions) -> list[dict]:
        found = model.objects.filter(grid=grid).order_by("id").values(*fields, **expressions)
        return [{k.removesuffix("_id") if k.removesuffix("_id") in BUS_FIELDS else k: v for k, v in row.items()} for row in found]

    common = ("iri", "name", "in_service")
    tables = {
        "Bus": rows(models.Bus, "id", "iri", "name", "lon_degree", "lat_degree", vn_kv=F("base_voltage__nominal_voltage_kv")),
        "ExternalGrid": rows(models.ExternalGrid, *common, "bus_id", "vm_target_kv", "va_degree"),
        "Line": rows(models.Line, *common, "from_bus_id", "to_bus_id", "length_km", "r_ohm", "x_ohm", "b_s", "g_s", "max_i_ka"),
        "Transformer": rows(models.Transformer, *common, "hv_bus_id", "lv_bus_id", *TRANSFORMER_FIELDS),
        "Switch": rows(models.Switch, *common, "bus_id", "other_bus_id", "kind", "open"),
        "Load": rows(models.Load, *common, "bus_id", "p_mw", "q_mvar", "profile"),
        "EVCharger": rows(models.EVCharger, *common, "bus_id", "p_mw", "q_mvar", "profile"),
        "StaticGenerator": rows(models.StaticGenerator, *common, "bus_id", "kind", "p_mw", "q_mvar", "sn_mva", "profile"),
        "Storage": rows(models.Storage, *common, "bus_id", "p_mw", "q_mvar", "sn_mva", "max_e_mwh", "stored_e_mwh", "profile"),
    }
    for bus in tables["Bus"]:
        bus["key"] = bus.pop("id")
    return NetBuilder(grid.name).build(tables)


def rows_to_net(grid_rows, *, name: str = "") -> tuple[pp.pandapowerNet, NetIndex]:
    """Build the net from `twin.rdf_codec.graph_to_rows` output (references are IRIs) — no database involved."""
    voltages = {row["iri"]: row["nominal_voltage_kv"] for row in grid_rows.rows["BaseVoltage"]}
    tables = dict(grid_rows.rows)
    tables["Bus"] = [{**row, "key": row["iri"], "vn_kv": voltages[row["base_voltage"]]} for row in grid_rows.rows["Bus"]]
    return NetBuilder(name or grid_rows.grid.get("name", "")).build(tables)



# --- building the net -----------------------------------------------------------------------------


def _frame(rows: list[dict], columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows, columns=list(columns)) if rows else pd.DataFrame(columns=list(columns))


def _float(series: pd.Series, default: float = math.nan) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").fillna(default).to_numpy(float)


class NetBuilder:
    """Fills an empty pandapower net table by table from row dicts (bus references are keys of the bus rows)."""

    def __init__(self, name: str):
        self.net = pp.create_empty_network(name=name, f_hz=50.0, sn_mva=1.0)
        self.index = NetIndex()
        self.bus_of: dict = {}

    def build(self, tables: dict[str, list[dict]]) -> tuple[pp.pandapowerNet, NetIndex]:
        self.buses(tables["Bus"])
        self.external_grids(tables.get("ExternalGrid", []))
        self.lines(tables.get("Line", []))
        self.transformers(tables.get("Transformer", []))
        self.switches(tables.get("Switch", []))
        self.loads([*tables.get("Load", []), *tables.get("EVCharger", [])])
        self.static_generators(tables.get("StaticGenerator", []))
        self.storages(tables.get("Storage", []))
        return self.net, self.index

    def _buses(self, df: pd.DataFrame, column: str) -> np.ndarray:
        return np.fromiter((self.bus_of[key] for key in df[column]), dtype=np.int64, count=len(df))

    def _register(self, table: str, df: pd.DataFrame, indices) -> None:
        self.index.elements[table] = dict(zip(df["iri"], np.asarray(indices, dtype=np.int64).tolist(), strict=True))

    def buses(self, rows: list[dict]) -> None:
        df = _frame(rows, ("key", "iri", "name", "vn_kv", "lon_degree", "lat_degree"))
        indices = pp.create_buses(self.net, len(df), vn_kv=_float(df.vn_kv), name=df.name.fillna("").tolist()) if len(df) else []
        self.bus_of = dict(zip(df.key, np.asarray(indices).tolist(), strict=True))
        self.index.bus = dict(zip(df.iri, np.asarray(indices).tolist(), strict=True))
        lon, lat = _float(df.lon_degree), _float(df.lat_degree)
        if len(df):
            self.net.bus["geo"] = [
                json.dumps({"type": "Point", "coordinates": [x, y]}) if np.isfinite(x) and np.isfinite(y) else None
                for x, y in zip(lon.tolist(), lat.tolist(), strict=True)
            ]

    def external_grids(self, rows: list[dict]) -> None:
        df = _frame(rows, ("iri", "name", "in_service", "bus", "vm_target_kv", "va_degree"))
        vn_kv = self.net.bus.vn_kv.to_numpy(float)
        indices = [
            pp.create_ext_grid(self.net, bus, vm_pu=vm_kv / vn_kv[bus], va_degree=va, name=name, in_service=bool(in_service))
            for bus, vm_kv, va, name, in_service in zip(self._buses(df, "bus"), _float(df.vm_target_kv), _float(df.va_degree, 0.0),
                                                         df.name, df.in_service, strict=True)
        ]
        self._register("ext_grid", df, indices)

    def lines(self, rows: list[dict]) -> None:
        df = _frame(rows, ("iri", "name", "in_service", "from_bus", "to_bus", "length_km", "r_ohm", "x_ohm", "b_s", "g_s", "max_i_ka"))
        if df.empty:
            return self._register("line", df, [])
        length_km = _float(df.length_km)
        length_km = np.where(length_km > 0, length_km, 1.0)
        omega = 2 * math.pi * self.net.f_hz
        indices = pp.create_lines_from_parameters(
            self.net, self._buses(df, "from_bus"), self._buses(df, "to_bus"), length_km=length_km,
            r_ohm_per_km=_float(df.r_ohm) / length_km, x_ohm_per_km=_float(df.x_ohm) / length_km,
            c_nf_per_km=_float(df.b_s, 0.0) / (omega * length_km) * 1e9, g_us_per_km=_float(df.g_s, 0.0) / length_km * 1e6,
            max_i_ka=_float(df.max_i_ka), name=df.name.tolist(), in_service=df.in_service.astype(bool).to_numpy(),
        )
        self._register("line", df, indices)

    def transformers(self, rows: list[dict]) -> None:
        df = _frame(rows, ("iri", "name", "in_service", "hv_bus", "lv_bus", *TRANSFORMER_FIELDS))
        if df.empty:
            return self._register("trafo", df, [])
        indices = pp.create_transformers_from_parameters(
            self.net, self._buses(df, "hv_bus"), self._buses(df, "lv_bus"), name=df.name.tolist(),
            in_service=df.in_service.astype(bool).to_numpy(), **transformer_parameters(df),
        )
        self._register("trafo", df, indices)

    def switches(self, rows: list[dict]) -> None:
        df = _frame(rows, ("iri", "name", "in_service", "bus", "other_bus", "kind", "open"))
        if df.empty:
            return self._register("switch", df, [])
        closed = ~df.open.astype(bool).to_numpy() & df.in_service.astype(bool).to_numpy()
        indices = pp.create_switches(self.net, self._buses(df, "bus"), self._buses(df, "other_bus"), et="b", closed=closed,
                                     type=[SWITCH_TYPES.get(kind) for kind in df.kind], name=df.name.tolist())
        self._register("switch", df, np.atleast_1d(indices))

    def loads(self, rows: list[dict]) -> None:
        df = _frame(rows, ("iri", "name", "in_service", "bus", "p_mw", "q_mvar", "profile"))
        if df.empty:
            return self._register("load", df, [])
        indices = pp.create_loads(self.net, self._buses(df, "bus"), p_mw=_float(df.p_mw, 0.0), q_mvar=_float(df.q_mvar, 0.0),
                                  name=df.name.tolist(), in_service=df.in_service.astype(bool).to_numpy(),
                                  profile=df.profile.fillna("").tolist())
        self._register("load", df, indices)

    def static_generators(self, rows: list[dict]) -> None:
        df = _frame(rows, ("iri", "name", "in_service", "bus", "kind", "p_mw", "q_mvar", "sn_mva", "profile"))
        if df.empty:
            return self._register("sgen", df, [])
        indices = pp.create_sgens(self.net, self._buses(df, "bus"), p_mw=_float(df.p_mw, 0.0), q_mvar=_float(df.q_mvar, 0.0),
                                  sn_mva=_float(df.sn_mva), name=df.name.tolist(), type=[SGEN_TYPES.get(k) for k in df.kind],
                                  in_service=df.in_service.astype(bool).to_numpy(), profile=df.profile.fillna("").tolist())
        self._register("sgen", df, indices)

    def storages(self, rows: list[dict]) -> None:
        df = _frame(rows, ("iri", "name", "in_service", "bus", "p_mw", "q_mvar", "sn_mva", "max_e_mwh", "stored_e_mwh", "profile"))
        if df.empty:
            return self._register("storage", df, [])
        max_e_mwh = _float(df.max_e_mwh)
        indices = pp.create_storages(self.net, self._buses(df, "bus"), p_mw=_float(df.p_mw, 0.0), max_e_mwh=max_e_mwh,
                                     q_mvar=_float(df.q_mvar, 0.0), sn_mva=_float(df.sn_mva),
                                     soc_percent=_float(df.stored_e_mwh) / max_e_mwh * 100, name=df.name.tolist(),
                                     in_service=df.in_service.astype(bool).to_numpy(), profile=df.profile.fillna("").tolist())
        self._register("storage", df, indices)


def transformer_parameters(df: pd.DataFrame) -> dict:
    """pandapower's short-circuit / no-load parameters from the twin's end impedances (inverse of the converter).

    Series r, x of end 2 are referred to the HV side with (vn_hv/vn_lv)², shunt g, b with its inverse.
    """
    sn_mva, vn_hv_kv, vn_lv_kv = _float(df.sn_mva), _float(df.vn_hv_kv), _float(df.vn_lv_kv)
    ratio_squared = (vn_hv_kv / vn_lv_kv) ** 2
    r_ohm = _float(df.r_ohm, 0.0) + _float(df.r2_ohm, 0.0) * ratio_squared
    x_ohm = _float(df.x_ohm, 0.0) + _float(df.x2_ohm, 0.0) * ratio_squared
    g_s = _float(df.g_s, 0.0) + _float(df.g2_s, 0.0) / ratio_squared
    b_s = np.abs(_float(df.b_s, 0.0) + _float(df.b2_s, 0.0) / ratio_squared)
    z_base_ohm = vn_hv_kv**2 / sn_mva
    has_tap = df.tap_side.isin(["hv", "lv"]).to_numpy()
    return {
        "sn_mva": sn_mva,
        "vn_hv_kv": vn_hv_kv,
        "vn_lv_kv": vn_lv_kv,
        "vk_percent": np.hypot(r_ohm, x_ohm) / z_base_ohm * 100,
        "vkr_percent": r_ohm / z_base_ohm * 100,
        "pfe_kw": g_s * vn_hv_kv**2 * 1000,
        "i0_percent": np.hypot(g_s, b_s) * vn_hv_kv**2 / sn_mva * 100,
        "shift_degree": _float(df.phase_angle_clock, 0.0) * 30,
        "tap_side": [side if tap else None for side, tap in zip(df.tap_side, has_tap, strict=True)],
        "tap_neutral": _float(df.tap_neutral),
        "tap_min": _float(df.tap_low),
        "tap_max": _float(df.tap_high),
        "tap_pos": _float(df.tap_pos),
        "tap_step_percent": _float(df.tap_step_percent),
        "tap_step_degree": np.where(has_tap, 0.0, np.nan),
        "tap_changer_type": ["Ratio" if tap else None for tap in has_tap],
    }
