"""Hosting capacity: per bus, the largest PV and the largest load (EV charging) in kW without any violation.

The worst hour differs from bus to bus (a bus at the end of a PV-heavy feeder is worst at midday, one
near a commercial load in the evening), so each bus is judged at several candidate steps of the period
and keeps the smallest capacity with the step that set it. The candidates (`candidate_steps`) are the
steps with the least power drawn from the external grid (most back-feed, for PV) or the most (for
load), and, per bus, the step of its own highest (PV) or lowest (load) voltage in the base case.

At each (bus, step) pair the capacity is found by bisection on [0, `max_kw`] until the bracket is
narrower than `tolerance_kw`: the lower end (reported) solves without any violation, the upper end has
one (or does not converge). A "violation" is exactly what the run's `Limits` judge: a voltage outside
the band, a line or transformer above its loading limit. The added power has cos φ = 1 (q = 0). A
candidate step that is already in violation without any addition gives every bus 0 kW (`base_case`).

Vectorised: one bisection round solves all pairs at once with the solver of every other run
(`solver.solve_rows`, from the base voltages, on the same pandapower admittance matrix), then checks
them at once with the batched branch-flow formulas of `solver.results_of`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.loadflow.solver import MAX_ITERATION, GridModel, results_of, solve_rows
from twin.loadflow.violations import Limits

HC_MAX_ITERATION = 3 * MAX_ITERATION  # a large added power from the base voltages may need more iterations


@dataclass
class Capacity:
    """Per candidate bus (order of `buses`): capacity in kW, what limited it, and the candidate step that set it."""

    kw: np.ndarray
    limited_by: list[str]
    worst_step: np.ndarray


def candidate_steps(vm_pu: np.ndarray, p_ext_grid_mw: np.ndarray, buses: np.ndarray, *, sign: float, extreme_steps: int = 4,
                    most: int = 16) -> np.ndarray:
    """The steps to judge (module docstring): the `extreme_steps` most extreme grid exchanges and each bus's own worst
    voltage step, at most `most` of them (the exchange extremes first, then the steps most buses pick)."""
    order = np.argsort(p_ext_grid_mw)  # ascending: most back-feed first
    chosen = list((order if sign < 0 else order[::-1])[:extreme_steps])
    per_bus = (np.nanargmax if sign < 0 else np.nanargmin)(vm_pu[:, buses], axis=0) if len(buses) else np.zeros(0, dtype=int)
    steps, picks = np.unique(per_bus, return_counts=True)
    for k in steps[np.argsort(-picks, kind="stable")]:
        if len(chosen) >= most:
            break
        if k not in chosen:
            chosen.append(int(k))
    return np.array(sorted(set(int(k) for k in chosen)), dtype=np.int64)


def judge(model: GridModel, limits: Limits, layout: dict[str, list[str]], voltages: np.ndarray, s_load: np.ndarray,
          converged: np.ndarray) -> list[str]:
    """Per row, the first limit broken ('vm_pu', 'loading_percent', 'not_converged') or '' when none."""
    results = results_of(model, voltages, s_load)
    with np.errstate(invalid="ignore"):
        voltage = ((results.vm_pu < limits.vm_min_pu) | (results.vm_pu > limits.vm_max_pu)).any(axis=1)
        loading = np.zeros(len(voltages), dtype=bool)
        for element, values in (("line", results.line), ("trafo", results.trafo)):
            if len(layout[element]):
                loading |= (values["loading_percent"] > limits.loading_limit(layout[element])).any(axis=1)
    return ["not_converged" if not ok else "vm_pu" if v else "loading_percent" if lo else ""
            for ok, v, lo in zip(converged, voltage, loading, strict=True)]


def capacities(model: GridModel, limits: Limits, layout: dict[str, list[str]], s_load: np.ndarray, v_base: np.ndarray,
               buses: np.ndarray, *, sign: float, max_kw: float, tolerance_kw: float) -> Capacity:
    """Bisection of the power added at each internal bus in `buses` on top of each step of `s_load` (steps × buses,
    MW + j Mvar, load convention, solved as `v_base`); per bus the smallest capacity over the steps.

    `sign` +1 adds load, −1 adds generation.
    """
    n, n_steps = len(buses), len(s_load)
    base_verdict = judge(model, limits, layout, v_base, s_load, np.ones(n_steps, dtype=bool))
    if any(base_verdict):
        worst = next(k for k, verdict in enumerate(base_verdict) if verdict)
        return Capacity(np.zeros(n), ["base_case"] * n, np.full(n, worst))
    pair_step = np.repeat(np.arange(n_steps), n)  # rows: every bus at every step
    pair_bus = np.tile(buses, n_steps)
    kw, limited_by = _bisect(model, limits, layout, s_load[pair_step], v_base[pair_step], pair_bus, sign=sign, max_kw=max_kw,
                             tolerance_kw=tolerance_kw)
    per_step = kw.reshape(n_steps, n)
    worst = np.argmin(per_step, axis=0)
    return Capacity(per_step[worst, np.arange(n)], [limited_by[worst[j] * n + j] for j in range(n)], worst)


def _bisect(model: GridModel, limits: Limits, layout: dict[str, list[str]], s_load: np.ndarray, v_base: np.ndarray,
            buses: np.ndarray, *, sign: float, max_kw: float, tolerance_kw: float) -> tuple[np.ndarray, list[str]]:
    """Per row (a step's loads, its base voltages and one bus), the largest addition without violation and what limited it."""
    n = len(buses)
    rows = np.arange(n)

    def evaluate(kw: np.ndarray) -> list[str]:
        loads = s_load.copy()
        loads[rows, buses] += sign * kw / 1000.0
        voltages, converged, _ = solve_rows(model, -loads / model.base_mva, v_base, HC_MAX_ITERATION)
        return judge(model, limits, layout, voltages, loads, converged)

    low, high = np.zeros(n), np.full(n, float(max_kw))
    reason = evaluate(high)
    open_ended = np.array([not r for r in reason])
    limited_by = [r or "search_limit" for r in reason]
    low[open_ended] = high[open_ended]
    searching = ~open_ended
    while searching.any() and (high - low)[searching].max() > tolerance_kw:
        mid = np.where(searching, (low + high) / 2, low)
        verdict = evaluate(mid)
        for j in np.flatnonzero(searching):
            if verdict[j]:
                high[j], limited_by[j] = mid[j], verdict[j]
            else:
                low[j] = mid[j]
        searching &= (high - low) > tolerance_kw
    return low, limited_by
