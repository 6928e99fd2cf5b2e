"""A snapshot's stored rows are the solver's output under the rules of NaN and infinity, whichever way they were written:
PostgreSQL's binary COPY (the default there) and `bulk_create` (the embedded SQLite default) store the same rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from django.db import connection

from tests.conftest import LV_CODE
from tests.test_loadflow import NOON_IN_JUNE, execute, import_simbench
from twin import models
from twin.loadflow import result_rows, services
from twin.loadflow.inputs import SOURCES

Run = models.LoadFlowRun
BRANCH_FIELDS = services.BRANCH_FIELDS
postgresql_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="binary COPY is PostgreSQL's")


@pytest.fixture
def grid(db, utility, lv_net):
    return import_simbench(lv_net, LV_CODE, utility)


def stored(run: Run) -> dict[str, list[tuple]]:
    """Every stored row of the run in insertion order, without ids: what a reader of the run sees."""
    return {
        "bus": list(run.bus_results.order_by("id").values_list("bus__iri", "vm_pu", "va_degree", "p_mw", "q_mvar")),
        "branch": list(run.branch_results.order_by("id").values_list("element", "asset_iri", *BRANCH_FIELDS)),
        "input": list(run.input_records.order_by("id").values_list("element", "asset_iri", "source", "p_mw", "q_mvar",
                                                                    "measured_steps", "filled_steps")),
    }


def nullable(value) -> float | None:
    return float(value) if math.isfinite(value) else None


def expected(layout, model, inputs, results) -> dict[str, list[tuple]]:
    """The rows as the service always stored them, value by value: NULL for a non-finite result, a bus's p and q never NULL
    (NaN as 0, ±inf as the largest finite float), inputs as solved."""
    bus = [(iri, nullable(results.vm_pu[0, j]), nullable(results.va_degree[0, j]), float(np.nan_to_num(results.bus_p_mw[0, j])),
            float(np.nan_to_num(results.bus_q_mvar[0, j]))) for j, iri in enumerate(layout["bus"])]
    branch = [(element, iri, *(nullable(values[name][0, j]) for name in BRANCH_FIELDS))
              for element, values in (("line", results.line), ("trafo", results.trafo)) for j, iri in enumerate(layout[element])]
    source = inputs.source[0]
    rows = [(str(element), iri, SOURCES[source[j]], float(inputs.p_mw[0, j]), float(inputs.q_mvar[0, j]), int(source[j] == 0),
             int(source[j] != 0)) for j, (element, iri) in enumerate(zip(model.injections.element, model.injections.iri, strict=True))]
    return {"bus": bus, "branch": branch, "input": rows}


def with_odd_values(results):
    """The results with NaN, +inf and −inf where each rule applies (an isolated bus, a branch out of service, a blow-up)."""
    results.vm_pu[0, 0], results.va_degree[0, 1] = np.nan, np.inf
    results.bus_p_mw[0, 2], results.bus_q_mvar[0, 3], results.bus_p_mw[0, 4] = np.nan, -np.inf, np.inf
    results.line["p_from_mw"][0, 0], results.line["loading_percent"][0, 1], results.line["ql_mvar"][0, 2] = np.nan, np.inf, -np.inf
    return results


def store(grid, method: str, layout, model, inputs, results) -> Run:
    run = services.loadflow_run_create(grid=grid, at=NOON_IN_JUNE)
    bus_ids = dict(models.Bus.objects.filter(grid=grid).values_list("iri", "id"))
    services.snapshot_rows_store(run, model, layout, inputs, results, bus_ids, method=method)
    return run


def test_an_executed_snapshot_stores_the_solvers_output(grid):
    run = execute(services.loadflow_run_create(grid=grid, at=NOON_IN_JUNE))
    assert run.status == Run.Status.SUCCEEDED, run.error
    model, layout, inputs, results = services.snapshot_results(run)

    rows = stored(run)
    assert rows == expected(layout, model, inputs, results)
    assert len(rows["bus"]) == len(layout["bus"]) > 0 and len(rows["input"]) == len(model.injections) > 0


@postgresql_only
def test_copy_and_bulk_create_store_the_same_rows_nan_and_infinity_included(grid):
    model, layout, inputs, results = services.snapshot_results(services.loadflow_run_create(grid=grid, at=NOON_IN_JUNE))
    results = with_odd_values(results)

    copied, bulk = (stored(store(grid, method, layout, model, inputs, results)) for method in ("copy", "bulk"))

    assert copied == bulk == expected(layout, model, inputs, results)
    assert copied["bus"][0][1] is None and copied["bus"][1][2] is None  # NaN and +inf voltages: NULL
    assert (copied["bus"][2][3], copied["bus"][3][4], copied["bus"][4][3]) == (0.0, -np.finfo(float).max, np.finfo(float).max)
    assert copied["branch"][0][2] is None and copied["branch"][1][7] is None and copied["branch"][2][9] is None
    assert connection.vendor == "postgresql"


def test_the_copy_stream_holds_nulls_text_and_numbers_as_postgresql_reads_them():
    stream = result_rows.copy_binary(
        [result_rows.Column("run", np.array([7, 8])), result_rows.Column("asset_iri", ["é", ""]),
         result_rows.Column("vm_pu", np.array([1.5, np.nan]), np.array([False, True]))],
        ["bigint", "varchar(500)", "double precision"])
    row = (b"\x00\x03" + b"\x00\x00\x00\x08" + (7).to_bytes(8, "big") + b"\x00\x00\x00\x02" + "é".encode()
           + b"\x00\x00\x00\x08" + np.array(1.5, ">f8").tobytes())
    second = b"\x00\x03" + b"\x00\x00\x00\x08" + (8).to_bytes(8, "big") + b"\x00\x00\x00\x00" + b"\xff\xff\xff\xff"
    assert stream == result_rows.COPY_HEADER + row + second + result_rows.COPY_TRAILER


def test_a_model_from_the_disk_cache_solves_bit_for_bit_as_the_one_built(grid):
    """A new process reads the run's model from the disk cache instead of building it: the same results, and the
    pandapower net is built again only when asked for."""
    from twin.loadflow.solver import solve

    run = services.loadflow_run_create(grid=grid, at=NOON_IN_JUNE)
    key = (run.version.content_hash, "null")
    services._model_file(key).unlink(missing_ok=True)
    services._MODELS.clear()
    built, layout = services.run_model(run)
    assert services._model_file(key).exists()
    services._MODELS.clear()  # as in a new process

    cached, cached_layout = services.run_model(run)

    assert cached is not built and cached._net is None and cached_layout == layout
    inputs = services._inputs_for(run, built, [NOON_IN_JUNE])
    first, second = solve(built, inputs), solve(cached, inputs)
    for name in ("vm_pu", "va_degree", "bus_p_mw"):
        assert np.array_equal(getattr(first, name), getattr(second, name), equal_nan=True)
    assert np.array_equal(first.line["loading_percent"], second.line["loading_percent"], equal_nan=True)
    assert cached.net is not None and cached.net.bus.index.tolist() == built.net.bus.index.tolist()


def test_result_rows_follow_their_run_and_hold_their_bus_without_database_constraints(grid):
    """The rows' references carry no database constraint (the commit checked 73k of them on a 10k-bus snapshot); Django's
    on_delete keeps the rules: a run takes its rows with it, a bus with results is not deleted."""
    from django.db.models import RestrictedError

    run = services.loadflow_run_create(grid=grid, at=NOON_IN_JUNE)
    execute(run)
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, run.error
    bus = models.Bus.objects.get(pk=run.bus_results.values_list("bus_id", flat=True).first())
    with pytest.raises(RestrictedError):
        models.Bus.objects.filter(pk=bus.pk).delete()
    assert models.Bus.objects.filter(pk=bus.pk).exists()
    tables = (models.BusResult, models.BranchResult, models.LoadFlowInput)
    assert min(table.objects.filter(run=run).count() for table in tables) > 0
    run_id = run.pk
    run.delete()
    assert [table.objects.filter(run_id=run_id).count() for table in tables] == [0, 0, 0]


def test_a_write_has_a_worker_prepare_the_model_the_next_run_reads(grid, settings, monkeypatch, django_capture_on_commit_callbacks):
    """After a write commits, a worker builds the new version's model into the disk cache (GRIDTWIN_LOADFLOW_PREPARE_ON_WRITE):
    the first run after the write, in a process that has never seen the grid, reads it instead of building it."""
    from config.celery_app import app as celery_app
    from twin import history

    settings.GRIDTWIN_LOADFLOW_PREPARE_ON_WRITE = True
    eager, celery_app.conf.task_always_eager = celery_app.conf.task_always_eager, True  # the worker, in this process
    try:
        with django_capture_on_commit_callbacks(execute=True) as published:
            models.Load.objects.filter(grid=grid).update(p_mw=0.002)  # a write: the content changes
            version = history.grid_version_record(grid=grid, author=history.Author(via="test"))
    finally:
        celery_app.conf.task_always_eager = eager
    assert version is not None and len(published) == 1
    assert services._model_file(services._model_key(version.content_hash, None)).exists()
    assert services.loadflow_model_prepare(grid_id=grid.pk) is False  # prepared once

    built = []
    monkeypatch.setattr(services, "_model_build", lambda *args: built.append(args))
    services._MODELS.clear()  # as in a new process
    run = execute(services.loadflow_run_create(grid=grid, at=NOON_IN_JUNE))
    assert run.status == Run.Status.SUCCEEDED and run.version_id == version.pk, run.error
    assert built == [] and run.bus_results.exists()
