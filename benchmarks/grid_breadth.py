"""Three grids beyond SimBench through the twin, each next to pandapower doing the same work, in one run.

1. Import: pandapower's `lv_schutterwald` (2,940 buses) through the twin — `net_to_graph` (pandapower → RDF) → SHACL
   validation + store (`grid_import_graph`) — against pandapower's own `from_json` of the same net's JSON (best of 3).
   (SmallGrid's CGMES import against pandapower's `from_cim` is `cgmes_sv_check.py`.)
2. Snapshot with PV buses: `case118` (53 voltage-controlled generators in service) imported, then the twin's snapshot — the solver
   alone (`twin.loadflow.solver.solve` on the run's model and inputs) and end to end (`loadflow_run_execute`: inputs, solve,
   stored rows) — against `pandapower.runpp` on the original net (enforce_q_lims=True as the twin's solver does,
   lightsim2grid=False, numba warm), best of --repeat each; max |Δvm_pu| over all buses (must be < 1e-6).
3. Time series: `mv_oberrhein` with its 153 sgen as PV, a year of 15-minute steps (2016, 35,136 steps; --steps N for fewer)
   through Celery workers on Redis and PostgreSQL (`loadflow_timeseries.start_workers`), the second of two runs (the first,
   one day, warms the workers), against pandapower's `run_timeseries` with ConstControl on the same absolute values,
   timed on --slice and 4 × --slice steps and extrapolated to the same number of steps (setup once + marginal cost per
   step), stated as such. Plus one step (2016-06-21 12:00) of the twin against `runpp` with the same values.

Profiles of part 3: SimBench's standard profiles of the reference year (the table of 1-MV-urban--0-sw): the 141 "MV/LV
Station" loads follow the aggregated LV profile `lv_semiurb4` (p and q), the 6 "MV Load"s the commercial `G0-A`, every
sgen the aggregated PV profile `lv_semiurb4`. The twin finds profiles by `Grid.source = "simbench:CODE"` and the assets'
`profile` names, so the grid is imported with source `simbench:1-MV-urban--0-sw`. mv_oberrhein ships its sgens with
scaling 0 (no PV at all): here they get scaling 1; the loads keep their 0.6.

Run: `.venv/bin/python benchmarks/grid_breadth.py [--steps 35136] [--slice 96] [--workers 2] [--repeat 5]`
(BENCH_DATABASE_URL, broker BENCH_BROKER_URL as in loadflow_timeseries.py).
"""

import argparse
import copy
import os
import time
import warnings
from datetime import UTC, datetime, timedelta

import numpy as np
from _setup import setup_django
from loadflow_timeseries import BROKER_URL, CORRECTNESS_STEP, YEAR_STEPS, run_through_workers, start_workers
from pandapower_networks import refusal

PROFILE_CODE = "1-MV-urban--0-sw"  # whose SimBench profile table part 3 borrows
LOAD_PROFILE = {"MV/LV Station": "lv_semiurb4", "MV Load": "G0-A"}
SGEN_PROFILE = "lv_semiurb4"
YEAR_START = datetime(2016, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=15)
TOLERANCE_VM_PU = 1e-6


def quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def best_of(count: int, function) -> float:
    """Smallest wall seconds of `count` calls (these machines are noisy)."""
    best = float("inf")
    for _ in range(count):
        began = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - began)
    return best


def import_grid(net, name: str, participant, *, source: str = ""):
    """net → RDF → SHACL + store, anew: (grid, seconds). Exits naming the refusal when the twin refuses the net."""
    from django.conf import settings

    from ontology.converters.pandapower_net import net_to_graph
    from twin import models, services

    grid_iri = f"{settings.GRIDTWIN_BASE_IRI}benchmark/grid-breadth/{name}"
    models.Grid.objects.filter(iri=grid_iri).delete()
    began = time.perf_counter()
    try:
        graph = net_to_graph(net, grid_iri=grid_iri, grid_name=name, owner_iri=participant.iri)
        grid = services.grid_import_graph(graph=graph, participant=participant, source=source or f"benchmark:{name}").grid
    except Exception as exc:
        raise SystemExit(f"the twin refuses {name}: {refusal(exc)}") from exc
    return grid, time.perf_counter() - began


def import_figures(participant, repeat: int) -> None:
    import pandapower as pp
    import pandapower.networks as pn

    net = quiet(pn.lv_schutterwald)
    text = pp.to_json(net)
    print(f"1. import of lv_schutterwald ({len(net.bus)} buses, {len(text) / 1e6:.1f} MB of JSON)", flush=True)
    _, twin_s = import_grid(net, "lv_schutterwald", participant)
    json_s = best_of(3, lambda: quiet(pp.from_json_string, text))
    print(f"   twin (net → RDF → SHACL → rows) {twin_s:.2f} s | pandapower from_json {json_s:.2f} s | ratio {twin_s / json_s:.1f}×")


def bus_vm(run, grid, net) -> np.ndarray:
    """The run's stored vm_pu in the order of the original net's buses."""
    from twin.loadflow import selectors

    vm = {row["bus__iri"]: row["vm_pu"] for row in selectors.bus_results(run)}
    return np.array([vm[f"{grid.iri}/bus/{i}"] for i in net.bus.index], dtype=float)


def snapshot_run(grid, at: datetime):
    """A snapshot run created and executed in this process: (run, seconds of `loadflow_run_execute`)."""
    from twin.loadflow.services import loadflow_run_create, loadflow_run_execute

    run = loadflow_run_create(grid=grid, at=at, trigger="command")
    began = time.perf_counter()
    loadflow_run_execute(run_id=run.pk)
    seconds = time.perf_counter() - began
    run.refresh_from_db()
    if run.status != run.Status.SUCCEEDED:
        raise SystemExit(f"{grid.name}: the twin's snapshot failed: {run.error}")
    return run, seconds


def snapshot_figures(participant, repeat: int) -> None:
    import pandapower as pp
    import pandapower.networks as pn

    from twin.loadflow.services import run_model, snapshot_results
    from twin.loadflow.solver import solve

    net = quiet(pn.case118)
    print(f"2. snapshot of case118 ({len(net.bus)} buses, {int(net.gen.in_service.sum())} generators with voltage control)", flush=True)
    grid, import_s = import_grid(net, "case118", participant)
    at = datetime(2016, 6, 21, 12, tzinfo=UTC)
    run, first_s = snapshot_run(grid, at)  # builds the model (cached per process and on disk): not timed
    end_to_end_s = min(snapshot_run(grid, at)[1] for _ in range(repeat))
    model, _ = run_model(run)
    _, _, inputs, _ = snapshot_results(run)
    solve_s = best_of(repeat, lambda: solve(model, inputs))
    options = {"enforce_q_lims": True, "lightsim2grid": False, "calculate_voltage_angles": True}
    reference = copy.deepcopy(net)
    quiet(pp.runpp, reference, **options)  # numba warm-up, and the reference results
    runpp_s = best_of(repeat, lambda: quiet(pp.runpp, copy.deepcopy(net), **options))
    dvm = float(np.max(np.abs(bus_vm(run, grid, net) - reference.res_bus.vm_pu.to_numpy())))
    print(f"   (import {import_s:.1f} s; first snapshot, model built or read from the disk cache, {first_s:.2f} s)")
    print(f"   twin solver {solve_s * 1e3:.1f} ms | twin snapshot end to end {end_to_end_s * 1e3:.0f} ms | "
          f"pandapower runpp {runpp_s * 1e3:.1f} ms | ratio solver {solve_s / runpp_s:.3f}×, end to end {end_to_end_s / runpp_s:.1f}× | "
          f"max |Δvm_pu| {dvm:.1e} {'ok' if dvm < TOLERANCE_VM_PU else f'FAILS (< {TOLERANCE_VM_PU:g})'}")


def oberrhein_net():
    """mv_oberrhein with profile names on its loads and sgens, sgen scaling 1 (module docstring)."""
    import pandapower.networks as pn

    net = quiet(pn.mv_oberrhein)
    net.load["profile"] = net.load["type"].map(LOAD_PROFILE)
    if net.load["profile"].isna().any():
        raise SystemExit(f"mv_oberrhein: loads of a type without profile: {sorted(set(net.load.type[net.load.profile.isna()]))}")
    net.sgen["profile"] = SGEN_PROFILE
    net.sgen["scaling"] = 1.0
    return net


def absolute_values(net, rows: np.ndarray) -> dict[tuple[str, str], "object"]:
    """(table, column) → DataFrame (steps × elements) of the absolute values the profiles give at `rows` of the year."""
    import pandas as pd

    from twin.loadflow.profiles import simbench_profiles

    profiles = simbench_profiles(PROFILE_CODE)
    found = {}
    for table, columns in (("load", ("p_mw", "q_mvar")), ("sgen", ("p_mw",))):
        frame = net[table]
        for column in columns:
            factors = profiles.q if column == "q_mvar" else profiles.p
            values = np.column_stack([factors[(table, name)][rows] * declared
                                      for name, declared in zip(frame.profile, frame[column].to_numpy(float), strict=True)])
            found[(table, column)] = pd.DataFrame(values, columns=frame.index)
    return found


def plain_timeseries(net, steps: int, year_steps: int) -> tuple[float, float, np.ndarray]:
    """pandapower run_timeseries with ConstControl: (best seconds of `steps` steps, extrapolated to `year_steps`, vm_pu of the
    first `steps` steps × buses).

    As `loadflow_timeseries.plain_year`: numba warm, lightsim2grid=False, a fresh copy per timing, `steps` and 4 × `steps`
    timed (best of two), setup once plus the marginal cost per step × `year_steps`. The OutputWriter logs res_bus.vm_pu
    only (a table of run_timeseries' fast path).
    """
    import pandapower as pp
    from pandapower.control import ConstControl
    from pandapower.timeseries import DFData, OutputWriter, run_timeseries

    values = absolute_values(net, np.arange(4 * steps))
    controlled = copy.deepcopy(net)
    for (table, column), frame in values.items():
        ConstControl(controlled, element=table, variable=column, element_index=frame.columns, data_source=DFData(frame),
                     profile_name=frame.columns)
    OutputWriter(controlled, output_path=None, log_variables=[("res_bus", "vm_pu")])
    warm = copy.deepcopy(controlled)
    quiet(pp.runpp, warm, lightsim2grid=False)
    quiet(run_timeseries, warm, time_steps=range(2), lightsim2grid=False, verbose=False)
    timed, solved = [], []

    def one(count: int) -> None:
        fresh = copy.deepcopy(controlled)
        quiet(run_timeseries, fresh, time_steps=range(count), lightsim2grid=False, verbose=False)
        solved.append(fresh)

    for count in (steps, 4 * steps):
        timed.append(best_of(2, lambda count=count: one(count)))
        print(f"   pandapower run_timeseries {count} steps: {timed[-1]:.1f} s", flush=True)
    per_step = max(timed[1] - timed[0], 0.0) / (3 * steps)
    setup = max(timed[0] - per_step * steps, 0.0)
    vm_pu = solved[0].output_writer.iat[0, 0].output["res_bus.vm_pu"].to_numpy(float)  # columns: positions of net.bus
    return timed[0], setup + per_step * year_steps, vm_pu


def twin_series_vm(run_id: int, grid, net, steps: int) -> np.ndarray:
    """vm_pu of the first `steps` steps × the original net's buses, from the run's stored chunks (float32)."""
    from twin import models
    from twin.loadflow import storage

    run = models.LoadFlowRun.objects.get(pk=run_id)
    position = {iri: j for j, iri in enumerate(run.layout["bus"])}
    columns = [position[f"{grid.iri}/bus/{i}"] for i in net.bus.index]
    parts, found = [], 0
    for chunk in run.chunks.order_by("index").only("steps", "arrays"):
        if found >= steps:
            break
        parts.append(storage.unpack(chunk.arrays, ("vm_pu",))["vm_pu"][:, columns])
        found += chunk.steps
    return np.concatenate(parts)[:steps].astype(float)


def twin_timeseries(grid, steps: int) -> tuple[float, int, int]:
    """A time series of `steps` steps from 2016-01-01 through the Celery workers: (wall seconds enqueue → succeeded, bytes, run id)."""
    from twin import models
    from twin.loadflow.services import loadflow_run_create

    run = loadflow_run_create(grid=grid, kind=models.LoadFlowRun.Kind.TIMESERIES, start=YEAR_START, end=YEAR_START + steps * STEP,
                              trigger="command")
    seconds = run_through_workers(run, "mv_oberrhein")
    return seconds, sum(len(c.arrays or b"") for c in run.chunks.all()), run.pk


def one_step_check(grid, net) -> float:
    """max |Δvm_pu| of the twin's snapshot at CORRECTNESS_STEP against runpp on the net with the same absolute values."""
    import pandapower as pp

    run, _ = snapshot_run(grid, YEAR_START + CORRECTNESS_STEP * STEP)
    reference = copy.deepcopy(net)
    for (table, column), frame in absolute_values(net, np.array([CORRECTNESS_STEP])).items():
        reference[table].loc[frame.columns, column] = frame.iloc[0].to_numpy()
    quiet(pp.runpp, reference, lightsim2grid=False, calculate_voltage_angles=True, tolerance_mva=1e-9)
    return float(np.nanmax(np.abs(bus_vm(run, grid, net) - reference.res_bus.vm_pu.to_numpy())))


def timeseries_figures(participant, steps: int, slice_steps: int, workers: int) -> None:
    net = oberrhein_net()
    print(f"3. time series of mv_oberrhein ({len(net.bus)} buses, {len(net.load)} loads, {len(net.sgen)} PV sgens), "
          f"{steps} steps of 15 min, profiles of {PROFILE_CODE}", flush=True)
    grid, import_s = import_grid(net, "mv_oberrhein", participant, source=f"simbench:{PROFILE_CODE}")
    dvm = one_step_check(grid, net)
    print(f"   (import {import_s:.1f} s) one step (2016-06-21 12:00) twin vs runpp: max |Δvm_pu| {dvm:.1e} "
          f"{'ok' if dvm < TOLERANCE_VM_PU else f'FAILS (< {TOLERANCE_VM_PU:g})'}", flush=True)
    processes = start_workers(workers)
    try:
        cold, _, _ = twin_timeseries(grid, 96)  # warms the workers (imports, numba, the model): not the figure
        print(f"   (warm-up: one day through the workers just started {cold:.1f} s)", flush=True)
        twin_s, stored, run_id = twin_timeseries(grid, steps)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    plain_s, plain_total, plain_vm = plain_timeseries(net, slice_steps, steps)
    compared = min(slice_steps, steps)
    dvm = float(np.nanmax(np.abs(twin_series_vm(run_id, grid, net, compared) - plain_vm[:compared])))
    partial = "" if steps == YEAR_STEPS else f" — {steps} steps, not the year's {YEAR_STEPS}"
    print(f"   twin ({workers} Celery workers, {steps} steps, {stored / 1e6:.1f} MB stored) {twin_s:.1f} s | pandapower run_timeseries "
          f"{slice_steps} steps {plain_s:.1f} s → {steps} steps extrapolated {plain_total:.0f} s | ratio twin / pandapower "
          f"{twin_s / plain_total:.3f} (pandapower / twin {plain_total / twin_s:.0f}×){partial}")
    print(f"   first {compared} steps, twin's stored series (float32) vs run_timeseries: max |Δvm_pu| {dvm:.1e} "
          f"{'ok' if dvm < TOLERANCE_VM_PU else f'FAILS (< {TOLERANCE_VM_PU:g})'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=YEAR_STEPS, help="steps of the twin's time series (default: the year 2016)")
    parser.add_argument("--slice", type=int, default=96, help="steps of run_timeseries to time (and 4 ×), extrapolated")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5, help="best of N for the snapshot timings")
    args = parser.parse_args()
    os.environ["CELERY_BROKER_URL"] = BROKER_URL
    setup_django()
    from twin import services

    participant = services.participant_for_cli("Benchmark utility")
    import_figures(participant, args.repeat)
    snapshot_figures(participant, args.repeat)
    timeseries_figures(participant, args.steps, args.slice, args.workers)


if __name__ == "__main__":
    main()
