"""Compact storage of time-series results: float32 arrays of a chunk in one uncompressed .npz blob.

float32 keeps ~7 significant digits: vm_pu to ~1e-7 pu, loading_percent to ~1e-5 % at 100 %, more
than any meter reports. Compression (`savez_compressed`) saves only ~10 % on voltages and costs
seconds per year, so it is not used; PostgreSQL stores the bytea out of line, uncompressed.

Voltages are kept once per electrical node: buses joined by closed switches (and a branch's switch-end
node, see the pandapower converter) share one voltage, so a SimBench MV grid's 440 buses are 150 columns.
`bus_node` maps each bus of the layout to its column (−1: isolated), and `unpack` gives the voltages back
per bus, so readers never see the difference.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import numpy as np

from twin.loadflow.solver import GridModel, StepResults

BRANCH_ARRAYS = ("p_from_mw", "q_from_mvar", "i_ka", "loading_percent")
NODE_ARRAYS = ("vm_pu", "va_degree")  # stored per node, given back per bus
EN50160_BAND_PU = 0.10
WEEK = timedelta(days=7)
MONDAY = datetime(2001, 1, 1)  # a Monday: ISO weeks are counted from it


def week_numbers(times: list[datetime]) -> np.ndarray:
    """ISO-week number of each timestamp (weeks since 2001-01-01, Mondays 00:00 in the timestamps' zone)."""
    return np.array([((t.replace(tzinfo=None) - MONDAY) // WEEK) for t in times], dtype=np.int64)


def chunk_arrays(results: StepResults, times: list[datetime], model: GridModel) -> dict[str, np.ndarray]:
    """The arrays a chunk keeps: voltages per node, branch flows, totals and the EN 50160 weekly counts per bus."""
    nodes, first_bus = model.node_buses()
    arrays = {"bus_node": np.where(model.bus_ppci >= 0, np.searchsorted(nodes, model.bus_ppci), -1).astype(np.int32)}
    for name in NODE_ARRAYS:
        arrays[name] = getattr(results, name)[:, first_bus].astype(np.float32)
    for element, values in (("line", results.line), ("trafo", results.trafo)):
        for name in BRANCH_ARRAYS:
            arrays[f"{element}_{name}"] = values[name].astype(np.float32)
    for name, values in results.totals.items():
        arrays[name] = values.astype(np.float64)
    weeks = week_numbers(times)
    arrays["week"], position = np.unique(weeks, return_inverse=True)
    inside = np.abs(results.vm_pu - 1.0) <= EN50160_BAND_PU + 1e-9
    counted = ~np.isnan(results.vm_pu)
    # steps are in time order, so each week is one run of rows: sum the runs (np.add.at is ~20× slower)
    starts = np.flatnonzero(np.r_[True, np.diff(position) != 0])
    arrays["en50160_inside"] = np.add.reduceat((inside & counted).astype(np.int32), starts, axis=0)
    arrays["en50160_total"] = np.add.reduceat(counted.astype(np.int32), starts, axis=0)
    return arrays


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays → .npz bytes (uncompressed)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def unpack(blob: bytes | memoryview, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """.npz bytes → arrays (only `names` when given: the others are never read), voltages per bus of the layout."""
    with np.load(io.BytesIO(bytes(blob))) as archive:
        wanted = [name for name in (names or archive.files) if name != "bus_node"]
        arrays = {name: archive[name] for name in wanted}
        if "bus_node" in archive.files and any(name in NODE_ARRAYS for name in wanted):
            bus_node = archive["bus_node"]
            for name in NODE_ARRAYS:
                if name in arrays:
                    arrays[name] = _per_bus(arrays[name], bus_node)
    return arrays


def _per_bus(per_node: np.ndarray, bus_node: np.ndarray) -> np.ndarray:
    per_bus = per_node[:, np.maximum(bus_node, 0)] if per_node.shape[1] else np.zeros((len(per_node), len(bus_node)), np.float32)
    per_bus[:, bus_node < 0] = np.nan
    return per_bus
