"""Injections for the steps of a run: measured where readings exist, else the declared profile, else the last value.

Per injection (a pandapower load, sgen, storage, gen or motor row of the twin's net) and step, the source is, in order:
1. `measured` — the mean of the readings of its meters (`Meter.measured_iri` = the asset's IRI) with
   timestamps in (t − step, t], quality not invalid. Readings are in the asset's own convention, as its
   `p_mw` is: consumption positive for loads and EV chargers, generation positive for static
   generators, charging positive for storage; `reactive_power` likewise; a missing q keeps the
   asset's declared power factor;
2. `profile` — the asset's declared `profile` × its declared p_mw (q_mvar for loads' q profiles), from
   the SimBench profiles of a grid imported from SimBench (`Grid.source` = `simbench:CODE`);
3. `last_value` — the latest earlier measured value;
4. `declared` — the asset's p_mw / q_mvar as stored.

Without the telemetry models (`twin.Reading`), step 1 and 3 find nothing.

Measured values come only from the grid owner's own telemetry: meters not retired whose readings
the grid owner's gateways sent (`Meter.telemetry_owner` is the grid's owner, or empty: no readings yet). Readings
another participant sent — a charge-point operator's chargers in the utility's grid — belong to that participant;
they could feed a run only under an agreement with it, which is not built yet, so today they never do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.apps import apps
from django.db import connection

from twin import models
from twin.loadflow.profiles import ProfileSet, simbench_code, simbench_profiles
from twin.selectors import points_of

MEASURED, PROFILE, LAST_VALUE, DECLARED = 0, 1, 2, 3
SOURCES = ("measured", "profile", "last_value", "declared")
INJECTION_TABLES = ("load", "sgen", "storage", "gen", "motor")


@dataclass
class Injections:
    """The injections of a net in a fixed order, with their declared values (MW, Mvar) and profile names."""

    element: np.ndarray  # table name per injection
    net_index: np.ndarray
    iri: list[str]
    p_mw: np.ndarray
    q_mvar: np.ndarray
    profile: list[str]
    in_service: np.ndarray

    @classmethod
    def of_net(cls, net, iri_of: dict[str, dict[int, str]]) -> Injections:
        """Every load, sgen and storage row of `net`; `iri_of[table][index]` names the twin asset (or a scenario's)."""
        parts = []
        for table in INJECTION_TABLES:
            frame = net[table]
            if frame.empty:
                continue
            profile = frame["profile"].fillna("").astype(str).tolist() if "profile" in frame else [""] * len(frame)
            parts.append((table, frame.index.to_numpy(), [iri_of[table][i] for i in frame.index.tolist()],
                          *declared_power(table, frame), profile, frame.in_service.to_numpy(bool)))
        if not parts:
            empty = np.zeros(0)
            return cls(np.zeros(0, dtype=object), empty.astype(np.int64), [], empty, empty, [], empty.astype(bool))
        return cls(
            element=np.concatenate([np.full(len(p[1]), p[0], dtype=object) for p in parts]),
            net_index=np.concatenate([p[1] for p in parts]),
            iri=[iri for p in parts for iri in p[2]],
            p_mw=np.concatenate([p[3] for p in parts]),
            q_mvar=np.concatenate([p[4] for p in parts]),
            profile=[name for p in parts for name in p[5]],
            in_service=np.concatenate([p[6] for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.iri)


def declared_power(table: str, frame) -> tuple[np.ndarray, np.ndarray]:
    """(p_mw, q_mvar) of a pandapower injection table, scaling folded in, in the table's own convention.

    A generator (`gen`) holds its bus voltage: its q is the solver's result, declared 0. A motor's p is its mechanical
    power over its efficiency at its loading, q from its cos φ (pandapower's motor model).
    """
    scaling = frame.scaling.to_numpy(float)
    if table == "gen":
        return frame.p_mw.to_numpy(float) * scaling, np.zeros(len(frame))
    if table == "motor":
        efficiency, loading = frame.efficiency_percent.to_numpy(float) / 100, frame.loading_percent.to_numpy(float) / 100
        p_mw = frame.pn_mech_mw.to_numpy(float) / efficiency * loading * scaling
        return p_mw, p_mw * np.tan(np.arccos(frame.cos_phi.to_numpy(float)))
    return frame.p_mw.to_numpy(float) * scaling, frame.q_mvar.to_numpy(float) * scaling


@dataclass
class StepInputs:
    """p_mw, q_mvar (steps × injections, asset convention) and the source code of each value (see SOURCES)."""

    times: list[datetime]
    p_mw: np.ndarray
    q_mvar: np.ndarray
    source: np.ndarray
    telemetry_start: datetime | None = None
    telemetry_end: datetime | None = None

    def counts(self) -> dict[str, int]:
        """Number of (step, injection) values per source."""
        found = np.bincount(self.source.ravel(), minlength=len(SOURCES))
        return {name: int(found[code]) for code, name in enumerate(SOURCES)}


def step_times(start: datetime, steps: int, step: timedelta) -> list[datetime]:
    """The timestamps of `steps` steps from `start`."""
    return [start + k * step for k in range(steps)]


def build_inputs(grid: models.Grid, injections: Injections, times: list[datetime], step: timedelta,
                 profiles: ProfileSet | None = None) -> StepInputs:
    """Fill steps × injections with measured, profile, last or declared values (module docstring), recording the source."""
    n_steps, n = len(times), len(injections)
    p = np.tile(injections.p_mw, (n_steps, 1))
    q = np.tile(injections.q_mvar, (n_steps, 1))
    source = np.full((n_steps, n), DECLARED, dtype=np.uint8)
    if profiles is None:
        code = simbench_code(grid.source)
        profiles = simbench_profiles(code) if code else None
    if profiles is not None and n:
        rows = profiles.rows(times)
        for j, (element, name) in enumerate(zip(injections.element, injections.profile, strict=True)):
            found = profiles.factors(element, name, rows) if name else None
            if found is None:
                continue
            p[:, j] = found[0] * injections.p_mw[j]
            if found[1] is not None:
                q[:, j] = found[1] * injections.q_mvar[j]
            source[:, j] = PROFILE
    inputs = StepInputs(times, p, q, source)
    measured = _measured(grid, injections, times, step)
    if measured is not None:
        _apply_measured(inputs, injections, *measured)
    return inputs


def _reading_model():
    try:
        return apps.get_model("twin", "Reading")
    except LookupError:
        return None


def _measured(grid, injections: Injections, times: list[datetime], step: timedelta):
    """(p, q, last_p, last_q, first_ts, last_ts) from readings: steps × injections arrays with NaN where nothing was measured.

    Only the grid owner's own points count (module docstring, the rule of `twin.selectors.points_of`), not retired.
    """
    reading = _reading_model()
    if reading is None or not times or not len(injections):
        return None
    column = {iri: j for j, iri in enumerate(injections.iri)}
    own = points_of([grid.owner_id], writable=True).filter(grid=grid)
    # the grid's own meters, matched to the injections here: an `IN` list of every injection's IRI (12k on a 10k-bus grid)
    # cost the database more to parse and plan than reading the grid's meters does
    meters = {pk: iri for pk, iri in own.values_list("id", "measured_iri") if iri in column}
    if not meters:
        return None
    from twin.models.telemetry import QUANTITIES, Quality

    codes = {QUANTITIES["active_power"].code: 0, QUANTITIES["reactive_power"].code: 1}
    start, n_steps = times[0], len(times)
    rows = reading.objects.filter(point_id__in=list(meters), quantity__in=list(codes), ts__gt=start - step, ts__lte=times[-1])
    rows = rows.exclude(quality=Quality.INVALID).values_list("point_id", "quantity", "ts", "value")
    total = np.zeros((2, n_steps, len(injections)))
    count = np.zeros((2, n_steps, len(injections)))
    first = last = None
    for point, quantity, ts, value in rows.iterator(chunk_size=20000):
        k = -int((start - ts) // step)  # ceil((ts - start) / step): (t_k − step, t_k] belongs to step k
        if 0 <= k < n_steps:
            which = codes[quantity]
            total[which, k, column[meters[point]]] += value
            count[which, k, column[meters[point]]] += 1
            first = ts if first is None or ts < first else first
            last = ts if last is None or ts > last else last
    with np.errstate(invalid="ignore"):
        mean = total / count
    before = _latest_before(reading, meters, codes, start - step)
    last_value = np.full((2, len(injections)), np.nan)
    for (point, quantity), value in before.items():
        last_value[codes[quantity], column[meters[point]]] = value
    return mean[0], mean[1], last_value, first, last


def _latest_before(reading, meters: dict, codes: dict, until: datetime) -> dict[tuple[int, int], float]:
    """The newest good reading at or before `until` per (meter, quantity) of `meters` (id → measured IRI), which are
    the grid owner's own meters only, as `_measured` chose them: no other participant's readings fill a step."""
    from twin.models.telemetry import Quality

    queryset = reading.objects.filter(point_id__in=list(meters), quantity__in=list(codes), ts__lte=until).exclude(quality=Quality.INVALID)
    if connection.vendor == "postgresql":
        found = queryset.order_by("point_id", "quantity", "-ts").distinct("point_id", "quantity")
        found = found.values_list("point_id", "quantity", "value")
        return {(point, quantity): value for point, quantity, value in found}
    latest = {}
    for point in meters:
        for quantity in codes:
            value = queryset.filter(point_id=point, quantity=quantity).order_by("-ts").values_list("value", flat=True).first()
            if value is not None:
                latest[(point, quantity)] = value
    return latest


def _apply_measured(inputs: StepInputs, injections: Injections, p_meas, q_meas, last_value, first, last) -> None:
    has_p = ~np.isnan(p_meas)
    # a measured p without a measured q keeps the declared power factor
    ratio = np.divide(injections.q_mvar, injections.p_mw, out=np.zeros(len(injections)), where=injections.p_mw != 0)
    q_from_p = p_meas * ratio
    inputs.p_mw[has_p] = p_meas[has_p]
    inputs.q_mvar[has_p] = np.where(np.isnan(q_meas), q_from_p, q_meas)[has_p]
    inputs.source[has_p] = MEASURED
    # last value: forward-fill measured values into steps that have neither a reading nor a profile
    last_p, last_q = last_value[0].copy(), last_value[1].copy()
    for k in range(len(inputs.times)):
        row_has = has_p[k]
        last_p[row_has] = p_meas[k, row_has]
        last_q[row_has] = np.where(np.isnan(q_meas[k, row_has]), q_from_p[k, row_has], q_meas[k, row_has])
        fill = (inputs.source[k] == DECLARED) & ~np.isnan(last_p)
        if fill.any():
            inputs.p_mw[k, fill] = last_p[fill]
            inputs.q_mvar[k, fill] = np.where(np.isnan(last_q[fill]), last_p[fill] * ratio[fill], last_q[fill])
            inputs.source[k, fill] = LAST_VALUE
    inputs.telemetry_start, inputs.telemetry_end = first, last
