"""Compare the twin's load flow with a solved state (CGMES SV profile) kept on its buses."""

from __future__ import annotations

import numpy as np
import pandapower as pp

from twin.models import Bus, Grid
from twin.pandapower_adapter import grid_to_net


def sv_deviation(grid: Grid, *, calculate_voltage_angles: bool = False) -> tuple[float, float] | None:
    """(max |Δvm_pu|, max |Δva_degree|) of the twin's pandapower load flow against the stored SV voltages.

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
