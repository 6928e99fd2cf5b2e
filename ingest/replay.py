"""SimBench profiles → telemetry batches for the meters of an imported SimBench grid.

The twin keeps each load's, static generator's and storage unit's SimBench `profile` name; SimBench
scales its yearly 15-minute profiles by the element's rated values (`get_absolute_values`). Profile
step k of the year is replayed at `start + k × 15 min`, beginning with the step of `start`'s day of the
year, as a meter would report it: active power in kW (and reactive power in kvar for loads), in each
asset's own sign convention (load: consumption positive; generator: generation positive; storage:
charging positive). The batches go through `telemetry_batch_receive`, the same path as an HTTP upload.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson

from ingest.services import profile_meters_ensure
from twin import models as twin

STEP = timedelta(minutes=15)
STEPS_PER_DAY = 96
# SimBench table → [(profile column, quantity, unit the meter reports, factor from MW / Mvar to that unit)]
PROFILED_QUANTITIES = {
    "load": [("p_mw", "active_power", "kW", 1e3), ("q_mvar", "reactive_power", "kvar", 1e3)],
    "sgen": [("p_mw", "active_power", "kW", 1e3)],
    "storage": [("p_mw", "active_power", "kW", 1e3)],
}


class ReplayError(ValueError):
    """The grid cannot be replayed (not imported from SimBench, no profiled assets)."""


def simbench_code(grid: twin.Grid) -> str:
    if not grid.source.startswith("simbench:"):
        raise ReplayError(f"grid {grid.pk} was not imported from SimBench (source {grid.source!r})")
    return grid.source.removeprefix("simbench:")


def replay_batches(grid: twin.Grid, *, start: datetime, days: int, readings_per_batch: int) -> Iterator[tuple[bytes, int, int]]:
    """JSON batch bodies of the grid's profiles from `start` for `days` days, each with its readings and 15-minute steps."""
    import simbench

    meters = profile_meters_ensure(grid=grid)
    net = simbench.get_simbench_net(simbench_code(grid))
    profiles = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
    grid_iri = grid.iri.rstrip("/")
    series = []  # (meter id, quantity, unit, factor, profile values)
    for table, quantities in PROFILED_QUANTITIES.items():
        for column, quantity, unit, factor in quantities:
            frame = profiles.get((table, column))
            if frame is None or frame.empty:
                continue
            for index in frame.columns:
                meter_id = meters.get(f"{grid_iri}/{table}/{index}")
                if meter_id is not None:
                    series.append((meter_id, quantity, unit, factor, frame[index].to_numpy(float)))
    if not series:
        raise ReplayError(f"grid {grid.pk} has no profiled loads, generators or storage units with meters")
    start = start.astimezone(UTC)
    year_steps = len(series[0][4])
    first_step = (start.timetuple().tm_yday - 1) * STEPS_PER_DAY
    readings: list[dict] = []
    steps = 0
    for k in range(days * STEPS_PER_DAY):
        ts = (start + k * STEP).isoformat().replace("+00:00", "Z")
        step = (first_step + k) % year_steps
        readings.extend({"point": meter_id, "quantity": quantity, "ts": ts, "value": round(float(values[step]) * factor, 6), "unit": unit}
                        for meter_id, quantity, unit, factor, values in series)
        steps += 1
        if len(readings) >= readings_per_batch:
            yield orjson.dumps({"readings": readings}), len(readings), steps
            readings, steps = [], 0
    if readings:
        yield orjson.dumps({"readings": readings}), len(readings), steps

