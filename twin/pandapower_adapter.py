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
  magnetising susceptance b ≥ 0 is inductive, b < 0 capacitive (pandapower's negative i0_percent);
  `shift_degree = 30 · phase_angle_clock` plus a linear or symmetrical phase tap changer's shift at its step; a tap changer
  sets `tap_changer_type = "Ratio"` so pandapower applies its position (SimBench nets leave it unset, and pandapower then ignores taps);
  tap tables and the other phase tap changers: see `tap_columns`;
* external grids: `vm_pu = vm_target_kv / vn_kv` of their bus;
* EV chargers are loads; storage `soc_percent` comes from stored/rated energy (NaN when the rating is unknown);
* shunt compensators, machines, three-winding transformers and equivalents: see `NetBuilder.elements`.

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
BUS_FIELDS = ("bus", "other_bus", "from_bus", "to_bus", "hv_bus", "mv_bus", "lv_bus")
TRANSFORMER_FIELDS = ("sn_mva", "vn_hv_kv", "vn_lv_kv", "r_ohm", "x_ohm", "g_s", "b_s", "r2_ohm", "x2_ohm", "g2_s", "b2_s",
                      "phase_angle_clock", "tap_side", "tap_low", "tap_high", "tap_neutral", "tap_pos", "tap_step_percent",
                      "phase_tap_side", "phase_tap_neutral", "phase_tap_pos", "phase_step_degree", "tap_table", "phase_tap_kind",
                      "phase_tap_low", "phase_tap_high", "phase_step_percent", "phase_winding_angle_degree", "phase_tap_table")


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
        found = model.objects.filter(grid=grid, retired_at__isnull=True).order_by("id").values(*fields, **expressions)
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
        **{name: rows(getattr(models, name)) for name in ELEMENT_MODELS},
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
        self.elements(tables)
        return self.net, self.index

    def elements(self, tables: dict[str, list[dict]]) -> None:
        """Shunts, machines, three-winding transformers and equivalents; the pandapower table each twin row becomes:

        * shunt compensators and equivalent shunts → `shunt` (p, q per step at vn_kv; non-linear ones through
          `shunt_characteristic_table`, the total at each step);
        * voltage-controlling synchronous machines and regulating equivalent injections → `gen` (PV buses);
          the others → `sgen` (machines) and `load` (equivalent injections, load convention);
        * asynchronous machines → `motor`; three-winding transformers → `trafo3w`; equivalent branches and series
          compensators → `impedance` (per unit on the net's sn_mva and the from bus's voltage); static VAR compensators
          holding a voltage → `gen` with P = 0 (see `generators`), the others → `load` (their q).
        """
        machines = tables.get("SynchronousMachine", [])
        injections = tables.get("EquivalentInjection", [])
        self.shunts(tables.get("ShuntCompensator", []), tables.get("EquivalentShunt", []))
        compensators = tables.get("StaticVarCompensator", [])
        holding = [r for r in compensators if r["control_enabled"] and r["control_mode"] == "voltage"]
        self.generators([r for r in machines if r["control_enabled"]], [r for r in injections if r["regulation_status"]], holding)
        self._append("load", [{**r, "p_mw": 0.0} for r in compensators if r not in holding], self.load_frame)
        self._append("sgen", [{**r, "kind": "other"} for r in machines if not r["control_enabled"]], self.sgen_frame)
        self._append("load", [r for r in injections if not r["regulation_status"]], self.load_frame)
        self.motors(tables.get("AsynchronousMachine", []))
        self.three_winding_transformers(tables.get("ThreeWindingTransformer", []))
        self.impedances(tables.get("EquivalentBranch", []))

    def _append(self, table: str, rows: list[dict], create) -> None:
        """Add rows to a table another twin model filled first, registering their IRIs too."""
        if rows:
            df = create(rows)
            self.index.elements[table].update(dict(zip(df["iri"], df.index_in_net.tolist(), strict=True)))

    def sgen_frame(self, rows: list[dict]) -> pd.DataFrame:
        df = _frame(rows, ("iri", "name", "in_service", "bus", "kind", "p_mw", "q_mvar", "profile"))
        df["index_in_net"] = np.atleast_1d(pp.create_sgens(
            self.net, self._buses(df, "bus"), p_mw=_float(df.p_mw, 0.0), q_mvar=_float(df.q_mvar, 0.0), name=df.name.tolist(),
            type="SynchronousMachine", in_service=df.in_service.astype(bool).to_numpy(), profile=df.profile.fillna("").tolist()))
        return df

    def load_frame(self, rows: list[dict]) -> pd.DataFrame:
        df = _frame(rows, ("iri", "name", "in_service", "bus", "p_mw", "q_mvar"))
        df["index_in_net"] = np.atleast_1d(pp.create_loads(
            self.net, self._buses(df, "bus"), p_mw=_float(df.p_mw, 0.0), q_mvar=_float(df.q_mvar, 0.0), name=df.name.tolist(),
            in_service=df.in_service.astype(bool).to_numpy()))
        return df

    def _vn_kv(self, buses: np.ndarray) -> np.ndarray:
        return self.net.bus.vn_kv.to_numpy(float)[buses] if len(buses) else np.zeros(0)

    def shunts(self, compensators: list[dict], equivalents: list[dict]) -> None:
        rows = [*compensators, *[{**r, "kind": "linear", "nom_u_kv": None, "sections": 1.0, "maximum_sections": 1,
                                  "b_per_section_s": r["b_s"], "g_per_section_s": r["g_s"], "points": []} for r in equivalents]]
        df = _frame(rows, ("iri", "name", "in_service", "bus", "kind", "nom_u_kv", "sections", "maximum_sections",
                           "b_per_section_s", "g_per_section_s", "points"))
        if df.empty:
            return self._register("shunt", df, [])
        buses = self._buses(df, "bus")
        vn_kv = np.where(df.nom_u_kv.notna(), _float(df.nom_u_kv), self._vn_kv(buses))
        nonlinear = (df.kind == "nonlinear").to_numpy()
        table_ids = np.where(nonlinear, np.cumsum(nonlinear) - 1, -1)
        indices = pp.create_shunts(
            self.net, buses, q_mvar=np.where(nonlinear, 0.0, -_float(df.b_per_section_s, 0.0) * vn_kv**2),
            p_mw=np.where(nonlinear, 0.0, _float(df.g_per_section_s, 0.0) * vn_kv**2), vn_kv=vn_kv,
            step=np.rint(_float(df.sections)).astype(np.int64), max_step=df.maximum_sections.astype(np.int64).to_numpy(),
            name=df.name.tolist(), in_service=df.in_service.astype(bool).to_numpy(),
            step_dependency_table=nonlinear, id_characteristic_table=[int(t) if t >= 0 else None for t in table_ids],
        )
        if nonlinear.any():
            self.net["shunt_characteristic_table"] = shunt_characteristic_table(df[nonlinear], vn_kv[nonlinear])
        self._register("shunt", df, np.atleast_1d(indices))

    def generators(self, machines: list[dict], injections: list[dict], compensators: list[dict] = ()) -> None:
        """PV buses: voltage-controlling machines, regulating equivalent injections and static VAR compensators.

        A static VAR compensator becomes a generator of P = 0 at its setpoint with reactive limits V²/X of its ratings at
        the setpoint voltage, not pandapower's `svc` element: pandapower's svc ignores its firing-angle limits in the
        Newton–Raphson (so the ratings would not bind), does not work on a bus with a generator, and is not in the twin's
        own solver, which holds PV buses within their limits as pandapower's `enforce_q_lims`. Inside its ratings both give
        the same solution (the bus at the setpoint, the compensator's Q what the grid needs); at a limit the generator
        holds that Q where a real compensator would hold its susceptance (Q falls with V²).
        """
        rows = [*machines, *[{**r, "p_mw": -r["p_mw"], "rated_s_mva": None, "reference_priority": 0} for r in injections],
                *[svc_generator_row(r) for r in compensators]]
        df = _frame(rows, ("iri", "name", "in_service", "bus", "p_mw", "vm_target_kv", "rated_s_mva", "min_q_mvar", "max_q_mvar",
                           "reference_priority", "profile"))
        if df.empty:
            return self._register("gen", df, [])
        buses = self._buses(df, "bus")
        indices = pp.create_gens(
            self.net, buses, p_mw=_float(df.p_mw, 0.0), vm_pu=_float(df.vm_target_kv) / self._vn_kv(buses), sn_mva=_float(df.rated_s_mva),
            min_q_mvar=_float(df.min_q_mvar, -math.inf), max_q_mvar=_float(df.max_q_mvar, math.inf),
            slack=(pd.to_numeric(df.reference_priority).fillna(0) > 0).to_numpy(), name=df.name.tolist(),
            in_service=df.in_service.astype(bool).to_numpy(), profile=df.profile.fillna("").tolist(),
        )
        self._register("gen", df, np.atleast_1d(indices))

    def motors(self, rows: list[dict]) -> None:
        df = _frame(rows, ("iri", "name", "in_service", "bus", "p_mw", "q_mvar", "rated_mechanical_p_mw", "efficiency_percent",
                           "rated_power_factor", "rated_u_kv", "locked_rotor_current_ratio", "locked_rotor_rx_ratio"))
        indices = []
        for row in df.itertuples(index=False):
            efficiency = row.efficiency_percent if row.efficiency_percent is not None else 100.0
            indices.append(pp.create_motor(
                self.net, self.bus_of[row.bus], pn_mech_mw=row.rated_mechanical_p_mw, cos_phi=row.p_mw / math.hypot(row.p_mw, row.q_mvar),
                efficiency_percent=efficiency, efficiency_n_percent=efficiency,
                loading_percent=row.p_mw * efficiency / row.rated_mechanical_p_mw, cos_phi_n=_or_nan(row.rated_power_factor),
                lrc_pu=_or_nan(row.locked_rotor_current_ratio), rx=_or_nan(row.locked_rotor_rx_ratio), vn_kv=row.rated_u_kv,
                name=row.name, in_service=bool(row.in_service)))
        self._register("motor", df, indices)

    def three_winding_transformers(self, rows: list[dict]) -> None:
        df = _frame(rows, ("iri", "name", "in_service", "hv_bus", "mv_bus", "lv_bus", *TRANSFORMER3W_FIELDS))
        if df.empty:
            return self._register("trafo3w", df, [])
        parameters = transformer3w_parameters(df)
        changer_type = parameters.pop("tap_changer_type")  # pandapower's create cannot take None among strings here
        indices = np.atleast_1d(pp.create_transformers3w_from_parameters(
            self.net, self._buses(df, "hv_bus"), self._buses(df, "mv_bus"), self._buses(df, "lv_bus"), name=df.name.tolist(),
            in_service=df.in_service.astype(bool).to_numpy(), **parameters))
        self.net.trafo3w["tap_changer_type"] = pd.Series(changer_type, index=indices, dtype=object)
        self._register("trafo3w", df, indices)

    def impedances(self, rows: list[dict]) -> None:
        df = _frame(rows, ("iri", "name", "in_service", "from_bus", "to_bus", "kind", "r_ohm", "x_ohm", "r21_ohm", "x21_ohm"))
        if df.empty:
            return self._register("impedance", df, [])
        from_buses = self._buses(df, "from_bus")
        sn_mva = self.net.sn_mva
        z_base_ohm = self._vn_kv(from_buses) ** 2 / sn_mva
        r_ohm, x_ohm = _float(df.r_ohm), _float(df.x_ohm)
        r21_ohm, x21_ohm = np.where(df.r21_ohm.isna(), r_ohm, _float(df.r21_ohm)), np.where(df.x21_ohm.isna(), x_ohm, _float(df.x21_ohm))
        indices = pp.create_impedances(
            self.net, from_buses, self._buses(df, "to_bus"), rft_pu=r_ohm / z_base_ohm, xft_pu=x_ohm / z_base_ohm,
            rtf_pu=r21_ohm / z_base_ohm, xtf_pu=x21_ohm / z_base_ohm, sn_mva=sn_mva,
            name=df.name.tolist(), in_service=df.in_service.astype(bool).to_numpy())
        self._register("impedance", df, np.atleast_1d(indices))

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
        parameters = transformer_parameters(df)
        indices = pp.create_transformers_from_parameters(
            self.net, self._buses(df, "hv_bus"), self._buses(df, "lv_bus"), name=df.name.tolist(),
            in_service=df.in_service.astype(bool).to_numpy(), **parameters,
        )
        characteristic = tap_columns(df, self.net.trafo, parameters["vk_percent"], parameters["vkr_percent"])
        if characteristic is not None:
            self.net["trafo_characteristic_table"] = characteristic
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


def svc_generator_row(row: dict) -> dict:
    """A static VAR compensator as a generator row: P = 0, produced Q within −V²/|X_inductive| … V²/X_capacitive at the setpoint."""
    v_kv = row["vm_target_kv"]
    return {**row, "p_mw": 0.0, "rated_s_mva": None, "reference_priority": 0, "profile": "",
            "min_q_mvar": v_kv**2 / row["inductive_rating_ohm"], "max_q_mvar": v_kv**2 / row["capacitive_rating_ohm"]}


def _or_nan(value) -> float:
    return math.nan if value is None else float(value)


def shunt_characteristic_table(df: pd.DataFrame, vn_kv: np.ndarray) -> pd.DataFrame:
    """pandapower's step table of non-linear shunts: per shunt (ids 0, 1 … in row order) and step, the total p and q at
    vn_kv, the sums of the CIM points 1 … step (b positive capacitive, so q = −b·vn²)."""
    rows = []
    for number, (points, vn) in enumerate(zip(df.points, vn_kv.tolist(), strict=True)):
        b_s = g_s = 0.0
        for point in sorted(points, key=lambda p: p["section"]):
            b_s, g_s = b_s + point["b_s"], g_s + point["g_s"]
            rows.append({"id_characteristic": number, "step": int(point["section"]), "q_mvar": -b_s * vn**2, "p_mw": g_s * vn**2})
    return pd.DataFrame(rows, columns=["id_characteristic", "step", "q_mvar", "p_mw"])


def _phase_kind(df: pd.DataFrame) -> np.ndarray:
    """The kind of each transformer's phase tap changer, "" where it has none."""
    if "phase_tap_side" not in df:
        return np.full(len(df), "", dtype=object)
    kind = df.phase_tap_kind.fillna("linear").replace("", "linear") if "phase_tap_kind" in df else pd.Series("linear", index=df.index)
    return np.where(df.phase_tap_side.isin(["hv", "lv"]).to_numpy(), kind.to_numpy(object), "")


def phase_tap_shift_degree(df: pd.DataFrame) -> np.ndarray:
    """The shift of a linear or symmetrical phase tap changer at its step, folded into pandapower's shift_degree (which it
    adds to the clock's, as pandapower's "Ideal" tap changer would: + on the hv side, − on the lv side).

    Symmetrical (IEC 61970-301): 2·atan(n·du/2) with ratio 1 — pandapower's "Ideal" changer by percent shifts 2·asin(n·du/2)
    and its "Symmetrical" one changes the ratio too, so neither is CIM's; the shift is exact at the step it stands at.
    """
    kind = _phase_kind(df)
    if not kind.any():
        return np.zeros(len(df))
    direction = np.select([df.phase_tap_side == "hv", df.phase_tap_side == "lv"], [1.0, -1.0], 0.0)
    steps = _float(df.phase_tap_pos, 0.0) - _float(df.phase_tap_neutral, 0.0)
    linear = steps * _float(df.phase_step_degree, 0.0)
    symmetrical = np.degrees(2 * np.arctan(steps * _float(df.phase_step_percent, 0.0) / 200))
    return direction * np.select([kind == "linear", kind == "symmetrical"], [linear, symmetrical], 0.0)


def shift_degree(df: pd.DataFrame) -> np.ndarray:
    """30° · clock, plus a phase tap changer's shift; with one, in (−180°, 180°] as MATPOWER writes phase shifters —
    pandapower's DC start takes the angle as it stands, and 343.4° is not −16.6° to it."""
    clock = _float(df.phase_angle_clock, 0.0) * 30
    phase = phase_tap_shift_degree(df)
    return np.where(phase != 0, 180 - (180 - (clock + phase)) % 360, clock)


def transformer_parameters(df: pd.DataFrame) -> dict:
    """pandapower's short-circuit / no-load parameters from the twin's end impedances (inverse of the converter).

    Series r, x of end 2 are referred to the HV side with (vn_hv/vn_lv)², shunt g, b with its inverse.
    """
    sn_mva, vn_hv_kv, vn_lv_kv = _float(df.sn_mva), _float(df.vn_hv_kv), _float(df.vn_lv_kv)
    ratio_squared = (vn_hv_kv / vn_lv_kv) ** 2
    r_ohm = _float(df.r_ohm, 0.0) + _float(df.r2_ohm, 0.0) * ratio_squared
    x_ohm = _float(df.x_ohm, 0.0) + _float(df.x2_ohm, 0.0) * ratio_squared
    g_s = _float(df.g_s, 0.0) + _float(df.g2_s, 0.0) / ratio_squared
    b_s = _float(df.b_s, 0.0) + _float(df.b2_s, 0.0) / ratio_squared  # positive inductive, negative capacitive (pandapower's i0 sign)
    z_base_ohm = vn_hv_kv**2 / sn_mva
    has_tap = df.tap_side.isin(["hv", "lv"]).to_numpy()
    return {
        "sn_mva": sn_mva,
        "vn_hv_kv": vn_hv_kv,
        "vn_lv_kv": vn_lv_kv,
        "vk_percent": np.where(x_ohm < 0, -1.0, 1.0) * np.hypot(r_ohm, x_ohm) / z_base_ohm * 100,  # pandapower: sign(vk) is x's
        "vkr_percent": r_ohm / z_base_ohm * 100,
        "pfe_kw": g_s * vn_hv_kv**2 * 1000,
        "i0_percent": np.where(b_s < 0, -1.0, 1.0) * np.hypot(g_s, b_s) * vn_hv_kv**2 / sn_mva * 100,
        "shift_degree": shift_degree(df),
        **ratio_tap_parameters(df, has_tap),
    }


def tap_columns(df: pd.DataFrame, trafo: pd.DataFrame, vk_percent: np.ndarray, vkr_percent: np.ndarray) -> pd.DataFrame | None:
    """Tap tables and the phase tap changers pandapower applies itself; sets columns of `trafo` (the net's rows of `df`) and
    returns pandapower's `trafo_characteristic_table` (None when no transformer has a table).

    * a tabular ratio tap changer: tap 1 with `tap_dependency_table` and a characteristic of voltage_ratio, vk_percent,
      vkr_percent per step (r, x of each point: the transformer's times 1 + deviation/100; angle 0);
    * a tabular phase tap changer: tap 1 "Tabular" with its characteristic (angle_deg too); a ratio tap changer beside it
      moves to tap 2 ("Ratio");
    * an asymmetrical phase tap changer: tap 2 "Ratio" with tap2_step_percent = voltageStepIncrement and tap2_step_degree =
      windingConnectionAngle — pandapower's formula, u·(1 + n·du·e^jθ), is IEC 61970-301's, exact at every step.
    """
    kind = _phase_kind(df)
    ratio_tables = df.tap_table.apply(lambda t: bool(t)).to_numpy() if "tap_table" in df else np.zeros(len(df), bool)
    phase_tables = kind == "tabular"
    characteristic, tables = [], ratio_tables | phase_tables
    x_percent = np.sign(vk_percent) * np.sqrt(np.maximum(vk_percent**2 - vkr_percent**2, 0.0))
    ids = np.full(len(df), -1)
    for number, position in enumerate(np.flatnonzero(tables)):
        ids[position] = number
        points = df.phase_tap_table.iloc[position] if phase_tables[position] else df.tap_table.iloc[position]
        for point in points:
            vkr = vkr_percent[position] * (1 + point["r_percent"] / 100)
            x = x_percent[position] * (1 + point["x_percent"] / 100)
            characteristic.append({"id_characteristic": int(ids[position]), "step": int(point["step"]), "voltage_ratio": point["ratio"],
                                   "angle_deg": point.get("angle_degree", 0.0), "vk_percent": np.sign(x or 1.0) * math.hypot(vkr, x),
                                   "vkr_percent": vkr})
    index = trafo.index
    if phase_tables.any():
        moved = phase_tables & df.tap_side.isin(["hv", "lv"]).to_numpy()
        _set_tap2(trafo, index[moved], df[moved], "tap", ratio=True)
        rows = index[phase_tables]
        trafo.loc[rows, "tap_side"] = df.phase_tap_side.to_numpy()[phase_tables]
        for ours, theirs in (("low", "min"), ("high", "max"), ("neutral", "neutral"), ("pos", "pos")):
            trafo.loc[rows, f"tap_{theirs}"] = _float(df[f"phase_tap_{ours}"])[phase_tables]
        trafo.loc[rows, ["tap_step_percent", "tap_step_degree"]] = np.nan
        trafo.loc[rows, "tap_changer_type"] = "Tabular"
    asymmetrical = kind == "asymmetrical"
    if asymmetrical.any():
        _set_tap2(trafo, index[asymmetrical], df[asymmetrical], "phase_tap", ratio=False)
    if not tables.any():
        return None
    trafo["tap_dependency_table"] = tables
    trafo["id_characteristic_table"] = pd.array([int(i) if i >= 0 else None for i in ids], dtype="Int64")
    return pd.DataFrame(characteristic, columns=["id_characteristic", "step", "voltage_ratio", "angle_deg", "vk_percent", "vkr_percent"])


def _set_tap2(trafo: pd.DataFrame, rows, df: pd.DataFrame, prefix: str, *, ratio: bool) -> None:
    """pandapower's second tap changer (tap2_*) from the twin's ratio (`prefix` "tap") or asymmetrical phase tap changer."""
    side = df.tap_side if ratio else df.phase_tap_side
    for column in ("tap2_side", "tap2_changer_type"):
        if column not in trafo:
            trafo[column] = pd.Series(None, index=trafo.index, dtype=object)
    trafo.loc[rows, "tap2_side"] = side.to_numpy()
    trafo.loc[rows, "tap2_changer_type"] = "Ratio"
    for ours, theirs in (("low", "min"), ("high", "max"), ("neutral", "neutral"), ("pos", "pos")):
        trafo.loc[rows, f"tap2_{theirs}"] = _float(df[f"{prefix}_{ours}"])
    trafo.loc[rows, "tap2_step_percent"] = _float(df.tap_step_percent if ratio else df.phase_step_percent)
    trafo.loc[rows, "tap2_step_degree"] = 0.0 if ratio else _float(df.phase_winding_angle_degree)


def ratio_tap_parameters(df: pd.DataFrame, has_tap: np.ndarray) -> dict:
    """pandapower's tap columns of a ratio tap changer (`tap_changer_type` "Ratio" so pandapower applies it)."""
    return {
        "tap_side": [side if tap else None for side, tap in zip(df.tap_side, has_tap, strict=True)],
        "tap_neutral": _float(df.tap_neutral),
        "tap_min": _float(df.tap_low),
        "tap_max": _float(df.tap_high),
        "tap_pos": _float(df.tap_pos),
        "tap_step_percent": _float(df.tap_step_percent),
        "tap_step_degree": np.where(has_tap, 0.0, np.nan),
        "tap_changer_type": ["Ratio" if tap else None for tap in has_tap],
    }


TRANSFORMER3W_FIELDS = ("sn_hv_mva", "sn_mv_mva", "sn_lv_mva", "vn_hv_kv", "vn_mv_kv", "vn_lv_kv", "r_ohm", "x_ohm", "r2_ohm", "x2_ohm",
                        "r3_ohm", "x3_ohm", "g_s", "b_s", "phase_angle_clock2", "phase_angle_clock3", "tap_side", "tap_low", "tap_high",
                        "tap_neutral", "tap_pos", "tap_step_percent")
ELEMENT_MODELS = ("ShuntCompensator", "SynchronousMachine", "AsynchronousMachine", "ThreeWindingTransformer", "EquivalentBranch",
                  "EquivalentInjection", "EquivalentShunt", "StaticVarCompensator")


def star_to_pairs(star_percent: np.ndarray, sn_mva: np.ndarray) -> np.ndarray:
    """Pairwise (hv–mv, mv–lv, hv–lv) short-circuit voltages, each on the smaller rating of its pair, from the star values
    of the windings (each on its own rating): the inverse of pandapower's `wye_delta_vector` ∘ `z_br_to_bus_vector`."""
    combos = 2 * star_percent * sn_mva[0] / sn_mva  # what wye_delta_vector halves and scales
    delta = np.array([(combos[0] + combos[1]) / 2, (combos[1] + combos[2]) / 2, (combos[0] + combos[2]) / 2])
    pair_sn = np.array([np.minimum(sn_mva[0], sn_mva[1]), np.minimum(sn_mva[1], sn_mva[2]), np.minimum(sn_mva[0], sn_mva[2])])
    return delta * pair_sn / sn_mva[0]


def transformer3w_parameters(df: pd.DataFrame) -> dict:
    """pandapower's trafo3w parameters from the twin's star-equivalent end impedances (inverse of the converter).

    Each end's r, x (ohm at its own rated voltage) become percent on its own rating; the star values turn into the three
    pairwise vk/vkr pandapower takes, resistive and reactive parts separately as pandapower combines them.
    """
    sides = ("hv", "mv", "lv")
    sn_mva = np.array([_float(df[f"sn_{s}_mva"]) for s in sides])
    vn_kv = np.array([_float(df[f"vn_{s}_kv"]) for s in sides])
    to_percent = sn_mva / vn_kv**2 * 100
    r_star = np.array([_float(df[f"r{x}_ohm"], 0.0) for x in ("", "2", "3")]) * to_percent
    x_star = np.array([_float(df[f"x{x}_ohm"], 0.0) for x in ("", "2", "3")]) * to_percent
    vkr_pairs = star_to_pairs(r_star, sn_mva)
    vk_pairs = np.hypot(vkr_pairs, star_to_pairs(x_star, sn_mva))
    g_s, b_s = _float(df.g_s, 0.0), np.abs(_float(df.b_s, 0.0))
    has_tap = df.tap_side.isin(sides).to_numpy()
    parameters = {f"{name}_{side}_{unit}": values[i] for i, side in enumerate(sides)
                  for name, unit, values in (("sn", "mva", sn_mva), ("vn", "kv", vn_kv), ("vk", "percent", vk_pairs),
                                             ("vkr", "percent", vkr_pairs))}
    return {
        **parameters,
        "pfe_kw": g_s * vn_kv[0] ** 2 * 1000,
        "i0_percent": np.hypot(g_s, b_s) * vn_kv[0] ** 2 / sn_mva[0] * 100,
        "shift_mv_degree": _float(df.phase_angle_clock2, 0.0) * 30,
        "shift_lv_degree": _float(df.phase_angle_clock3, 0.0) * 30,
        **ratio_tap_parameters(df, has_tap),
        "tap_at_star_point": np.zeros(len(df), dtype=bool),
    }
