"""Compare the twin's load flow with a solved state (CGMES SV profile) kept on its buses.

`compare_with_sv` solves the grid either through the twin's own snapshot solver (`twin.loadflow`, as a
snapshot run solves it: declared powers, PV buses, reactive limits) or through pandapower's `runpp` on the
net the adapter builds, and gives the deviation of every bus that has an SV voltage. Angles are compared
relative to the reference bus (the slack's bus: a slack machine is solved at 0°, while the SV profile
states the angle its own solver fixed there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandapower as pp

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
    dva = va[positions] - np.array([b.sv_angle_degree or 0.0 for b in buses])
    reference = _reference_bus(net)
    if reference is not None and reference in set(positions.tolist()):
        dva = dva - dva[positions.tolist().index(reference)]
    return SvComparison([b.iri for b in buses], [b.name or b.iri for b in buses], dvm, dva)


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
