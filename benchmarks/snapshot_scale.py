"""A snapshot load flow of the 10k-bus SimBench grid, telemetry to stored results: warm, cold, and what each part costs.

Prints, on a private PostgreSQL database (`BENCH_DATABASE_URL` with `_snapshot` appended, dropped and created afresh):
  * the warm snapshot of 1-MVLV-urban-all-0-sw (31k buses with the switches' auxiliary ones, 54k result rows), median
    of --repeat runs in this process: build (the run's model), solve (inputs + solve), store (rows, status, commit);
  * the cold snapshot, each in a fresh process (subprocess): the model from the disk cache (a machine that solved this
    content before), the model built (numba kernels from numba's disk cache), and the model built with the kernels
    compiled (what every new process paid before);
  * storing the same 54k rows three ways, side by side: the old path (a model instance and a conversion per value through
    `bulk_create`), the column-wise `bulk_create` (the embedded SQLite default's path) and binary COPY, with the ratio;
    the rows of the old path and of COPY are compared;
  * pinning a run's version: the write stamp (`grid_fingerprint`) next to reading and hashing the content;
  * `manage.py run_loadflow` of SimBench 1-MV-urban--0-sw in a fresh process (wall time, interpreter start included):
    as it runs now, and with no disk caches (the model built, the kernels compiled).
Goals (issue 11): warm ≤ 1 s, cold ≤ 3 s, `run_loadflow` of an MV grid ≤ 3 s.
Run: `.venv/bin/python benchmarks/snapshot_scale.py [--repeat 3] [--keep]`
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime

from _setup import ROOT, private_url, run_on_private_database, setup_django

BIG, MV = "1-MVLV-urban-all-0-sw", "1-MV-urban--0-sw"
AT = datetime(2016, 6, 21, 12, tzinfo=UTC)
COLD_MODES = {"disk": "model from the disk cache (a worker prepared it at the write)",
              "build": "model built, numba kernels from their disk cache",
              "compile": "model built, numba kernels compiled (before)"}


def import_grid(code: str):
    from django.conf import settings

    from ontology.converters.pandapower_net import simbench_document
    from twin import models, services

    participant = services.participant_for_cli("Benchmark utility")
    document = simbench_document(code, base_iri=settings.GRIDTWIN_BASE_IRI)
    models.Grid.objects.filter(source=f"simbench:{code}").delete()
    return services.grid_import_graph(graph=document, participant=participant, source=f"simbench:{code}").grid


def without_caches(mode: str) -> None:
    """In this process only: the model is built however the disk cache stands ("build"), and the kernels are compiled as
    before numba's disk cache was used ("compile")."""
    from twin.loadflow import services, solver

    if mode in ("build", "compile"):
        services._model_file_read = lambda key: None
    if mode == "compile":
        solver._numba_cached = True  # numba_disk_cache() does nothing: pandapower's kernels compile in this process


def timed_snapshot(grid) -> dict[str, float]:
    """One snapshot executed as a worker executes it, with build (run_model), solve (inputs + solve) and store (the rest:
    claim, violations, rows, status, commit) timed apart by wrapping the service's functions."""
    from twin import models
    from twin.loadflow import services

    spent = {"build": 0.0, "solve": 0.0}

    def wrap(name: str, phase: str):
        original = getattr(services, name)

        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[phase] += time.perf_counter() - began

        setattr(services, name, timed)
        return original

    began = time.perf_counter()
    run = services.loadflow_run_create(grid=grid, at=AT, trigger="command")
    created = time.perf_counter() - began
    originals = {name: wrap(name, phase) for name, phase in (("run_model", "build"), ("_inputs_for", "solve"), ("solve", "solve"))}
    try:
        began = time.perf_counter()
        services.loadflow_run_execute(run_id=run.pk)
        total = time.perf_counter() - began
    finally:
        for name, original in originals.items():
            setattr(services, name, original)
    run.refresh_from_db()
    if run.status != models.LoadFlowRun.Status.SUCCEEDED:
        raise SystemExit(f"snapshot failed: {run.error}")
    return {"create": created, "build": spent["build"], "solve": spent["solve"], "store": total - spent["build"] - spent["solve"],
            "total": total}


def child(mode: str) -> None:
    """A fresh process: one cold snapshot of the big grid (or, mode `command-compile`, `run_loadflow` without the caches)."""
    began = time.perf_counter()
    setup_django()
    from twin import models

    without_caches(mode.removeprefix("command-"))
    if mode.startswith("command-"):
        from django.core.management import call_command

        call_command("run_loadflow", MV, at=AT.isoformat())
        return
    figures = timed_snapshot(models.Grid.objects.get(source=f"simbench:{BIG}"))
    print(json.dumps({**figures, "setup": time.perf_counter() - began - figures["total"] - figures["create"]}))


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "BENCH_DATABASE_URL": private_url("snapshot"), "DEBUG": "0", "CELERY_BROKER_URL": "",
            "DATABASE_URL": private_url("snapshot"), "DJANGO_SETTINGS_MODULE": "config.settings.dev", "LOG_LEVEL": "WARNING"}


def cold(mode: str) -> tuple[dict, float]:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", mode], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"cold snapshot ({mode}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def run_loadflow_wall(mode: str | None) -> float:
    """Wall seconds of `run_loadflow MV` in a fresh process: the command itself, or (mode) through the child without caches."""
    command = ([sys.executable, __file__, "--child", f"command-{mode}"] if mode else
               [sys.executable, "manage.py", "run_loadflow", MV, "--at", AT.isoformat()])
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"run_loadflow failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - began


def old_store(run, model, layout, inputs, results, bus_ids) -> None:
    """The storage the service had before: a model instance per row and a conversion per value, through bulk_create."""
    import numpy as np

    from twin import models
    from twin.loadflow.inputs import SOURCES
    from twin.loadflow.services import BRANCH_FIELDS

    def num(value):
        return None if value is None or not np.isfinite(value) else float(value)

    models.BusResult.objects.bulk_create([
        models.BusResult(run=run, bus_id=bus_ids[iri], vm_pu=num(results.vm_pu[0, j]), va_degree=num(results.va_degree[0, j]),
                         p_mw=float(np.nan_to_num(results.bus_p_mw[0, j])), q_mvar=float(np.nan_to_num(results.bus_q_mvar[0, j])))
        for j, iri in enumerate(layout["bus"])
    ], batch_size=5000)
    models.BranchResult.objects.bulk_create([
        models.BranchResult(run=run, element=element, asset_iri=iri, **{name: num(values[name][0, j]) for name in BRANCH_FIELDS})
        for element, values in (("line", results.line), ("trafo", results.trafo))
        for j, iri in enumerate(layout[element])
    ], batch_size=5000)
    models.LoadFlowInput.objects.bulk_create([
        models.LoadFlowInput(run=run, element=element, asset_iri=iri, source=SOURCES[inputs.source[0, j]],
                             p_mw=float(inputs.p_mw[0, j]), q_mvar=float(inputs.q_mvar[0, j]),
                             measured_steps=int(inputs.source[0, j] == 0), filled_steps=int(inputs.source[0, j] != 0))
        for j, (element, iri) in enumerate(zip(model.injections.element, model.injections.iri, strict=True))
    ], batch_size=5000)


def stored_rows(run) -> list:
    from twin.loadflow.services import BRANCH_FIELDS

    return [list(run.bus_results.order_by("id").values_list("bus_id", "vm_pu", "va_degree", "p_mw", "q_mvar")),
            list(run.branch_results.order_by("id").values_list("element", "asset_iri", *BRANCH_FIELDS)),
            list(run.input_records.order_by("id").values_list("element", "asset_iri", "source", "p_mw", "q_mvar", "measured_steps",
                                                               "filled_steps"))]


def storage_paths(grid, repeat: int) -> None:
    from django.db import transaction

    from twin import models
    from twin.loadflow import services

    model, layout, inputs, results = services.snapshot_results(services.loadflow_run_create(grid=grid, at=AT))
    bus_ids = dict(models.Bus.objects.filter(grid=grid).values_list("iri", "id"))
    paths = {"old: instance + conversion per value, bulk_create": old_store,
             "column-wise bulk_create (the SQLite path)": lambda *a: services.snapshot_rows_store(*a, method="bulk"),
             "binary COPY from the arrays (PostgreSQL)": lambda *a: services.snapshot_rows_store(*a, method="copy")}
    seconds, rows = {name: [] for name in paths}, {}
    for _ in range(repeat):
        for name, store in paths.items():  # interleaved: the machine's load falls on every path alike
            run = services.loadflow_run_create(grid=grid, at=AT)
            began = time.perf_counter()
            with transaction.atomic():
                store(run, model, layout, inputs, results, bus_ids)
            seconds[name].append(time.perf_counter() - began)  # commit included (deferred foreign-key checks run there)
            rows[name] = run
    old_name, copy_name = next(iter(paths)), list(paths)[-1]
    count = sum(len(part) for part in stored_rows(rows[old_name]))
    old, copy = statistics.median(seconds[old_name]), statistics.median(seconds[copy_name])
    same = stored_rows(rows[old_name]) == stored_rows(rows[copy_name])
    print(f"storing {count} result rows (median of {repeat}, commit included):")
    for name, values in seconds.items():
        print(f"  {name:<52}{statistics.median(values):>8.2f} s")
    print(f"  ratio old / COPY = {old / copy:.1f}×; rows of the old path and of COPY identical: {same}")


def version_pin(grid, repeat: int) -> None:
    from twin import history

    fast, full = [], []
    for _ in range(repeat):
        began = time.perf_counter()
        history.grid_version_current(grid)
        fast.append(time.perf_counter() - began)
        began = time.perf_counter()
        history.grid_version_record(grid=grid, author=history.Author(via="benchmark"))  # what every run creation paid before
        full.append(time.perf_counter() - began)
    fast_s, full_s = statistics.median(fast), statistics.median(full)
    print(f"pinning a run's version: write stamp {fast_s:.3f} s, content read and hashed {full_s:.2f} s: ratio {full_s / fast_s:.0f}×")


def row(label: str, figures: dict) -> str:
    return (f"  {label:<52}{figures['total']:>7.2f} s  (build {figures['build']:.2f}, solve {figures['solve']:.2f}, "
            f"store {figures['store']:.2f}; run creation {figures['create']:.2f})")


def bench(args) -> None:
    from twin import models
    from twin.loadflow import services

    began = time.perf_counter()
    grid = import_grid(BIG)
    import_grid(MV)
    print(f"{BIG}: {models.Bus.objects.filter(grid=grid).count()} buses, imported with {MV} in {time.perf_counter() - began:.0f} s")
    services.loadflow_run_execute(run_id=services.loadflow_run_create(grid=grid, at=AT).pk)  # builds and caches the model
    warm = [timed_snapshot(grid) for _ in range(args.repeat)]
    middle = sorted(warm, key=lambda f: f["total"])[len(warm) // 2]
    print(f"snapshot of {BIG} (goal: warm ≤ 1 s, cold ≤ 3 s)")
    print(row(f"warm (median of {args.repeat}, this process)", middle))
    for mode, label in COLD_MODES.items():
        figures, wall = cold(mode)
        print(row(f"cold, {label}", figures) + f"; process {wall:.1f} s, Django setup {figures['setup']:.1f} s")
    storage_paths(grid, args.repeat)
    version_pin(grid, args.repeat)
    print(f"manage.py run_loadflow {MV} in a fresh process (goal ≤ 3 s)")
    first, now, before = run_loadflow_wall(None), run_loadflow_wall(None), run_loadflow_wall("compile")
    print(f"  now {now:.1f} s (the first after a change of the model code or content, which builds the model: {first:.1f} s); "
          f"without the disk caches (model built, kernels compiled) {before:.1f} s: ratio {before / now:.1f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the private database")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    run_on_private_database("snapshot", bench, args, keep=args.keep)


if __name__ == "__main__":
    main()
