"""A year of 15-minute load flows through the real Celery path, next to pandapower's run_timeseries.

For each grid (default SimBench 1-MV-urban--0-sw and 1-LV-urban6--0-sw):
  * gridtwin: a time-series run of 35,136 steps (2016) solved and stored by N Celery worker processes
    on the Redis broker and PostgreSQL, wall seconds from enqueue to `succeeded`, and bytes stored — the
    second of two runs, with the workers up and warm, as long-running workers are (the first is
    printed to stderr);
  * plain: pandapower `run_timeseries` (SimBench const controllers, lightsim2grid off, numba warm) on the
    original net, timed on --slice and 4 × --slice steps (best of two each) and extrapolated to the year (setup once plus the
    marginal cost per step) — stated as such;
and one snapshot of 1-MVLV-urban-all-0-sw from the twin to stored results.
Run: `.venv/bin/python benchmarks/loadflow_timeseries.py [--codes …] [--workers 2] [--slice 96]`
"""

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from _setup import ROOT, setup_django

YEAR_STEPS = 35_136
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14")


def start_workers(count: int) -> list[subprocess.Popen]:
    """Celery worker processes (one slot each) on the benchmark database and broker."""
    env = {**os.environ, "CELERY_BROKER_URL": BROKER_URL, "DJANGO_SETTINGS_MODULE": "config.settings.dev"}
    return [
        subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "-c", "1", "-n", f"bench{i}@%h",
                          "--loglevel", "WARNING", "--without-gossip", "--without-mingle"], cwd=ROOT, env=env)
        for i in range(count)
    ]


def import_fresh(code: str, participant):
    """The SimBench grid imported anew (earlier benchmark runs and their results are dropped)."""
    from django.conf import settings

    from ontology.converters.pandapower_net import simbench_document
    from twin import models, services

    document = simbench_document(code, base_iri=settings.GRIDTWIN_BASE_IRI)
    models.Grid.objects.filter(source=f"simbench:{code}").delete()
    models.Grid.objects.filter(iri=f"{settings.GRIDTWIN_BASE_IRI}simbench/{code}").delete()
    return services.grid_import_graph(graph=document, participant=participant, source=f"simbench:{code}").grid


def run_through_workers(run, label: str) -> float:
    """Enqueue a queued run, show its steps as the workers solve them, and return the wall seconds to `succeeded`."""
    from twin import tasks

    began = time.perf_counter()
    tasks.loadflow_run.delay(run.pk)
    while True:
        run.refresh_from_db()
        if run.status in (run.Status.SUCCEEDED, run.Status.FAILED):
            break
        print(f"\r  {label}: {run.steps_done}/{run.steps_total} steps", end="", flush=True, file=sys.stderr)
        time.sleep(0.05)
    seconds = time.perf_counter() - began
    print(file=sys.stderr)
    if run.status != run.Status.SUCCEEDED:
        raise SystemExit(f"{label}: run failed: {run.error}")
    return seconds


def gridtwin_year(code: str, participant) -> tuple[float, int, int]:
    """(wall seconds, steps, bytes stored) of a year time series run through Celery."""

    from twin import models
    from twin.loadflow.services import loadflow_run_create

    grid = import_fresh(code, participant)
    start, end = datetime(2016, 1, 1, tzinfo=UTC), datetime(2017, 1, 1, tzinfo=UTC)
    run = loadflow_run_create(grid=grid, kind=models.LoadFlowRun.Kind.TIMESERIES, start=start, end=end, trigger="command")
    seconds = run_through_workers(run, code)
    stored = sum(len(c.arrays or b"") for c in run.chunks.all())
    return seconds, run.steps_total, stored


def plain_year(code: str, steps: int, year_steps: int) -> tuple[float, float]:
    """pandapower run_timeseries on the original SimBench net: (seconds for `steps` steps, year extrapolated).

    Fair to pandapower: numba warmed up first, lightsim2grid=False explicitly (pandapower 3 would pick it
    by itself), the year's own first steps, a fresh copy of the net per timing (a second run on the same
    net and writer is 2–5× slower). Timed for `steps` and 4 × `steps` steps (best of two); the year is the setup once
    plus the marginal cost per step × the year's steps, so a fixed setup is not multiplied by 366.
    """
    import copy

    import pandapower as pp
    import simbench
    from pandapower.timeseries import run_timeseries

    net = simbench.get_simbench_net(code)
    net.trafo["tap_changer_type"] = net.trafo["tap_changer_type"].fillna("Ratio")
    profiles = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
    simbench.apply_const_controllers(net, profiles)
    warm = copy.deepcopy(net)
    pp.runpp(warm, lightsim2grid=False)  # numba warm-up outside the timing
    run_timeseries(warm, time_steps=range(2), lightsim2grid=False, verbose=False)
    timed = []
    for count in (steps, 4 * steps):
        best = float("inf")
        for _ in range(2):  # best of two: these machines are noisy
            fresh = copy.deepcopy(net)
            began = time.perf_counter()
            run_timeseries(fresh, time_steps=range(count), lightsim2grid=False, verbose=False)
            best = min(best, time.perf_counter() - began)
        timed.append(best)
    per_step = max(timed[1] - timed[0], 0.0) / (3 * steps)
    setup = max(timed[0] - per_step * steps, 0.0)
    return timed[0], setup + per_step * year_steps


def mvlv_snapshot(participant) -> float:
    """Seconds for one snapshot of the 10k-bus grid: inputs, solve, store (in this process)."""

    from twin import models
    from twin.loadflow.services import loadflow_run_create, loadflow_run_execute

    grid = import_fresh("1-MVLV-urban-all-0-sw", participant)
    run = loadflow_run_create(grid=grid, at=datetime(2016, 6, 21, 12, tzinfo=UTC), trigger="command")
    began = time.perf_counter()
    loadflow_run_execute(run_id=run.pk)
    seconds = time.perf_counter() - began
    run.refresh_from_db()
    if run.status != models.LoadFlowRun.Status.SUCCEEDED:
        raise SystemExit(f"snapshot failed: {run.error}")
    summary = run.summary
    print(f"  vm_pu {summary['vm_min_pu']:.4f}–{summary['vm_max_pu']:.4f}, max line loading {summary['line_loading_max_percent']:.1f} %")
    return seconds


CORRECTNESS_STEP = 96 * 172 + 48  # 2016-06-21 12:00: PV high, load low


def correctness(participant) -> list[tuple[str, float, float]]:
    """Every SimBench LV and MV grid (scenario 0, with switches): the twin's snapshot against pandapower on the original net.

    The same profile step on both sides; pandapower with lightsim2grid=False, taps applied (simbench issue #69).
    Returns (code, max |Δvm_pu|, max |Δloading_percent|) per grid.
    """
    import numpy as np
    import simbench

    from twin.loadflow import selectors
    from twin.loadflow.profiles import simbench_reference
    from twin.loadflow.services import loadflow_run_create, loadflow_run_execute

    codes = [c for c in simbench.collect_all_simbench_codes()
             if c.endswith("--0-sw") and ("-LV-" in c or "-MV-" in c) and "MVLV" not in c and "HV" not in c]
    found = []
    for code in codes:
        grid = import_fresh(code, participant)
        at = datetime(2016, 1, 1, tzinfo=UTC) + CORRECTNESS_STEP * timedelta(minutes=15)
        run = loadflow_run_create(grid=grid, at=at, trigger="command")
        loadflow_run_execute(run_id=run.pk)
        run.refresh_from_db()
        if run.status != run.Status.SUCCEEDED:
            raise SystemExit(f"{code}: snapshot failed: {run.error}")
        net = simbench_reference(simbench.get_simbench_net(code), CORRECTNESS_STEP)
        prefix = f"{grid.iri}/"
        vm = {row["bus__iri"]: row["vm_pu"] for row in selectors.bus_results(run)}
        dvm = np.nanmax(np.abs(np.array([vm[f"{prefix}bus/{i}"] for i in net.bus.index], dtype=float) - net.res_bus.vm_pu.to_numpy()))
        dloading = 0.0
        for element, frame in (("line", net.res_line), ("trafo", net.res_trafo)):
            loading = {row["asset_iri"]: row["loading_percent"] for row in selectors.branch_results(run, element)}
            twin = np.array([loading[f"{prefix}{element}/{i}"] for i in frame.index], dtype=float)
            dloading = max(dloading, float(np.nanmax(np.abs(twin - frame.loading_percent.to_numpy()), initial=0.0)))
        found.append((code, float(dvm), dloading))
        print(f"  {code:<22} max |Δvm_pu| {dvm:.1e}  max |Δloading_percent| {dloading:.1e}  "
              f"{'ok' if dvm < 1e-6 and dloading < 1e-4 else 'FAILS (1e-6 / 1e-4)'}", flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codes", nargs="+", default=["1-MV-urban--0-sw", "1-LV-urban6--0-sw"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slice", type=int, default=96, help="steps of run_timeseries to time (extrapolated)")
    parser.add_argument("--correctness-only", action="store_true", help="only the snapshot check of every SimBench LV and MV grid")
    parser.add_argument("--skip-correctness", action="store_true", help="time only (the snapshot check takes ~2 minutes)")
    args = parser.parse_args()
    os.environ["CELERY_BROKER_URL"] = BROKER_URL
    setup_django()
    from twin import services

    participant = services.participant_for_cli("Benchmark utility")
    if not args.skip_correctness:
        print("correctness: the twin's snapshot vs pandapower on the original SimBench net, every LV and MV grid (2016-06-21 12:00)")
        failing = [code for code, dvm, dloading in correctness(participant) if not (dvm < 1e-6 and dloading < 1e-4)]
        if failing:
            raise SystemExit(f"correctness fails on {', '.join(failing)}")
    if args.correctness_only:
        return
    workers = start_workers(args.workers)
    try:
        print(f"{'grid':<22}{'gridtwin s':>12}{'MB stored':>11}{'plain s (slice)':>17}{'plain s (year, extrap.)':>25}{'ratio':>9}")
        for code in args.codes:
            cold, _, _ = gridtwin_year(code, participant)  # the first run after the workers started: not timed
            seconds, steps, stored = gridtwin_year(code, participant)
            print(f"  ({code}: first run after the workers started {cold:.1f} s)", file=sys.stderr)
            plain, year = plain_year(code, args.slice, steps)
            print(f"{code:<22}{seconds:>12.1f}{stored / 1e6:>11.1f}{plain:>17.1f}{year:>25.0f}{year / seconds:>8.0f}×  "
                  f"(goal ≥ 50×; MV year < 30 s)")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
    print("snapshot of 1-MVLV-urban-all-0-sw (twin → inputs → solve → stored results)")
    print(f"  {mvlv_snapshot(participant):.1f} s")


if __name__ == "__main__":
    main()
