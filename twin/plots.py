"""Pictures of a grid: a map coloured by load-flow voltage and loading, and pictures of a load-flow run's stored results.

A run's pictures are drawn on the grid version the run solved (its buses, lines, coordinates and feeders as of that
version, from the version's content), never on today's grid.
"""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from twin import history, models
from twin.loadflow.services import run_version

if TYPE_CHECKING:  # matplotlib, networkx and pandapower are imported where a picture is drawn (`_pyplot`): the admin imports this
    from twin.pandapower_adapter import NetIndex  # module at Django's setup, and every command and worker paid seconds for them

VOLTAGE_BAND_PU = (0.9, 1.1)


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bus_positions(buses: list[dict], net, index: NetIndex) -> dict[int, tuple[float, float]]:
    """Bus coordinates by pandapower index: the buses' longitude/latitude, else a spring layout of the topology."""
    import networkx as nx
    import pandapower.topology

    coords = {}
    for row in buses:
        if row["lon_degree"] is not None and row["iri"] in index.bus:
            coords[index.bus[row["iri"]]] = (row["lon_degree"], row["lat_degree"])
    if len(coords) == len(net.bus):
        return coords
    topology = pandapower.topology.create_nxgraph(net, respect_switches=False)
    return nx.spring_layout(topology, seed=1)


def draw_grid_map(grid: models.Grid, path: Path) -> Path:
    """Run a load flow on the twin and draw buses by vm_pu and lines by loading_percent into a PNG."""
    import pandapower

    from twin.pandapower_adapter import grid_to_net

    plt = _pyplot()
    net, index = grid_to_net(grid)
    pandapower.runpp(net, lightsim2grid=False)
    buses = list(models.Bus.objects.filter(grid=grid, retired_at__isnull=True).values("iri", "lon_degree", "lat_degree"))
    fig = _map_figure(grid.name, buses, net, index, net.res_bus.vm_pu.to_numpy(), net.res_line.loading_percent.to_numpy(),
                      "load flow on the twin")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _map_figure(title: str, buses: list[dict], net, index: NetIndex, vm_pu: np.ndarray, loading_percent: np.ndarray, what: str,
                band: tuple[float, float] = VOLTAGE_BAND_PU):
    """Buses coloured by vm_pu (band limits at the ends of the scale), lines by loading_percent (net order)."""
    from matplotlib.collections import LineCollection

    plt = _pyplot()
    positions = bus_positions(buses, net, index)
    fig, ax = plt.subplots(figsize=(9, 7))
    segments = [(positions[f], positions[t]) for f, t in zip(net.line.from_bus, net.line.to_bus, strict=True)]
    lines = LineCollection(segments, array=loading_percent, cmap="viridis", linewidths=2)
    ax.add_collection(lines)
    fig.colorbar(lines, ax=ax, label="line loading (%)")
    for hv_bus, lv_bus in zip(net.trafo.hv_bus, net.trafo.lv_bus, strict=True):
        (x1, y1), (x2, y2) = positions[hv_bus], positions[lv_bus]
        ax.plot([x1, x2], [y1, y2], color="black", linestyle="--", linewidth=1, label="transformer")
    xs, ys = zip(*(positions[b] for b in net.bus.index), strict=True)
    low, high = band
    dots = ax.scatter(xs, ys, c=vm_pu, cmap="coolwarm", vmin=low, vmax=high, s=18, zorder=3)
    fig.colorbar(dots, ax=ax, label="bus voltage (p.u.)")
    ax.autoscale()
    ax.set_title(f"{title}\n{what}: vm_pu {np.nanmin(vm_pu):.3f}–{np.nanmax(vm_pu):.3f}, "
                 f"max line loading {np.nanmax(loading_percent, initial=0):.0f} %", fontsize=10)
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return fig


# --- pictures of a load-flow run's stored results -----------------------------------------------------


class PictureError(ValueError):
    """A picture that cannot be drawn from a run as asked (unknown feeder or line, not a time series …)."""


def _png(fig) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _run_state(run, at) -> tuple[dict[str, float], dict[str, float], str]:
    """vm_pu by bus IRI and loading_percent by line IRI of a snapshot, or of one step (default: lowest voltage) of a time series."""
    from twin.loadflow import storage

    if not run.chunks_total:
        vm = dict(run.bus_results.values_list("bus__iri", "vm_pu"))
        loading = dict(run.branch_results.filter(element="line").values_list("asset_iri", "loading_percent"))
        return vm, loading, f"run {run.pk} at {run.at:%Y-%m-%d %H:%M}"
    step = timedelta(minutes=run.step_minutes)
    best = None
    for chunk in run.chunks.order_by("index").only("start", "steps", "arrays"):
        if at is not None and not chunk.start <= at < chunk.start + chunk.steps * step:
            continue
        arrays = storage.unpack(chunk.arrays, ("vm_pu", "line_loading_percent"))
        k = int((at - chunk.start) // step) if at is not None else int(np.nanargmin(np.nanmin(arrays["vm_pu"], axis=1)))
        value = np.nanmin(arrays["vm_pu"][k])
        if best is None or value < best[0]:
            best = (value, chunk.start + k * step, arrays["vm_pu"][k], arrays["line_loading_percent"][k])
    if best is None:
        raise PictureError("the time is outside the run's period")
    _, when, vm, loading = best
    return (dict(zip(run.layout["bus"], vm.tolist(), strict=True)), dict(zip(run.layout["line"], loading.tolist(), strict=True)),
            f"run {run.pk} at {when:%Y-%m-%d %H:%M}" + ("" if at else " (lowest voltage of the period)"))


def run_picture(run, picture: str, *, feeder: str | None = None, line: str | None = None, at=None) -> bytes:
    """PNG of a succeeded run: `voltage-profile` (along a feeder), `grid` (map by voltage and loading) or `line-loading`."""
    band = (run.parameters.get("vm_min_pu", VOLTAGE_BAND_PU[0]), run.parameters.get("vm_max_pu", VOLTAGE_BAND_PU[1]))
    if run.kind == models.LoadFlowRun.Kind.HOSTING_CAPACITY:
        raise PictureError("a hosting-capacity run stores capacities per bus, not voltages or loadings to draw")
    if picture == "line-loading":
        return _png(line_loading_figure(run, line))
    vm, loading, what = _run_state(run, at)
    content = history.version_content(run_version(run))
    net, index = history.content_net(content)
    buses = history.content_buses(content)
    vm_pu = np.array([vm.get(iri, np.nan) if vm.get(iri) is not None else np.nan for iri in _iris(index.bus, net.bus.index)])
    if picture == "grid":
        line_loading = np.array([loading.get(iri) if loading.get(iri) is not None else np.nan
                                 for iri in _iris(index["line"], net.line.index)])
        return _png(_map_figure(run.grid.name, buses, net, index, vm_pu, line_loading, what, band))
    return _png(voltage_profile_figure(run.grid.name, buses, net, index, vm_pu, what, band, feeder))


def _iris(indices: dict[str, int], order) -> list[str]:
    iri_of = {i: iri for iri, i in indices.items()}
    return [iri_of[i] for i in order]


def voltage_profile_figure(title: str, buses: list[dict], net, index: NetIndex, vm_pu: np.ndarray, what: str, band,
                           feeder: str | None):
    """vm_pu against the distance from the substation (km along lines from the slack or the transformers' LV side), band drawn."""
    import networkx as nx
    import pandapower.topology

    plt = _pyplot()
    graph = pandapower.topology.create_nxgraph(net, respect_switches=True, include_trafos=True)
    roots = set(net.trafo.lv_bus.tolist()) or set(net.ext_grid.bus.tolist())
    if not roots:
        raise PictureError("the grid has no transformer and no external grid to measure distances from")
    distance = nx.multi_source_dijkstra_path_length(graph, roots, weight="weight")
    position = {b: j for j, b in enumerate(net.bus.index)}
    drawn = list(net.bus.index)
    if feeder:
        members = {row["iri"] for row in buses if row.get("feeder") == feeder}
        if not members:
            raise PictureError(f"no buses in feeder {feeder}")
        drawn = [index.bus[iri] for iri in members if iri in index.bus]
    fig, ax = plt.subplots(figsize=(9, 5))
    chosen = set(drawn)
    for f, t in zip(net.line.from_bus, net.line.to_bus, strict=True):
        if f in chosen and t in chosen and f in distance and t in distance:
            ax.plot([distance[f], distance[t]], [vm_pu[position[f]], vm_pu[position[t]]], color="tab:blue", linewidth=1)
    xs = [distance[b] for b in drawn if b in distance]
    ys = [vm_pu[position[b]] for b in drawn if b in distance]
    ax.scatter(xs, ys, s=10, color="tab:blue", zorder=3)
    for limit in band:
        ax.axhline(limit, color="tab:red", linestyle="--", linewidth=1)
    ax.axhspan(band[0], band[1], color="tab:green", alpha=0.06)
    ax.set_xlabel("distance from the substation (km)")
    ax.set_ylabel("vm_pu")
    ax.set_title(f"{title}{' — ' + feeder.rsplit('/', 1)[-1] if feeder else ''}\nvoltage profile, {what}", fontsize=10)
    fig.tight_layout()
    return fig


def line_loading_figure(run, line: str | None):
    """loading_percent of one line over the period of a time-series run, with its limit."""
    from twin.loadflow import selectors

    if not run.chunks_total:
        raise PictureError("line loading over time needs a time-series run")
    if not line:
        raise PictureError("name the line: ?line=IRI")
    try:
        found = selectors.series(run, "line", [line])
    except KeyError as exc:
        raise PictureError(f"no line {line} in this run") from exc
    loading = np.array([np.nan if v is None else v for v in found["values"][line]["loading_percent"]])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(found["time"], loading, linewidth=0.8)
    ax.axhline(run.parameters.get("loading_limits", {}).get(line, run.parameters.get("max_loading_percent", 100.0)),
               color="tab:red", linestyle="--", linewidth=1, label="limit")
    ax.set_ylabel("loading_percent")
    ax.set_title(f"{run.grid.name}: {line.rsplit('/', 1)[-1]}, run {run.pk}, max {np.nanmax(loading):.1f} %", fontsize=10)
    ax.legend(loc="upper right")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig
