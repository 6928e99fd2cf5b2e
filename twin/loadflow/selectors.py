"""Reads of load-flow runs: results with filters, time series of chosen assets, violations, the EN 50160 summary."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
from django.db.models import QuerySet

from twin import models
from twin.loadflow import storage

Run = models.LoadFlowRun
RUN_FIELDS = ("id", "grid_id", "kind", "status", "at", "start", "end", "step_minutes", "parameters", "trigger", "grid_version",
              "telemetry_start", "telemetry_end", "inputs", "summary", "solver", "versions", "timings", "steps_total", "steps_done",
              "chunks_total", "chunks_done", "error", "created_at", "started_at", "finished_at")
SERIES_ARRAYS = {"bus": ("vm_pu", "va_degree"), "line": tuple(f"line_{n}" for n in storage.BRANCH_ARRAYS),
                 "trafo": tuple(f"trafo_{n}" for n in storage.BRANCH_ARRAYS)}
MAX_SERIES_ASSETS = 50


def run_dict(run: Run) -> dict:
    """A run as plain data, with its progress in percent."""
    found = {name: getattr(run, name) for name in RUN_FIELDS}
    found["progress_percent"] = round(run.progress_percent, 1)
    return found


def bus_results(run: Run, *, feeder: str | None = None, iri: str | None = None, vm_below: float | None = None,
                vm_above: float | None = None) -> QuerySet:
    """Snapshot bus results as dicts (bus IRI, vm_pu, va_degree, p_mw, q_mvar), filtered."""
    found = run.bus_results.all()
    if feeder:
        found = found.filter(bus__feeder__iri=feeder)
    if iri:
        found = found.filter(bus__iri=iri)
    if vm_below is not None:
        found = found.filter(vm_pu__lt=vm_below)
    if vm_above is not None:
        found = found.filter(vm_pu__gt=vm_above)
    return found.order_by("id").values("bus__iri", "bus__name", "vm_pu", "va_degree", "p_mw", "q_mvar")


def branch_results(run: Run, element: str, *, iri: str | None = None, min_loading_percent: float | None = None) -> QuerySet:
    """Snapshot line or transformer results as dicts, filtered."""
    found = run.branch_results.filter(element=element)
    if iri:
        found = found.filter(asset_iri=iri)
    if min_loading_percent is not None:
        found = found.filter(loading_percent__gte=min_loading_percent)
    return found.order_by("id").values("asset_iri", "p_from_mw", "q_from_mvar", "p_to_mw", "q_to_mvar", "i_ka", "loading_percent",
                                       "pl_mw", "ql_mvar")


def series(run: Run, element: str, iris: list[str], *, start: datetime | None = None, end: datetime | None = None) -> dict:
    """Time series of up to MAX_SERIES_ASSETS buses / lines / trafos of a time-series run: {"time": [...], iri: {quantity: [...]}}."""
    position = {iri: j for j, iri in enumerate(run.layout.get(element, []))}
    unknown = [iri for iri in iris if iri not in position]
    if unknown:
        raise KeyError(unknown[0])
    step = timedelta(minutes=run.step_minutes)
    names = SERIES_ARRAYS[element]
    times: list[datetime] = []
    values = {iri: {name: [] for name in names} for iri in iris}
    for chunk in run.chunks.order_by("index").only("start", "steps", "arrays"):
        chunk_end = chunk.start + chunk.steps * step
        if (start and chunk_end <= start) or (end and chunk.start >= end):
            continue
        arrays = storage.unpack(chunk.arrays, names)
        chunk_times = [chunk.start + k * step for k in range(chunk.steps)]
        keep = np.array([(start is None or t >= start) and (end is None or t < end) for t in chunk_times])
        times += [t for t, ok in zip(chunk_times, keep, strict=True) if ok]
        for iri in iris:
            for name in names:
                values[iri][name] += [None if np.isnan(v) else float(v) for v in arrays[name][keep, position[iri]]]
    clean = {iri: {name.removeprefix(f"{element}_"): found for name, found in by_name.items()} for iri, by_name in values.items()}
    return {"time": times, "values": clean}


def en50160_weekly(run: Run) -> list[dict]:
    """Per bus and ISO week: share of the week's values within ±10 % of nominal, and whether it meets EN 50160 (≥ 95 %)."""
    inside: dict[int, np.ndarray] = {}
    total: dict[int, np.ndarray] = {}
    for blob in run.chunks.order_by("index").values_list("arrays", flat=True):
        arrays = storage.unpack(blob, ("week", "en50160_inside", "en50160_total"))
        for row, week in enumerate(arrays["week"].tolist()):
            inside[week] = inside.get(week, 0) + arrays["en50160_inside"][row]
            total[week] = total.get(week, 0) + arrays["en50160_total"][row]
    buses = run.layout.get("bus", [])
    report = []
    for week in sorted(total):
        monday = storage.MONDAY + week * storage.WEEK
        with np.errstate(invalid="ignore", divide="ignore"):
            share = inside[week] / total[week] * 100
        for j, iri in enumerate(buses):
            if total[week][j]:
                report.append({"week_start": monday.date().isoformat(), "bus": iri, "values": int(total[week][j]),
                               "inside_percent": round(float(share[j]), 3), "compliant": bool(share[j] >= 95.0)})
    return report


def run_report(run: Run) -> dict:
    """Everything the command's --json prints: the run, its results (snapshot) or summary (time series), violations."""
    report = run_dict(run)
    if run.status != Run.Status.SUCCEEDED:
        return report
    if run.kind in (Run.Kind.SNAPSHOT, Run.Kind.WHATIF) and run.start is None:
        report["bus"] = list(bus_results(run))
        report["line"] = list(branch_results(run, "line"))
        report["trafo"] = list(branch_results(run, "trafo"))
    if run.kind == Run.Kind.HOSTING_CAPACITY:
        report["hosting_capacity"] = list(hosting_results(run).values(*HOSTING_FIELDS))
    report["input_records"] = list(run.input_records.values("element", "asset_iri", "source", "p_mw", "q_mvar", "measured_steps",
                                                            "filled_steps"))
    report["violations"] = list(run.violations.values("element", "asset_iri", "quantity", "start", "end", "steps", "value", "limit",
                                                      "severity"))
    return report


HOSTING_FIELDS = ("bus__iri", "bus__name", "pv_kw", "pv_limited_by", "pv_worst_at", "load_kw", "load_limited_by", "load_worst_at")


def hosting_results(run: Run):
    """Per-bus hosting capacities of a run, in bus order."""
    return run.hosting_results.order_by("id")
