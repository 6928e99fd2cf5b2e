"""Pictures of a grid: a map of buses and lines coloured by load-flow voltage and loading."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import networkx as nx
import pandapower
from matplotlib.collections import LineCollection

from twin import models
from twin.pandapower_adapter import NetIndex, grid_to_net

VOLTAGE_BAND_PU = (0.9, 1.1)


def bus_positions(grid: models.Grid, net, index: NetIndex) -> dict[int, tuple[float, float]]:
    """Bus coordinates by pandapower index: stored longitude/latitude, else a spring layout of the topology."""
    coords = {}
    for row in models.Bus.objects.filter(grid=grid).values("iri", "lon_degree", "lat_degree"):
        if row["lon_degree"] is not None and row["iri"] in index.bus:
            coords[index.bus[row["iri"]]] = (row["lon_degree"], row["lat_degree"])
    if len(coords) == len(net.bus):
        return coords
    topology = pandapower.topology.create_nxgraph(net, respect_switches=False)
    return nx.spring_layout(topology, seed=1)


def draw_grid_map(grid: models.Grid, path: Path) -> Path:
    """Run a load flow on the twin and draw buses by vm_pu and lines by loading_percent into a PNG."""
    net, index = grid_to_net(grid)
    pandapower.runpp(net, lightsim2grid=False)
    positions = bus_positions(grid, net, index)
    fig, ax = plt.subplots(figsize=(9, 7))
    segments = [(positions[f], positions[t]) for f, t in zip(net.line.from_bus, net.line.to_bus, strict=True)]
    lines = LineCollection(segments, array=net.res_line.loading_percent.to_numpy(), cmap="viridis", linewidths=2)
    ax.add_collection(lines)
    fig.colorbar(lines, ax=ax, label="line loading (%)")
    for hv_bus, lv_bus in zip(net.trafo.hv_bus, net.trafo.lv_bus, strict=True):
        (x1, y1), (x2, y2) = positions[hv_bus], positions[lv_bus]
        ax.plot([x1, x2], [y1, y2], color="black", linestyle="--", linewidth=1, label="transformer")
    xs, ys = zip(*(positions[b] for b in net.bus.index), strict=True)
    low, high = VOLTAGE_BAND_PU
    dots = ax.scatter(xs, ys, c=net.res_bus.vm_pu.to_numpy(), cmap="coolwarm", vmin=low, vmax=high, s=18, zorder=3)
    fig.colorbar(dots, ax=ax, label="bus voltage (p.u.)")
    ax.autoscale()
    ax.set_title(f"{grid.name}\nload flow on the twin: vm_pu {net.res_bus.vm_pu.min():.3f}–{net.res_bus.vm_pu.max():.3f}, "
                 f"max line loading {net.res_line.loading_percent.max():.0f} %", fontsize=10)
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
