"""The picture of an agreement's scope: the provider's grid map with what the agreement covers in colour, the rest grey.

Drawn from the twin's rows (bus coordinates, else a spring layout of buses and branches), with matplotlib's Agg
canvas and no pyplot state, so it is safe in a web worker. `twin.plots` draws from a pandapower net (and runs a
load flow); a scope picture needs neither, and twin must not know about agreements.
"""

from __future__ import annotations

import copy
import io

from sharing.models import Agreement
from sharing.scope import scope_assets, scope_grids
from twin import models as twin

MAX_GRIDS = 4  # one panel per covered grid, at most this many
IN_SCOPE, OUT_OF_SCOPE = "tab:orange", "#c8c8c8"
BRANCHES = {twin.Line: ("from_bus_id", "to_bus_id", "-"), twin.Transformer: ("hv_bus_id", "lv_bus_id", "--"),
            twin.Switch: ("bus_id", "other_bus_id", ":")}


def _area(agreement: Agreement) -> Agreement:
    """The agreement's part of the grids (covered grids and feeders), whatever asset types or assets it lists."""
    area = copy.copy(agreement)
    area.asset_types, area.asset_iris = [], []
    return area


def _positions(buses: list[tuple[int, float | None, float | None]], edges: list[tuple[int, int]]) -> dict[int, tuple[float, float]]:
    """Bus id → (x, y): stored longitude/latitude when every bus has them, else a spring layout of the topology (seeded)."""
    import networkx as nx  # here, not at import: the admin imports this module at Django's setup, every command paid for it

    if buses and all(lon is not None and lat is not None for _, lon, lat in buses):
        return {pk: (lon, lat) for pk, lon, lat in buses}
    graph = nx.Graph()
    graph.add_nodes_from(pk for pk, _, _ in buses)
    graph.add_edges_from(edges)
    return {pk: (float(x), float(y)) for pk, (x, y) in nx.spring_layout(graph, seed=1).items()}


def _draw_grid(ax, grid: twin.Grid, agreement: Agreement) -> None:
    from matplotlib.collections import LineCollection

    buses = list(twin.Bus.objects.filter(grid=grid).order_by("id").values_list("id", "lon_degree", "lat_degree"))
    in_scope_buses = set(scope_assets(_area(agreement), twin.Bus).filter(grid=grid).values_list("id", flat=True))
    branches = []
    for model, (one, other, style) in BRANCHES.items():
        granted = set(scope_assets(agreement, model).filter(grid=grid).values_list("id", flat=True))
        branches += [(a, b, style, pk in granted) for pk, a, b in model.objects.filter(grid=grid).values_list("id", one, other)]
    positions = _positions(buses, [(a, b) for a, b, _, _ in branches])
    granted_branches = 0
    for style in ("-", "--", ":"):
        for granted in (False, True):
            segments = [(positions[a], positions[b]) for a, b, s, g in branches if s == style and g == granted]
            granted_branches += len(segments) if granted else 0
            if segments:
                ax.add_collection(LineCollection(segments, colors=IN_SCOPE if granted else OUT_OF_SCOPE, linestyles=style,
                                                 linewidths=2.0 if granted else 1.0, zorder=2 if granted else 1))
    for granted in (False, True):
        points = [positions[pk] for pk, _, _ in buses if (pk in in_scope_buses) == granted]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, s=22 if granted else 10, color=IN_SCOPE if granted else OUT_OF_SCOPE, zorder=4 if granted else 3,
                       label="in scope" if granted else "not in scope")
    if not buses:
        ax.text(0.5, 0.5, "no buses", ha="center", va="center", transform=ax.transAxes)
    ax.autoscale()
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{grid.name}: {len(in_scope_buses)} of {len(buses)} buses, {granted_branches} of {len(branches)} branches in scope",
                 fontsize=9)
    if buses:
        ax.legend(loc="lower right", fontsize=8)


def scope_picture(agreement: Agreement) -> bytes:
    """PNG of the grids an agreement (saved or not) covers, its scope in colour; lines solid, transformers dashed, switches dotted."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grids = list(scope_grids(agreement).order_by("id")[:MAX_GRIDS + 1])
    shown = grids[:MAX_GRIDS] or [None]
    fig = Figure(figsize=(7 * min(len(shown), 2), 6 * ((len(shown) + 1) // 2)))
    FigureCanvasAgg(fig)
    for k, grid in enumerate(shown):
        ax = fig.add_subplot((len(shown) + 1) // 2, min(len(shown), 2), k + 1)
        if grid is None:
            ax.text(0.5, 0.5, "the agreement covers no grid of the provider", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        else:
            _draw_grid(ax, grid, agreement)
    more = " (first four grids)" if len(grids) > MAX_GRIDS else ""
    fig.suptitle(f"Scope of {agreement.provider} → {agreement.consumer}, {agreement.get_purpose_display()}{more}", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()
