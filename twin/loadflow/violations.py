"""Limits and violations: voltage outside the band, loading above the limit, as periods of consecutive steps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.conf import settings

VM_MAJOR_MARGIN_PU = 0.02
LOADING_MAJOR_MARGIN_PERCENT = 20.0


@dataclass(frozen=True)
class Limits:
    """The band and loading limit a run judges results by (pu, percent); per-asset loading limits by IRI."""

    vm_min_pu: float
    vm_max_pu: float
    max_loading_percent: float
    loading_limits: dict[str, float]

    @classmethod
    def of(cls, parameters: dict) -> Limits:
        """From a run's parameters, defaulting to settings (EN 50160: ±10 % of nominal; 100 % of the asset's rating)."""
        band = settings.GRIDTWIN_LOADFLOW_VM_BAND_PU
        return cls(vm_min_pu=float(parameters.get("vm_min_pu", 1 - band)), vm_max_pu=float(parameters.get("vm_max_pu", 1 + band)),
                   max_loading_percent=float(parameters.get("max_loading_percent", 100.0)),
                   loading_limits={str(k): float(v) for k, v in (parameters.get("loading_limits") or {}).items()})

    def loading_limit(self, iris: list[str]) -> np.ndarray:
        return np.array([self.loading_limits.get(iri, self.max_loading_percent) for iri in iris], dtype=float)


@dataclass
class Episode:
    """One period of consecutive steps in which one asset broke one limit (rows of `Violation`)."""

    element: str
    asset_iri: str
    quantity: str
    start: datetime
    end: datetime
    steps: int
    value: float
    limit: float
    severity: str


def episodes(mask: np.ndarray, values: np.ndarray, worst, limit: np.ndarray, *, element: str, iris: list[str], quantity: str,
             times: list[datetime], margin: float) -> list[Episode]:
    """Runs of True in `mask` (steps × assets) per asset, each with its worst value (`worst` = np.nanmax / np.nanmin)."""
    found = []
    for column in np.flatnonzero(mask.any(axis=0)):
        edges = np.diff(np.concatenate([[0], mask[:, column].astype(np.int8), [0]]))
        for first, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            value = float(worst(values[first:stop, column]))
            major = abs(value - limit[column]) > margin
            found.append(Episode(element, iris[column], quantity, times[first], times[stop - 1], int(stop - first), value,
                                 float(limit[column]), "major" if major else "minor"))
    return found


def find_violations(limits: Limits, layout: dict[str, list[str]], vm_pu: np.ndarray, line_loading: np.ndarray,
                    trafo_loading: np.ndarray, times: list[datetime]) -> list[Episode]:
    """All episodes of voltage below / above the band and of line and transformer loading above its limit."""
    found = []
    with np.errstate(invalid="ignore"):
        n_bus = vm_pu.shape[1]
        low, high = vm_pu < limits.vm_min_pu, vm_pu > limits.vm_max_pu
    found += episodes(low, vm_pu, np.nanmin, np.full(n_bus, limits.vm_min_pu), element="bus", iris=layout["bus"],
                      quantity="vm_pu", times=times, margin=VM_MAJOR_MARGIN_PU)
    found += episodes(high, vm_pu, np.nanmax, np.full(n_bus, limits.vm_max_pu), element="bus", iris=layout["bus"],
                      quantity="vm_pu", times=times, margin=VM_MAJOR_MARGIN_PU)
    for element, loading in (("line", line_loading), ("trafo", trafo_loading)):
        limit = limits.loading_limit(layout[element])
        with np.errstate(invalid="ignore"):
            over = loading > limit
        found += episodes(over, loading, np.nanmax, limit, element=element, iris=layout[element], quantity="loading_percent",
                          times=times, margin=LOADING_MAJOR_MARGIN_PERCENT)
    return found


def merge_adjacent(rows: list[dict], step) -> tuple[list[dict], list[int]]:
    """Join episodes of one asset and limit that continue across chunk borders; returns (kept rows updated, ids to delete)."""
    rows = sorted(rows, key=lambda r: (r["element"], r["asset_iri"], r["quantity"], r["limit"], r["start"]))
    kept, dropped = [], []
    for row in rows:
        previous = kept[-1] if kept else None
        same = previous and all(previous[k] == row[k] for k in ("element", "asset_iri", "quantity", "limit"))
        if same and row["start"] - previous["end"] == step:
            low = row["quantity"] == "vm_pu" and row["value"] < row["limit"]
            previous["value"] = min(previous["value"], row["value"]) if low else max(previous["value"], row["value"])
            previous["end"], previous["steps"] = row["end"], previous["steps"] + row["steps"]
            previous["severity"] = "major" if "major" in (previous["severity"], row["severity"]) else "minor"
            previous["changed"] = True
            dropped.append(row["id"])
        else:
            kept.append(row)
    return [r for r in kept if r.get("changed")], dropped
