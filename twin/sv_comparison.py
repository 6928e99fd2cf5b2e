"""Compare the twin's load flow with a solved state (CGMES SV profile) kept on its buses.

`compare_with_sv` solves the grid either through the twin's own snapshot solver (`twin.loadflow`, as a
snapshot run solves it: declared powers, PV buses, reactive limits) or through pandapower's `runpp` on the
net the adapter builds, and gives the deviation of every bus that has an SV voltage. Angles are compared
relative to the reference bus (the slack's bus: a slack machine is solved at 0°, while the SV profile
states the angle its own solver fixed there), and without the transformers' vector-group clocks when the SV leaves
them out (`_clock_offsets`). `sv_residual` gives the power the SV state itself leaves unbalanced per bus in the twin's
net: where it is large, a bus departing from the SV is the SV's doing, not the twin's.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import pandapower as pp
from scipy.sparse.linalg import spsolve

from twin.models import Bus, Grid
from twin.pandapower_adapter import grid_to_net


@dataclass
class SvComparison:
    """Per bus with an SV voltage: the twin's deviation from it (vm in pu of the bus's nominal voltage, va in degrees)."""

    bus_iris: list[str]
    bus_names: list[str]
    dvm_pu: np.ndarray
    dva_degree: np.ndarray

    @property
    def max_dvm_pu(self) -> float:
        return float(np.abs(self.dvm_pu).max())

    @property
    def max_dva_degree(self) -> float:
        return float(np.abs(self.dva_degree).max())

    def worst(self, count: int = 3, *, above_pu: float = 0.0) -> list[tuple[str, float, float]]:
        """(bus name, Δvm pu, Δva °) of the `count` buses deviating most in magnitude (only those above `above_pu`)."""
        order = np.argsort(-np.abs(self.dvm_pu))[:count]
        return [(self.bus_names[i], float(self.dvm_pu[i]), float(self.dva_degree[i])) for i in order if abs(self.dvm_pu[i]) > above_pu]


def _reference_bus(net) -> int | None:
    """The net bus the angles are referred to: the first in-service ext_grid's, else the first slack gen's."""
    ext_grid = net.ext_grid[net.ext_grid.in_service]
    if len(ext_grid):
        return int(ext_grid.bus.iloc[0])
    slack_gens = net.gen[net.gen.in_service & net.gen.slack] if "slack" in net.gen else net.gen.iloc[:0]
    return int(slack_gens.bus.iloc[0]) if len(slack_gens) else None


def _solve_twin(grid: Grid, net, index) -> tuple[np.ndarray, np.ndarray]:
    """vm_pu, va_degree per net bus from the twin's snapshot solver (a snapshot run, solved without storing results)."""
    from twin.loadflow.services import loadflow_run_create, snapshot_results

    run = loadflow_run_create(grid=grid, trigger="command")
    _, layout, _, results = snapshot_results(run)
    run.delete()
    vm, va = np.full(len(net.bus), np.nan), np.full(len(net.bus), np.nan)
    positions = [index["bus"][iri] for iri in layout["bus"]]
    vm[positions], va[positions] = results.vm_pu[0], results.va_degree[0]
    return vm, va


def _solve_pandapower(net) -> tuple[np.ndarray, np.ndarray]:
    pp.runpp(net, calculate_voltage_angles=True, enforce_q_lims=True, lightsim2grid=False)
    return net.res_bus.vm_pu.to_numpy(float), net.res_bus.va_degree.to_numpy(float)


def compare_with_sv(grid: Grid, *, solver: str = "twin") -> SvComparison | None:
    """The twin's load flow (`solver` "twin" or "pandapower") against the stored SV voltages; None without any."""
    buses = list(Bus.objects.filter(grid=grid).exclude(sv_v_kv=None).select_related("base_voltage").order_by("id"))
    if not buses:
        return None
    net, index = grid_to_net(grid)
    vm, va = _solve_twin(grid, net, index) if solver == "twin" else _solve_pandapower(net)
    positions = np.array([index["bus"][bus.iri] for bus in buses])
    dvm = vm[positions] - np.array([b.sv_v_kv / b.vn_kv for b in buses])
    sv_va = np.array([b.sv_angle_degree or 0.0 for b in buses])
    reference = _reference_bus(net)
    if reference is not None:
        sv_va = sv_va + _clock_offsets(grid, net, index, reference, positions, sv_va)
    dva = (va[positions] - sv_va + 180.0) % 360.0 - 180.0
    if reference is not None and reference in set(positions.tolist()):
        dva = dva - dva[positions.tolist().index(reference)]
    return SvComparison([b.iri for b in buses], [b.name or b.iri for b in buses], dvm, dva)


def sv_residual(grid: Grid) -> dict[str, tuple[float, float]]:
    """Bus name → (ΔP MW, ΔQ Mvar) the SV state itself leaves unbalanced in the twin's net (pandapower's Ybus and Sbus at
    the SV voltages, clocks as `compare_with_sv` takes them): how far the SV is from being a load-flow solution of the model
    the twin holds. ΔQ of PV buses and both of the slack are free (0); buses without an SV voltage (star points) are solved
    linearly from their neighbours. Explains buses where the twin's solution departs from the SV."""
    from pandapower.pypower.idx_bus import BUS_TYPE, NONE, PV, REF

    buses = list(Bus.objects.filter(grid=grid).exclude(sv_v_kv=None).select_related("base_voltage").order_by("id"))
    net, index = grid_to_net(grid)
    with contextlib.suppress(pp.LoadflowNotConverged):  # one iteration only builds Ybus and Sbus
        pp.runpp(net, max_iteration=1, calculate_voltage_angles=True, lightsim2grid=False)
    internal, ppc_bus = net._ppc["internal"], net._ppc["bus"]
    energised = ppc_bus[:, BUS_TYPE] != NONE
    ppci_of = np.where(energised, np.cumsum(energised) - 1, -1)[net._pd2ppc_lookups["bus"]]
    positions = np.array([index["bus"][bus.iri] for bus in buses])
    sv_va = np.array([b.sv_angle_degree or 0.0 for b in buses])
    reference = _reference_bus(net)
    if reference is not None:
        sv_va = sv_va + _clock_offsets(grid, net, index, reference, positions, sv_va)
    ybus, sbus = internal["Ybus"].tocsr(), internal["Sbus"]
    voltage = np.full(ybus.shape[0], np.nan, dtype=complex)
    known = ppci_of[positions]
    voltage[known[known >= 0]] = (np.array([b.sv_v_kv / b.vn_kv for b in buses]) * np.exp(1j * np.deg2rad(sv_va)))[known >= 0]
    unknown = np.flatnonzero(np.isnan(voltage))
    given = np.flatnonzero(~np.isnan(voltage))
    if len(unknown):
        voltage[unknown] = spsolve(ybus[unknown][:, unknown].tocsc(), -ybus[unknown][:, given].dot(voltage[given]))
    mismatch = (voltage * np.conj(ybus.dot(voltage)) - sbus) * internal["baseMVA"]
    kind = internal["bus"][:, BUS_TYPE]
    mismatch = np.where(kind == REF, 0.0, np.where(kind == PV, mismatch.real + 0j, mismatch))
    return {bus.name or bus.iri: (float(mismatch[k].real), float(mismatch[k].imag)) for bus, k in zip(buses, known, strict=True) if k >= 0}


def _clock_offsets(grid: Grid, net, index, reference: int, positions: np.ndarray, sv_va: np.ndarray) -> np.ndarray:
    """Per compared bus, the vector-group shifts (−30° · clock per transformer, pandapower's sign) between it and the reference
    bus when the SV angles leave them out, else zeros.

    Exporters differ: the CGMES MiniGrid SV states a Dyn5 transformer's two sides 0.3° apart, not 150°. The SV is taken to
    hold the clocks (zeros) as soon as one transformer's SV sides are within 15° of its shift.
    """
    import networkx as nx
    import pandapower.topology as top

    from twin.models import ThreeWindingTransformer, Transformer

    shift = {}  # (table, net index) → {side column: degrees of that side against hv_bus}, as pandapower shifts
    live = {"grid": grid, "retired_at__isnull": True}
    trafo, trafo3w = index.elements.get("trafo", {}), index.elements.get("trafo3w", {})
    for row in Transformer.objects.filter(**live).exclude(phase_angle_clock=0).values("iri", "phase_angle_clock"):
        if row["iri"] in trafo:
            shift["trafo", trafo[row["iri"]]] = {"lv_bus": -30.0 * row["phase_angle_clock"]}
    for row in ThreeWindingTransformer.objects.filter(**live).values("iri", "phase_angle_clock2", "phase_angle_clock3"):
        if row["iri"] in trafo3w and (row["phase_angle_clock2"] or row["phase_angle_clock3"]):
            shift["trafo3w", trafo3w[row["iri"]]] = {"mv_bus": -30.0 * row["phase_angle_clock2"],
                                                     "lv_bus": -30.0 * row["phase_angle_clock3"]}
    if not shift:
        return np.zeros(len(positions))
    offset = {reference: 0.0}
    graph = top.create_nxgraph(net, respect_switches=True, include_out_of_service=False, multi=True)
    for a, b in nx.bfs_edges(nx.Graph(graph), reference):
        offset[b] = offset[a] + _edge_shift(net, graph, shift, a, b)
    sv_at = dict(zip(positions.tolist(), sv_va.tolist(), strict=True))
    for (table, i), sides in shift.items():
        hv = int(net[table].at[i, "hv_bus"])
        for side in (side for side, degrees in sides.items() if degrees):
            other = int(net[table].at[i, side])
            if hv in sv_at and other in sv_at and abs((sv_at[other] - sv_at[hv] - sides[side] + 180) % 360 - 180) < 15:
                return np.zeros(len(positions))  # the SV holds this transformer's shift: it includes the clocks
    return np.array([offset.get(p, 0.0) for p in positions.tolist()])


def _edge_shift(net, graph, shift: dict, a: int, b: int) -> float:
    """The clock shift from bus `a` to bus `b` across the first transformer joining them (0 for any other branch)."""
    for key in graph[a][b]:
        sides = shift.get(key[:2])
        if sides:
            hv = int(net[key[0]].at[key[1], "hv_bus"])
            ends = {int(net[key[0]].at[key[1], side]): value for side, value in sides.items()}
            if a == hv:
                return ends.get(b, 0.0)
            if b == hv:
                return -ends.get(a, 0.0)
            return ends.get(b, 0.0) - ends.get(a, 0.0)
    return 0.0


def sv_deviation(grid: Grid, *, calculate_voltage_angles: bool = False) -> tuple[float, float] | None:
    """(max |Δvm_pu|, max |Δva_degree|) of pandapower's `runpp` on the twin's net against the stored SV voltages.

    None when the grid carries no SV voltages. Angles are compared without transformer phase shifts
    by default: exporters such as NEPLAN leave the vector-group shift out of their SV angles.
    """
    buses = list(Bus.objects.filter(grid=grid).exclude(sv_v_kv=None).select_related("base_voltage"))
    if not buses:
        return None
    net, index = grid_to_net(grid)
    pp.runpp(net, calculate_voltage_angles=calculate_voltage_angles, lightsim2grid=False)
    positions = [index["bus"][bus.iri] for bus in buses]
    dvm = np.abs(net.res_bus.vm_pu.loc[positions].to_numpy() - [b.sv_v_kv / b.vn_kv for b in buses])
    dva = np.abs(net.res_bus.va_degree.loc[positions].to_numpy() - [b.sv_angle_degree for b in buses])
    return float(dvm.max()), float(dva.max())
