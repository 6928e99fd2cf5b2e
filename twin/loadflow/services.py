"""Writes of the load-flow engine: create runs, execute snapshots, plan and solve time-series chunks, fail cleanly.

A run's life: `loadflow_run_create` (validates the request, 4xx on bad input) → queued →
`loadflow_run_execute` claims it (running) → a snapshot is solved and stored in one transaction with
its status; a time series is cut into chunks that `loadflow_chunk_solve` solves independently (any
worker, any order, a redelivered chunk is simply redone); the chunk that completes the run finalizes
it. Any error ends the run as failed with its reason, and deletes whatever chunks had stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import pickle
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Sum
from django.db.models.functions import Length
from django.utils import timezone

from ontology.errors import OntologyError
from twin import history, models
from twin.loadflow import hosting, result_rows, scenarios, storage
from twin.loadflow.inputs import SOURCES, Injections, StepInputs, build_inputs, step_times
from twin.loadflow.result_rows import Column
from twin.loadflow.solver import MAX_ITERATION, GridModel, LoadFlowError, StepResults, build_model, bus_loads, solve, solve_rows
from twin.loadflow.violations import Limits, find_violations, merge_adjacent
from twin.transient import TRANSIENT_DATABASE_ERRORS

logger = logging.getLogger(__name__)
Run = models.LoadFlowRun
SOLVER = "pandapower Ybus; batch fixed point (SuperLU), lightsim2grid NRSing_KLU where it stops"  # ≤ 100 characters


class LoadFlowRequestError(OntologyError):
    """A load-flow request that cannot be run as asked (bad period, unknown asset, no slack …); answered with 4xx."""

    reason = "invalid_loadflow_request"
    status = 400

    def __init__(self, message: str, *, reason: str | None = None, status: int | None = None, node: str | None = None):
        super().__init__(message, node=node)
        self.reason = reason or self.reason
        self.status = status or self.status


# --- creating runs --------------------------------------------------------------------------------


def _floor(t: datetime, step: timedelta) -> datetime:
    epoch = t.replace(hour=0, minute=0, second=0, microsecond=0)
    return epoch + ((t - epoch) // step) * step


def _check_parameters(grid: models.Grid, parameters: dict) -> None:
    band = Limits.of(parameters)
    if not 0 < band.vm_min_pu < band.vm_max_pu < 2:
        raise LoadFlowRequestError("the voltage band must satisfy 0 < vm_min_pu < vm_max_pu < 2", reason="invalid_band")
    if not band.max_loading_percent > 0 or any(v <= 0 for v in band.loading_limits.values()):
        raise LoadFlowRequestError("loading limits must be greater than 0 %", reason="invalid_limit")
    if not (models.ExternalGrid.objects.filter(grid=grid, in_service=True, retired_at__isnull=True).exists()
            or models.SynchronousMachine.objects.filter(grid=grid, in_service=True, retired_at__isnull=True,
                                                        reference_priority__gt=0).exists()):
        raise LoadFlowRequestError("the grid has no slack to solve against: no external grid in service and no machine in service "
                                   "with a reference priority", reason="no_slack", status=422)
    scenarios.check(grid, parameters.get("scenario"))
    for name in ("max_kw", "tolerance_kw"):
        value = parameters.get(name, 1.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e7:
            raise LoadFlowRequestError(f"{name} must be a number of kW greater than 0", reason="invalid_parameter")
    feeder = parameters.get("feeder")
    if feeder is not None and not models.Bus.objects.filter(grid=grid, feeder__iri=feeder).exists():
        raise LoadFlowRequestError("the feeder is not in the grid (or has no buses)", reason="invalid_feeder", status=422,
                                   node=str(feeder))


def loadflow_run_create(*, grid: models.Grid, kind: str = Run.Kind.SNAPSHOT, at: datetime | None = None,
                        start: datetime | None = None, end: datetime | None = None, step_minutes: int = 15,
                        parameters: dict | None = None, user=None, trigger: str = "api") -> Run:
    """Validate a request and store it as a queued run (the caller enqueues it). Raises LoadFlowRequestError (4xx).

    Snapshots and what-ifs solve one time `at` (default now, floored to the step); time series and
    hosting capacity a period [start, end) of steps of `step_minutes` (at most GRIDTWIN_LOADFLOW_MAX_STEPS).
    """
    parameters = dict(parameters or {})
    if kind not in Run.Kind.values:
        raise LoadFlowRequestError(f"unknown kind {kind!r}: one of {', '.join(Run.Kind.values)}", reason="invalid_kind")
    if not (isinstance(step_minutes, int) and 0 < step_minutes <= 1440 and 1440 % step_minutes == 0):
        raise LoadFlowRequestError("step_minutes must divide a day (1, 5, 10, 15, 30, 60 … 1440)", reason="invalid_step")
    step = timedelta(minutes=step_minutes)
    periodic = kind == Run.Kind.TIMESERIES or kind == Run.Kind.HOSTING_CAPACITY or (kind == Run.Kind.WHATIF and start)
    if periodic:
        if start is None or end is None:
            raise LoadFlowRequestError("a time series needs start and end", reason="invalid_period")
        for value in (start, end):
            if timezone.is_naive(value):
                raise LoadFlowRequestError("start and end need a time zone", reason="invalid_period")
        steps = math.ceil((end - start) / step)
        if steps <= 0:
            raise LoadFlowRequestError("end must be after start", reason="invalid_period")
        if steps > settings.GRIDTWIN_LOADFLOW_MAX_STEPS:
            raise LoadFlowRequestError(f"the period has {steps} steps, more than the limit of {settings.GRIDTWIN_LOADFLOW_MAX_STEPS}",
                                       reason="period_too_long")
        at = None
    else:
        at = _floor(at or timezone.now(), step)
        if timezone.is_naive(at):
            raise LoadFlowRequestError("the time needs a time zone", reason="invalid_time")
        start = end = None
        steps = 1
    if kind == Run.Kind.WHATIF and not parameters.get("scenario"):
        raise LoadFlowRequestError("a what-if run needs parameters.scenario", reason="invalid_scenario")
    _check_parameters(grid, parameters)
    pinned = history.grid_version_current(grid)  # the run solves this version, whatever is written after it
    return Run.objects.create(grid=grid, kind=kind, at=at, start=start, end=end, step_minutes=step_minutes, parameters=parameters,
                              requested_by=user if getattr(user, "is_authenticated", False) else None, trigger=trigger,
                              steps_total=steps, version=pinned, grid_version=pinned.number)


def loadflow_schedule_snapshots(*, at: datetime | None = None) -> list[Run]:
    """A queued snapshot for every grid that has a slack (the Celery beat job); grids without one are skipped."""
    runs = []
    for grid in models.Grid.objects.filter(externalgrids__in_service=True).distinct():
        runs.append(loadflow_run_create(grid=grid, at=at, trigger="schedule"))
    return runs


# --- the model of a run (cached per process by the content hash of its version: the chunks of a run, and later runs on the same
# content, reuse it; a write makes a new version with another hash, so no write leaves a cached model stale; and on disk, so a new
# process — a `run_loadflow` command, a replaced worker — neither imports pandapower nor builds the net again) ---------------------

_MODELS: OrderedDict[tuple, tuple[GridModel, dict]] = OrderedDict()
_MODEL_CACHE_SIZE = 4
MODEL_FILES_KEPT = 32  # the disk cache keeps the models used last (a 10k-bus grid's is ~7 MB)
MODEL_FILE_FORMAT = 1  # part of the disk cache's key: change it when GridModel's fields change, and older files are not read
# The code that turns a version's content into a model: its text is part of the disk cache's key, so a changed converter or
# solver never reads a model an older one built.
MODEL_SOURCES = ("pandapower_adapter.py", "rdf_codec.py", "history.py", "loadflow/inputs.py", "loadflow/scenarios.py",
                 "loadflow/solver.py", "loadflow/services.py")


def run_model(run: Run, *, with_scenario: bool = True) -> tuple[GridModel, dict[str, list[str]]]:
    """The solver model of the run's grid (with its scenario applied) and the layout: IRIs of buses, lines, trafos in order."""
    scenario = run.parameters.get("scenario") if with_scenario else None
    version = run_version(run)
    key = _model_key(version.content_hash, scenario)
    if key in _MODELS:
        _MODELS.move_to_end(key)
        return _MODELS[key]
    found = _model_file_read(key)
    if found is None:
        found = _model_file_write(key, _model_build(version, scenario))
    else:
        found[0]._net_source = lambda: _model_net(_version_with(version.content_hash), scenario)[0]
    _MODELS[key] = found
    while len(_MODELS) > _MODEL_CACHE_SIZE:
        _MODELS.popitem(last=False)
    return found


def _model_key(content_hash: str, scenario: dict | None) -> tuple[str, str]:
    return content_hash, json.dumps(scenario, sort_keys=True)  # the model is built from nothing else


def loadflow_model_prepare(*, grid_id: int) -> bool:
    """Build the model of the grid's latest version into the disk cache ahead of its first run; False when it is there.

    A worker does this after every write of a grid (`twin.tasks.loadflow_model_prepare`, GRIDTWIN_LOADFLOW_PREPARE_ON_WRITE),
    so a run after the write, in any process of the machine, reads the model instead of building it.
    """
    version = models.GridVersion.objects.defer("snapshot").filter(grid_id=grid_id).order_by("-number").first()
    if version is None:  # the grid was deleted since
        return False
    key = _model_key(version.content_hash, None)
    if _model_file(key).exists():
        return False
    try:
        built = _model_build(version, None)
    except LoadFlowError as exc:  # a grid that cannot be solved yet (no slack …): its runs say why
        logger.info("load-flow model of grid %s not prepared: %s", grid_id, exc.message)
        return False
    _model_file_write(key, built)
    return True


def _version_with(content_hash: str) -> models.GridVersion:
    """A version of that content (any grid's: the content is the same), for a model whose net is asked for later."""
    return models.GridVersion.objects.defer("snapshot").filter(content_hash=content_hash).latest("pk")


def _model_net(grid_version: models.GridVersion, scenario: dict | None):
    """(the pandapower net of the version with the scenario applied, its index, IRI by table and net index)."""
    net, index = history.content_net(history.version_content(grid_version))
    iri_of = {table: {i: iri for iri, i in indices.items()} for table, indices in index.elements.items()}
    if scenario:
        scenarios.apply(net, iri_of, index, scenario)
    return net, index, iri_of


def _model_build(grid_version: models.GridVersion, scenario: dict | None) -> tuple[GridModel, dict[str, list[str]]]:
    net, index, iri_of = _model_net(grid_version, scenario)
    bus_iri = {i: iri for iri, i in index.bus.items()}
    layout = {"bus": [bus_iri[i] for i in net.bus.index.tolist()],
              "line": [iri_of["line"][i] for i in net.line.index.tolist()],
              "trafo": [iri_of["trafo"][i] for i in net.trafo.index.tolist()]}
    return build_model(net, Injections.of_net(net, iri_of)), layout


def _model_file(key: tuple) -> Path:
    """The disk cache's file of a model: named by the content hash, the scenario, the file format, pandapower's version (it
    built the admittances) and the model-building code, so a file is only ever read for the model it holds."""
    name = hashlib.sha256(json.dumps([*key, MODEL_FILE_FORMAT, version("pandapower"), _model_code()]).encode()).hexdigest()
    return Path(settings.BASE_DIR) / "var" / "cache" / "loadflow-models" / f"{name}.pkl"


@functools.cache
def _model_code() -> str:
    """SHA-256 of the model-building code (MODEL_SOURCES), read once per process."""
    package = Path(models.__file__).resolve().parent.parent
    return hashlib.sha256(b"".join((package / name).read_bytes() for name in MODEL_SOURCES)).hexdigest()


def _model_file_read(key: tuple) -> tuple[GridModel, dict] | None:
    """The model and layout of the disk cache's file for `key`, or None (no file, or one this code cannot read)."""
    path = _model_file(key)
    try:
        with path.open("rb") as handle:
            found = pickle.load(handle)  # noqa: S301  # nosec B301  # our own cache file (var/cache), written by _model_file_write
        with contextlib.suppress(OSError):
            path.touch()  # used: kept longest by _model_files_prune
        return found
    except FileNotFoundError:
        return None
    except Exception:  # a truncated or outdated file: build the model again (and write it anew)
        logger.warning("unreadable cached load-flow model %s: building it again", path, exc_info=True)
        return None


def _model_file_write(key: tuple, found: tuple[GridModel, dict]) -> tuple[GridModel, dict]:
    """Write the model (without its pandapower net and factorisation) to the disk cache, atomically; returns it."""
    model, layout = found
    path = _model_file(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        with partial.open("wb") as handle:
            bare = dataclasses.replace(model, _net=None, _net_source=None, _pq_factor=None)
            pickle.dump((bare, layout), handle, protocol=pickle.HIGHEST_PROTOCOL)
        partial.replace(path)
        _model_files_prune(path.parent)
    except OSError:  # a read-only or full disk: the model still serves this process
        logger.warning("could not cache the load-flow model in %s", path, exc_info=True)
    return found


def _model_files_prune(folder: Path) -> None:
    """Keep the MODEL_FILES_KEPT most recently used files (a read touches its file): what-if scenarios each make one."""
    used = {}
    for file in folder.glob("*.pkl"):
        with contextlib.suppress(FileNotFoundError):  # another process pruned it first
            used[file] = file.stat().st_mtime
    for stale in sorted(used, key=used.get, reverse=True)[MODEL_FILES_KEPT:]:
        stale.unlink(missing_ok=True)


def run_version(run: Run) -> models.GridVersion:
    """The grid version a run solves: the one it pinned, or (a run stored without one) the grid's version now, pinned to it."""
    if run.version_id is None:
        pinned = history.grid_version_current(run.grid)
        Run.objects.filter(pk=run.pk, version__isnull=True).update(version=pinned, grid_version=pinned.number)
        run.version_id, run.grid_version = pinned.pk, pinned.number
    return models.GridVersion.objects.defer("snapshot").get(pk=run.version_id)


@functools.cache  # the code a process runs does not change under it (reading package metadata costs ~15 ms a package)
def _versions() -> dict[str, str]:
    return {name: version(name) for name in ("pandapower", "lightsim2grid", "numpy", "scipy")}


# --- executing ------------------------------------------------------------------------------------


def loadflow_run_claim(*, run_id: int, redelivered: bool = False) -> Run | None:
    """Mark a queued run running (or take over a running one whose worker died); None when someone else has it.

    Every delivery that claims the run is counted (`timings["deliveries"]`, in the run's row): a run whose worker is
    killed each time (the hard time limit, out of memory) fails as `too_many_attempts` once it has been started
    GRIDTWIN_LOADFLOW_MAX_ATTEMPTS times, instead of being redelivered for ever (late acknowledgement).
    """
    statuses = [Run.Status.QUEUED, Run.Status.RUNNING] if redelivered else [Run.Status.QUEUED]
    limit = settings.GRIDTWIN_LOADFLOW_MAX_ATTEMPTS
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id, status__in=statuses).first()
        if run is None:
            return None
        deliveries = int(run.timings.get("deliveries", 0)) + 1
        if deliveries <= limit:
            Run.objects.filter(pk=run_id).update(status=Run.Status.RUNNING, started_at=timezone.now(), solver=SOLVER,
                                                 versions=_versions(), timings={**run.timings, "deliveries": deliveries})
            logger.info("load-flow run %s: delivery %s", run_id, deliveries)
            return Run.objects.select_related("grid").get(pk=run_id)
    loadflow_run_fail(run_id=run_id, reason="too_many_attempts",
                      message=f"the run was started {limit} times without finishing (its worker was lost or killed at the time "
                              f"limit of {settings.CELERY_TASK_TIME_LIMIT} s each time)")
    return None


def _time_limit_message() -> str:
    return f"the work exceeded the worker's time limit ({settings.CELERY_TASK_SOFT_TIME_LIMIT} s)"


def loadflow_run_execute(*, run_id: int, redelivered: bool = False) -> list[int]:
    """Run a queued run. Snapshot-like kinds finish here; a time series returns the chunk indices to dispatch."""
    run = loadflow_run_claim(run_id=run_id, redelivered=redelivered)
    if run is None:
        return []
    try:
        if run.kind == Run.Kind.HOSTING_CAPACITY:
            loadflow_hosting_capacity_solve(run)
        elif run.start is not None:
            return loadflow_timeseries_plan(run)
        else:
            loadflow_snapshot_solve(run)
    except LoadFlowError as exc:
        loadflow_run_fail(run_id=run.pk, reason=exc.reason, message=exc.message)
    except SoftTimeLimitExceeded:
        loadflow_run_fail(run_id=run.pk, reason="time_limit", message=_time_limit_message())
    except TRANSIENT_DATABASE_ERRORS:
        raise  # the database went away (a restart): the task retries, the run is not failed for it
    except Exception as exc:
        logger.exception("load-flow run %s failed", run.pk)
        loadflow_run_fail(run_id=run.pk, reason="internal_error", message=f"{type(exc).__name__}: {exc}")
    return []


@transaction.atomic
def loadflow_run_fail(*, run_id: int, reason: str, message: str) -> None:
    """End a run as failed with its reason, deleting every result it stored so far (nothing half-written)."""
    run = Run.objects.select_for_update().get(pk=run_id)
    if run.status == Run.Status.FAILED:
        return
    for related in (run.bus_results, run.branch_results, run.violations, run.input_records, run.hosting_results):
        related.all().delete()
    run.chunks.update(arrays=None)
    run.status, run.error, run.finished_at, run.summary = Run.Status.FAILED, f"{reason}: {message}", timezone.now(), {}
    run.save(update_fields=["status", "error", "finished_at", "summary"])


def loadflow_runs_sweep(*, now: datetime | None = None) -> list[int]:
    """Fail the runs stuck past their deadline (Celery beat, `twin.loadflow_sweep_stuck_runs`); returns their ids.

    A run stays `running` (or `queued`) for ever when its messages are lost (the broker lost them, a chunk was never
    redelivered): nothing would ever end it. A run still running GRIDTWIN_LOADFLOW_RUN_DEADLINE_S after it was
    (last) started, or still queued that long after it was created, is failed as `deadline_exceeded`, which deletes
    whatever it stored; the caller submits it again. Claiming by status (one UPDATE per run inside
    `loadflow_run_fail`, under the run's row lock) makes two sweepers harmless.
    """
    deadline_s = settings.GRIDTWIN_LOADFLOW_RUN_DEADLINE_S
    cutoff = (now or timezone.now()) - timedelta(seconds=deadline_s)
    stuck = list(Run.objects.filter(status=Run.Status.RUNNING, started_at__lt=cutoff).values_list("pk", flat=True))
    never_started = list(Run.objects.filter(status=Run.Status.QUEUED, created_at__lt=cutoff).values_list("pk", flat=True))
    for run_id in stuck:
        loadflow_run_fail(run_id=run_id, reason="deadline_exceeded",
                          message=f"still running {deadline_s} s after it started (its work was lost): submit the run again")
    for run_id in never_started:
        loadflow_run_fail(run_id=run_id, reason="deadline_exceeded",
                          message=f"still queued {deadline_s} s after it was created (its message was lost): submit the run again")
    return stuck + never_started


@contextmanager
def _still_ours(run_id: int):
    """A transaction holding the run's row locked: yields the run while it is still running, else None (failed or cancelled)."""
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run_id)
        yield locked if locked.status == Run.Status.RUNNING else None


def _inputs_for(run: Run, model: GridModel, times: list[datetime]) -> StepInputs:
    inputs = build_inputs(run.grid, model.injections, times, timedelta(minutes=run.step_minutes))
    return inputs


def _summary(results: StepResults, step_hours: float) -> dict:
    def extreme(fn, values):
        values = values[~np.isnan(values)]
        return float(fn(values)) if values.size else None

    return {
        "vm_min_pu": extreme(np.min, results.vm_pu), "vm_max_pu": extreme(np.max, results.vm_pu),
        "line_loading_max_percent": extreme(np.max, results.line["loading_percent"]),
        "trafo_loading_max_percent": extreme(np.max, results.trafo["loading_percent"]),
        "p_ext_grid_max_mw": extreme(np.max, results.totals["p_ext_grid_mw"]),
        "p_ext_grid_min_mw": extreme(np.min, results.totals["p_ext_grid_mw"]),
        "energy_ext_grid_mwh": float(results.totals["p_ext_grid_mw"].sum() * step_hours),
        "energy_losses_mwh": float(results.totals["pl_mw"].sum() * step_hours),
        "pl_mw": float(results.totals["pl_mw"][0]) if len(results.totals["pl_mw"]) == 1 else None,
    }


def snapshot_results(run: Run, *, with_scenario: bool = True) -> tuple[GridModel, dict, StepInputs, StepResults]:
    """Solve the run's time `at` (no writes): model, layout, inputs and results of the one step."""
    model, layout = run_model(run, with_scenario=with_scenario)
    inputs = _inputs_for(run, model, [run.at])
    return model, layout, inputs, solve(model, inputs)


def loadflow_snapshot_solve(run: Run) -> None:
    """Solve a snapshot (or a what-if at one time) and store results, inputs and violations with the status, atomically."""
    started = time.perf_counter()
    model, layout, inputs, results = snapshot_results(run)
    solved = time.perf_counter()
    difference = _whatif_difference(run, results) if run.kind == Run.Kind.WHATIF else None
    limits = Limits.of(run.parameters)
    episodes = find_violations(limits, layout, results.vm_pu, results.line["loading_percent"], results.trafo["loading_percent"], [run.at])
    bus_ids = dict(models.Bus.objects.filter(grid=run.grid).values_list("iri", "id"))
    with _still_ours(run.pk) as locked:
        if locked is None:
            return
        snapshot_rows_store(run, model, layout, inputs, results, bus_ids)
        _store_episodes(run, episodes)
        summary = _summary(results, run.step_minutes / 60)
        if difference is not None:
            summary["difference"] = difference
        Run.objects.filter(pk=run.pk).update(
            status=Run.Status.SUCCEEDED, finished_at=timezone.now(), steps_done=1, inputs=inputs.counts(), summary=summary,
            layout=layout, telemetry_start=inputs.telemetry_start, telemetry_end=inputs.telemetry_end,
            timings={**run.timings, "solve_s": solved - started, "store_s": time.perf_counter() - solved,
                     "iterations": results.iterations})


BRANCH_FIELDS = ("p_from_mw", "q_from_mvar", "p_to_mw", "q_to_mvar", "i_ka", "loading_percent", "pl_mw", "ql_mvar")


def snapshot_rows_store(run: Run, model: GridModel, layout: dict, inputs: StepInputs, results: StepResults, bus_ids: dict[str, int],
                        *, method: str | None = None) -> None:
    """Store a snapshot's bus results, branch results and inputs (binary COPY on PostgreSQL, `bulk_create` elsewhere).

    NaN and ±inf (isolated buses, branches out of service) are NULL, except a bus's p_mw / q_mvar: 0 for NaN, the
    largest finite float for ±inf. Inputs are stored as solved. `method` forces "copy" or "bulk" (the benchmark, the tests).
    """
    run_ids = np.full(len(layout["bus"]), run.pk, dtype=np.int64)
    vm, va = results.vm_pu[0], results.va_degree[0]
    result_rows.rows_store(models.BusResult, [
        Column("run", run_ids), Column("bus", np.array([bus_ids[iri] for iri in layout["bus"]], dtype=np.int64)),
        Column("vm_pu", vm, result_rows.nullable(vm)), Column("va_degree", va, result_rows.nullable(va)),
        Column("p_mw", result_rows.zero_filled(results.bus_p_mw[0])), Column("q_mvar", result_rows.zero_filled(results.bus_q_mvar[0])),
    ], method=method)
    branches = [("line", results.line), ("trafo", results.trafo)]
    elements = [element for element, _ in branches for _ in layout[element]]
    values = {name: np.concatenate([v[name][0] for _, v in branches]) for name in BRANCH_FIELDS}
    result_rows.rows_store(models.BranchResult, [
        Column("run", np.full(len(elements), run.pk, dtype=np.int64)), Column("element", elements),
        Column("asset_iri", [iri for element, _ in branches for iri in layout[element]]),
        *(Column(name, values[name], result_rows.nullable(values[name])) for name in BRANCH_FIELDS),
    ], method=method)
    injections, source = model.injections, inputs.source[0]
    result_rows.rows_store(models.LoadFlowInput, [
        Column("run", np.full(len(injections), run.pk, dtype=np.int64)), Column("element", [str(e) for e in injections.element]),
        Column("asset_iri", list(injections.iri)), Column("source", [SOURCES[code] for code in source.tolist()]),
        Column("p_mw", np.asarray(inputs.p_mw[0], dtype=np.float64)), Column("q_mvar", np.asarray(inputs.q_mvar[0], dtype=np.float64)),
        Column("measured_steps", (source == 0).astype(np.int64)), Column("filled_steps", (source != 0).astype(np.int64)),
    ], method=method)


def _store_episodes(run: Run, episodes) -> None:
    models.Violation.objects.bulk_create([
        models.Violation(run=run, grid_id=run.grid_id, element=e.element, asset_iri=e.asset_iri, quantity=e.quantity, start=e.start,
                         end=e.end, steps=e.steps, value=e.value, limit=e.limit, severity=e.severity)
        for e in episodes
    ], batch_size=5000)


def _whatif_difference(run: Run, results: StepResults) -> dict:
    """The scenario against the unchanged twin at the same time: voltage and loading changes, violations before/after."""
    _, layout, _, base = snapshot_results(run, with_scenario=False)
    _, new_layout, _, _ = snapshot_results(run)
    limits = Limits.of(run.parameters)
    base_episodes = find_violations(limits, layout, base.vm_pu, base.line["loading_percent"], base.trafo["loading_percent"], [run.at])
    new_episodes = find_violations(limits, new_layout, results.vm_pu, results.line["loading_percent"],
                                   results.trafo["loading_percent"], [run.at])
    position = {iri: j for j, iri in enumerate(new_layout["bus"])}
    common = [(j, position[iri]) for j, iri in enumerate(layout["bus"]) if iri in position]
    dvm = np.array([results.vm_pu[0, k] - base.vm_pu[0, j] for j, k in common])
    worst = np.argsort(-np.abs(np.nan_to_num(dvm)))[:10]
    return {
        "base_vm_min_pu": float(np.nanmin(base.vm_pu)), "vm_min_pu": float(np.nanmin(results.vm_pu)),
        "base_vm_max_pu": float(np.nanmax(base.vm_pu)), "vm_max_pu": float(np.nanmax(results.vm_pu)),
        "base_line_loading_max_percent": float(np.nanmax(base.line["loading_percent"], initial=0)),
        "line_loading_max_percent": float(np.nanmax(results.line["loading_percent"], initial=0)),
        "base_violations": len(base_episodes), "violations": len(new_episodes),
        "max_abs_dvm_pu": float(np.nanmax(np.abs(dvm))) if dvm.size else 0.0,
        "largest_dvm_pu": {layout["bus"][common[i][0]]: float(dvm[i]) for i in worst},
    }


# --- hosting capacity ----------------------------------------------------------------------------

HC_MAX_KW = 10_000.0
HC_TOLERANCE_KW = 0.1


def hosting_capacity_buses(run: Run, model: GridModel, layout: dict) -> tuple[list[str], np.ndarray]:
    """Candidate buses (IRIs, internal indices): the run's feeder or the whole grid, without slack and isolated buses."""
    iris = layout["bus"]
    feeder = run.parameters.get("feeder")
    in_feeder = models.Bus.objects.filter(grid=run.grid, feeder__iri=feeder).values_list("iri", flat=True) if feeder else iris
    wanted = set(in_feeder)
    slack = set(model.ref.tolist())
    chosen = [(iri, int(model.bus_ppci[j])) for j, iri in enumerate(iris)
              if iri in wanted and model.bus_ppci[j] >= 0 and int(model.bus_ppci[j]) not in slack]
    return [c[0] for c in chosen], np.array([c[1] for c in chosen], dtype=np.int64)


def loadflow_hosting_capacity_solve(run: Run) -> None:
    """Solve the period, pick the candidate steps (`hosting.candidate_steps`), bisect PV and load per bus at each, store the
    smallest per bus with its step."""
    started = time.perf_counter()
    model, layout = run_model(run)
    step = timedelta(minutes=run.step_minutes)
    times = step_times(run.start, run.steps_total, step)
    inputs = _inputs_for(run, model, times)
    results = solve(model, inputs)
    s_load = bus_loads(model, inputs)
    p_ext = results.totals["p_ext_grid_mw"]
    limits = Limits.of(run.parameters)
    iris, buses = hosting_capacity_buses(run, model, layout)
    nodes, first_bus = model.node_buses()
    positions = first_bus[np.searchsorted(nodes, buses)]  # a layout bus on each candidate (results are per bus)
    max_kw = float(run.parameters.get("max_kw", HC_MAX_KW))
    tolerance_kw = float(run.parameters.get("tolerance_kw", HC_TOLERANCE_KW))
    found, steps = {}, {}
    for kind, sign in (("pv", -1.0), ("load", 1.0)):
        steps[kind] = hosting.candidate_steps(results.vm_pu, p_ext, positions, sign=sign)
        voltages, converged, _ = solve_rows(model, -s_load[steps[kind]] / model.base_mva, model.v0, MAX_ITERATION)
        if not converged.all():
            raise LoadFlowError("not_converged", f"the load flow does not converge at {times[steps[kind][~converged][0]].isoformat()}")
        found[kind] = hosting.capacities(model, limits, layout, s_load[steps[kind]], voltages, buses, sign=sign, max_kw=max_kw,
                                         tolerance_kw=tolerance_kw)
    worst = {kind: [times[steps[kind][k]] for k in found[kind].worst_step] for kind in found}
    solved = time.perf_counter()
    bus_ids = dict(models.Bus.objects.filter(grid=run.grid).values_list("iri", "id"))
    with _still_ours(run.pk) as locked:
        if locked is None:
            return
        models.HostingCapacityResult.objects.bulk_create([
            models.HostingCapacityResult(run=run, bus_id=bus_ids[iri], pv_kw=float(found["pv"].kw[j]), load_kw=float(found["load"].kw[j]),
                                         pv_limited_by=found["pv"].limited_by[j], load_limited_by=found["load"].limited_by[j],
                                         pv_worst_at=worst["pv"][j], load_worst_at=worst["load"][j])
            for j, iri in enumerate(iris)
        ], batch_size=5000)
        weakest = {kind: int(np.argmin(found[kind].kw)) if len(iris) else None for kind in found}
        summary = {f"{kind}_worst_at": worst[kind][j].isoformat() if j is not None else None for kind, j in weakest.items()}
        summary |= {"candidate_steps": {kind: len(found_steps) for kind, found_steps in steps.items()}, "buses": len(iris),
                    "max_kw": max_kw, "tolerance_kw": tolerance_kw,
                    "pv_kw_min": float(found["pv"].kw.min()) if len(iris) else None,
                    "load_kw_min": float(found["load"].kw.min()) if len(iris) else None,
                    "p_ext_grid_min_mw": float(p_ext.min()), "p_ext_grid_max_mw": float(p_ext.max())}
        Run.objects.filter(pk=run.pk).update(
            status=Run.Status.SUCCEEDED, finished_at=timezone.now(), steps_done=run.steps_total,
            at=worst["pv"][weakest["pv"]] if weakest["pv"] is not None else None,
            inputs=inputs.counts(), summary=summary, layout=layout, telemetry_start=inputs.telemetry_start,
            telemetry_end=inputs.telemetry_end,
            timings={**run.timings, "solve_s": solved - started, "store_s": time.perf_counter() - solved,
                     "iterations": results.iterations})


# --- time series ----------------------------------------------------------------------------------


def loadflow_timeseries_plan(run: Run) -> list[int]:
    """Cut the period into chunks and return their indices to dispatch.

    The model is not built here: each worker builds (and caches) it with its first chunk, so the second
    worker does not wait for the first one's build; a grid that cannot be solved (islands …) fails the
    run from whichever chunk finds it first, and the first chunk to finish stores the layout.

    Planned once: a planning task delivered again (its worker died after the plan committed, before or after it
    dispatched the chunks) keeps the chunks and what they stored, and dispatches again only those never started —
    a started one has its own message, which comes back if its worker dies. Planning again from scratch stored the
    violations of the chunks solved in between twice.
    """
    step = timedelta(minutes=run.step_minutes)
    chunk_steps = settings.GRIDTWIN_LOADFLOW_CHUNK_STEPS
    chunks = []
    for index, first in enumerate(range(0, run.steps_total, chunk_steps)):
        chunks.append(models.TimeSeriesChunk(run=run, index=index, start=run.start + first * step,
                                             steps=min(chunk_steps, run.steps_total - first)))
    with transaction.atomic():
        Run.objects.select_for_update().values_list("pk", flat=True).get(pk=run.pk)  # one planner at a time
        planned = models.TimeSeriesChunk.objects.filter(run=run)
        if planned.exists():
            return list(planned.filter(status=models.TimeSeriesChunk.Status.PENDING).order_by("index").values_list("index", flat=True))
        models.TimeSeriesChunk.objects.bulk_create(chunks)
        Run.objects.filter(pk=run.pk).update(chunks_total=len(chunks), chunks_done=0, steps_done=0, layout={}, summary={})
    return [c.index for c in chunks]


def _still_running(run_id: int) -> None:
    if not Run.objects.filter(pk=run_id, status=Run.Status.RUNNING).exists():
        raise LoadFlowError("cancelled", "the run is no longer running")


def loadflow_chunk_solve(*, run_id: int, index: int) -> None:
    """Solve and store one chunk of a running time series; the chunk that completes the run finalizes it.

    Idempotent: a chunk already done is skipped; a redelivered one (its worker died) is solved again.
    A chunk that cannot be solved fails the whole run (and its stored chunks are dropped).
    """
    run = Run.objects.select_related("grid").get(pk=run_id)
    if run.status != Run.Status.RUNNING:
        return
    unfinished = models.TimeSeriesChunk.objects.filter(run_id=run_id, index=index).exclude(status=models.TimeSeriesChunk.Status.DONE)
    limit = settings.GRIDTWIN_LOADFLOW_MAX_ATTEMPTS
    if unfinished.filter(attempts__lt=limit).update(status=models.TimeSeriesChunk.Status.RUNNING, attempts=F("attempts") + 1) != 1:
        if unfinished.filter(attempts__gte=limit).exists():  # each delivery so far lost its worker: stop redelivering
            loadflow_run_fail(run_id=run_id, reason="too_many_attempts",
                              message=f"chunk {index} was started {limit} times without finishing (its worker was lost or "
                                      f"killed at the time limit of {settings.CELERY_TASK_TIME_LIMIT} s each time)")
        return
    chunk = models.TimeSeriesChunk.objects.get(run_id=run_id, index=index)
    logger.info("load-flow run %s chunk %s: delivery %s", run_id, index, chunk.attempts)
    started = time.perf_counter()
    try:
        model, layout = run_model(run)
        times = step_times(chunk.start, chunk.steps, timedelta(minutes=run.step_minutes))
        inputs = _inputs_for(run, model, times)
        if run.kind == Run.Kind.TIMESERIES and not (inputs.source < 3).any() and len(model.injections):
            raise LoadFlowError("no_telemetry", f"no readings and no profiles for any injection between {times[0].isoformat()} "
                                                f"and {times[-1].isoformat()}: nothing to solve but declared values")
        results = solve(model, inputs, check=lambda: _still_running(run_id))
        arrays = storage.chunk_arrays(results, times, model)
        arrays["source_counts"] = np.stack([(inputs.source == code).sum(axis=0) for code in range(len(SOURCES))], axis=1)
        arrays["telemetry_window"] = np.array([t.timestamp() if t else np.nan for t in (inputs.telemetry_start, inputs.telemetry_end)])
        blob = storage.pack(arrays)
        partial = _chunk_partial(arrays)
        episodes = find_violations(Limits.of(run.parameters), layout, results.vm_pu, results.line["loading_percent"],
                                   results.trafo["loading_percent"], times)
    except LoadFlowError as exc:
        loadflow_run_fail(run_id=run_id, reason=exc.reason, message=exc.message)
        return
    except SoftTimeLimitExceeded:
        loadflow_run_fail(run_id=run_id, reason="time_limit", message=f"chunk {index}: {_time_limit_message()}")
        return
    except TRANSIENT_DATABASE_ERRORS:
        raise  # the database went away (a restart): the task retries the chunk, the run is not failed for it
    except Exception as exc:
        logger.exception("chunk %s of load-flow run %s failed", index, run_id)
        loadflow_run_fail(run_id=run_id, reason="internal_error", message=f"{type(exc).__name__}: {exc}")
        return
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run_id)
        if locked.status != Run.Status.RUNNING:
            return
        chunk = models.TimeSeriesChunk.objects.select_for_update().get(pk=chunk.pk)
        if chunk.status == models.TimeSeriesChunk.Status.DONE:
            return
        _store_chunk(chunk.pk, blob, time.perf_counter() - started)
        _store_episodes(run, episodes)
        locked.chunks_done += 1
        locked.steps_done += chunk.steps
        locked.summary = {"partial": _merge_partial(locked.summary.get("partial"), partial)}
        locked.layout = locked.layout or layout
        locked.save(update_fields=["chunks_done", "steps_done", "summary", "layout"])
        if locked.chunks_done == locked.chunks_total:
            _finalize(locked)


def _store_chunk(chunk_id: int, blob: bytes, seconds: float) -> None:
    """Write a chunk's blob as a binary parameter on PostgreSQL (Django's client-side binding would escape it into the SQL text)."""
    done = models.TimeSeriesChunk.Status.DONE
    if connection.vendor != "postgresql":
        models.TimeSeriesChunk.objects.filter(pk=chunk_id).update(arrays=blob, status=done, seconds=seconds)
        return
    import psycopg

    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute("UPDATE twin_timeserieschunk SET arrays = %b, status = %s, seconds = %s WHERE id = %s",
                       [blob, done, seconds, chunk_id])


def _chunk_partial(arrays: dict[str, np.ndarray]) -> dict:
    """What finalizing needs of a chunk, small enough to keep on the run row: input counts, telemetry window, extremes, sums."""

    def extreme(fn, name):
        values = arrays[name]
        return float(fn(values)) if values.size and not np.isnan(values).all() else None

    window = [None if np.isnan(t) else float(t) for t in arrays["telemetry_window"]]
    p_ext, losses = arrays["p_ext_grid_mw"], arrays["pl_mw"]
    return {"counts": arrays["source_counts"].tolist(), "window": window,
            "vm_min_pu": extreme(np.nanmin, "vm_pu"), "vm_max_pu": extreme(np.nanmax, "vm_pu"),
            "line_loading_max_percent": extreme(np.nanmax, "line_loading_percent"),
            "trafo_loading_max_percent": extreme(np.nanmax, "trafo_loading_percent"),
            "p_ext_grid_max_mw": float(p_ext.max()), "p_ext_grid_min_mw": float(p_ext.min()),
            # one sum per chunk, added up once at the end with math.fsum (exactly rounded): chunks finish in any order,
            # and a running float sum would depend on it in its last digit
            "p_ext_grid_sum_mw": [float(p_ext.sum())], "pl_sum_mw": [float(losses.sum())]}


def _merge_partial(total: dict | None, part: dict) -> dict:
    """Two chunks' partials as one (the lists of sums join, extremes take the extreme, counts add element-wise)."""
    if total is None:
        return part

    def pick(fn, a, b):
        found = [v for v in (a, b) if v is not None]
        return fn(found) if found else None

    merged = {"counts": (np.array(total["counts"], dtype=np.int64) + np.array(part["counts"], dtype=np.int64)).tolist(),
              "window": [pick(min, total["window"][0], part["window"][0]), pick(max, total["window"][1], part["window"][1])]}
    for key in total:
        if key in merged:
            continue
        fn = min if "min" in key else max if "max" in key else sum
        merged[key] = pick(fn, total[key], part[key]) if fn is not sum else total[key] + part[key]
    return merged


def _finalize(run: Run) -> None:
    """Merge the chunks' violation periods across chunk borders, take the inputs and totals the chunks left on the run, succeed.

    The chunks' blobs are not read again: each chunk added its counts, extremes and sums to `summary.partial` under the run's lock.
    """
    step = timedelta(minutes=run.step_minutes)
    rows = list(run.violations.values("id", "element", "asset_iri", "quantity", "limit", "start", "end", "steps", "value", "severity"))
    changed, dropped = merge_adjacent(rows, step)
    models.Violation.objects.filter(id__in=dropped).delete()
    for row in changed:
        models.Violation.objects.filter(id=row["id"]).update(end=row["end"], steps=row["steps"], value=row["value"],
                                                             severity=row["severity"])
    partial = run.summary["partial"]
    counts = np.array(partial["counts"], dtype=np.int64).reshape(-1, len(SOURCES))
    model, _ = run_model(run)
    injections = model.injections
    models.LoadFlowInput.objects.bulk_create([
        models.LoadFlowInput(run=run, element=element, asset_iri=iri, source=SOURCES[int(np.argmax(counts[j]))],
                             measured_steps=int(counts[j, 0]), filled_steps=int(counts[j, 1:].sum()))
        for j, (element, iri) in enumerate(zip(injections.element, injections.iri, strict=True))
    ], batch_size=5000)
    hours = run.step_minutes / 60
    summary = {key: partial[key] for key in ("vm_min_pu", "vm_max_pu", "line_loading_max_percent", "trafo_loading_max_percent",
                                             "p_ext_grid_max_mw", "p_ext_grid_min_mw")}
    stored = run.chunks.aggregate(total=Sum(Length("arrays")))["total"] or 0
    summary.update({"energy_ext_grid_mwh": math.fsum(partial["p_ext_grid_sum_mw"]) * hours,
                    "energy_losses_mwh": math.fsum(partial["pl_sum_mw"]) * hours,
                    "violations": run.violations.count(), "stored_mb": round(stored / 1e6, 1)})
    seconds = list(run.chunks.values_list("seconds", flat=True))
    run.status, run.finished_at = Run.Status.SUCCEEDED, timezone.now()
    run.inputs = {name: int(counts[:, code].sum()) for code, name in enumerate(SOURCES)} if counts is not None else {}
    run.summary = summary
    first, last = partial["window"]
    run.telemetry_start = datetime.fromtimestamp(first, tz=UTC) if first is not None else None
    run.telemetry_end = datetime.fromtimestamp(last, tz=UTC) if last is not None else None
    run.timings = {**run.timings, "chunks_s_sum": float(sum(s or 0 for s in seconds)),
                   "wall_s": (run.finished_at - run.started_at).total_seconds()}
    run.save(update_fields=["status", "finished_at", "inputs", "summary", "telemetry_start", "telemetry_end", "timings"])
