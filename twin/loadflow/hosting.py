"""Hosting capacity: per bus, the largest PV and the largest load (EV charging) in kW without any violation.

For each kind the worst step of the period is taken once for the whole grid: for PV the step with the
lowest power drawn from the external grid (most back-feed), for load the step with the highest. At
that step, the capacity of every candidate bus is found by bisection on [0, `max_kw`] until the
bracket is narrower than `tolerance_kw`: the lower end (reported) solves without any violation, the
upper end has one (or does not converge). A "violation" is exactly what the run's `Limits` judge: a
voltage outside the band, a line or transformer above its loading limit. The added power has
cos φ = 1 (q = 0).

Vectorised: one bisection round solves all candidate buses at once with the solver of every other run
(`solver.solve_rows`, from the base voltages, on the same pandapower admittance matrix), then checks all
buses' results at once with the batched branch-flow formulas of `solver.results_of`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.loadflow.solver import MAX_ITERATION, GridModel, results_of, solve_rows
from twin.loadflow.violations import Limits

HC_MAX_ITERATION = 3 * MAX_ITERATION  # a large added power from the base voltages may need more iterations


@dataclass
class Capacity:
    """Per candidate bus (internal index order of `buses`): capacity in kW and what limited it."""

    kw: np.ndarray
    limited_by: list[str]


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
    """Bisection of the power added at each internal bus in `buses` on top of `s_load` (one step, MW + j Mvar, load convention).

    `sign` +1 adds load, −1 adds generation. A base case already in violation gives 0 kW limited by `base_case`.
    """
    n = len(buses)
    base_verdict = judge(model, limits, layout, v_base[None, :], s_load[None, :], np.array([True]))[0]
    if base_verdict:
        return Capacity(np.zeros(n), ["base_case"] * n)

    def evaluate(kw: np.ndarray) -> list[str]:
        loads = np.tile(s_load, (n, 1))
        loads[np.arange(n), buses] += sign * kw / 1000.0
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
    return Capacity(low, limited_by)
