"""What the chaos run (tests/chaos.py) found, each played here without it: work redone after a lost worker or a
restarted database gives the results of an undisturbed run, and a restart of a service never fails a run.

A SIGKILLed worker runs no `except` and its message comes back (late acknowledgement); the tests deliver the task
again as the broker would. A restarted PostgreSQL is an `OperationalError` in the middle of the work.
"""

from datetime import UTC, datetime, timedelta

import pytest

from ontology.converters.pandapower_net import net_to_graph
from tests.conftest import LV_CODE
from twin import models
from twin.loadflow import services
from twin.services import grid_import_graph

Run = models.LoadFlowRun
DAY = datetime(2016, 6, 20, tzinfo=UTC)
TIGHT_BAND = {"vm_min_pu": 0.995, "vm_max_pu": 1.005}  # violations in every chunk


@pytest.fixture(autouse=True)
def fresh_connection_afterwards():
    """A test that ends a database session leaves the next one (and the teardown) a new connection."""
    from django.db import connection

    yield
    connection.close()


@pytest.fixture
def grid(db, utility, lv_net):
    graph = net_to_graph(lv_net, grid_iri=f"https://gridtwin.example/id/simbench/{LV_CODE}", grid_name=LV_CODE, owner_iri=utility.iri)
    return grid_import_graph(graph=graph, participant=utility, source=f"simbench:{LV_CODE}").grid


def stored(run: Run) -> dict:
    """What a run stored, without ids: violations, inputs, summary, and each chunk's arrays as bytes of the arrays."""
    run.refresh_from_db()
    return {"status": run.status, "error": run.error, "summary": run.summary, "inputs": run.inputs,
            "violations": sorted(run.violations.values_list("element", "asset_iri", "quantity", "start", "end", "steps", "value")),
            "input_records": sorted(run.input_records.values_list("element", "asset_iri", "source", "measured_steps", "filled_steps")),
            "chunks": list(run.chunks.order_by("index").values_list("index", "steps", "start"))}


def series(grid) -> Run:
    return services.loadflow_run_create(grid=grid, kind=Run.Kind.TIMESERIES, start=DAY, end=DAY + timedelta(days=1),
                                        parameters=TIGHT_BAND)


def undisturbed(grid) -> dict:
    run = series(grid)
    for index in services.loadflow_run_execute(run_id=run.pk):
        services.loadflow_chunk_solve(run_id=run.pk, index=index)
    return stored(run)


def test_a_planning_task_delivered_again_after_its_chunks_went_out_keeps_what_they_stored(grid, settings):
    settings.GRIDTWIN_LOADFLOW_CHUNK_STEPS = 24
    expected = undisturbed(grid)
    assert expected["status"] == Run.Status.SUCCEEDED and expected["violations"], expected["error"]
    run = series(grid)
    first = services.loadflow_run_execute(run_id=run.pk)
    services.loadflow_chunk_solve(run_id=run.pk, index=first[0])  # a chunk of the first dispatch is stored …
    # … before the planning task's worker dies unacknowledged: the broker delivers it again, and it dispatches again
    again = services.loadflow_run_execute(run_id=run.pk, redelivered=True)
    for index in [*first[1:], *again]:  # both dispatches' messages arrive
        services.loadflow_chunk_solve(run_id=run.pk, index=index)
    assert stored(run) == expected


def test_chunks_finishing_in_another_order_give_the_same_summary_to_the_last_digit(grid, settings):
    """Redone chunks finish out of order; the run's energies were a running float sum in finishing order."""
    settings.GRIDTWIN_LOADFLOW_CHUNK_STEPS = 8
    in_order = undisturbed(grid)
    run = series(grid)
    for index in reversed(services.loadflow_run_execute(run_id=run.pk)):
        services.loadflow_chunk_solve(run_id=run.pk, index=index)
    assert stored(run) == in_order


# --- a restarted database in the middle of the work ----------------------------------------------------------------


def database_restarts_at(monkeypatch, module, name: str) -> list:
    """The first call of `module.name` finds its database session ended, as a PostgreSQL restart ends every session:
    the backend of Django's connection is terminated (for real, from another session) just before the call."""
    import psycopg
    from django.db import connection

    restarts, real = [], getattr(module, name)

    def restart_then_call(*args, **kwargs):
        if not restarts:
            restarts.append(connection.connection.info.backend_pid)
            params = {k: v for k, v in connection.get_connection_params().items() if k in ("dbname", "user", "host", "port", "password")}
            with psycopg.connect(**params, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", [restarts[0]])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, restart_then_call)
    return restarts


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("step", ["_batch_body", "_points_claim", "readings_write"])
def test_a_database_restart_while_a_batch_is_written_is_retried_not_dead_lettered(utility, monkeypatch, step):
    from ingest import services as ingest_services
    from ingest.tasks import process_batch
    from ingest.testing import metered_grid_create, power_readings, readings_json

    grid = metered_grid_create(utility, name="restart", feeders=1, meters_per_feeder=3)
    points = list(grid.meters.values_list("id", flat=True))
    source, _ = ingest_services.telemetry_source_issue(participant=utility, name="gw-restart")
    readings = power_readings(points, datetime(2024, 3, 1, tzinfo=UTC), steps=4)
    batch = ingest_services.telemetry_batch_receive(source=source, body=readings_json(readings), content_type="application/json").batch
    restarts = database_restarts_at(monkeypatch, ingest_services, step)

    assert process_batch.apply(args=[batch.pk], throw=False).successful()  # as a worker runs it (eagerly: a retry runs at once)

    batch.refresh_from_db()
    assert restarts, "the database was not restarted"
    assert (batch.status, batch.accepted_count, batch.error) == ("succeeded", len(readings), "")
    assert models.Reading.objects.filter(batch=batch).count() == len(readings)


@pytest.mark.django_db(transaction=True)
def test_a_database_restart_while_a_chunk_is_solved_is_retried_and_the_run_ends_as_if_undisturbed(grid, settings, monkeypatch):
    from twin.tasks import loadflow_chunk

    settings.GRIDTWIN_LOADFLOW_CHUNK_STEPS = 48
    expected = undisturbed(grid)
    run = series(grid)
    chunks = services.loadflow_run_execute(run_id=run.pk)
    restarts = database_restarts_at(monkeypatch, services, "_inputs_for")  # the chunk reads its telemetry
    for index in chunks:
        assert loadflow_chunk.apply(args=[run.pk, index], throw=False).successful()
    assert restarts
    assert stored(run) == expected


@pytest.mark.django_db(transaction=True)
def test_a_database_restart_while_a_snapshot_is_solved_is_retried_not_failed(grid, monkeypatch):
    from twin.tasks import loadflow_run

    run = services.loadflow_run_create(grid=grid, at=DAY + timedelta(hours=12))
    restarts = database_restarts_at(monkeypatch, services, "snapshot_results")
    assert loadflow_run.apply(args=[run.pk], throw=False).successful()
    run.refresh_from_db()
    assert restarts
    assert (run.status, run.error) == (Run.Status.SUCCEEDED, "")
    assert run.bus_results.count() == models.Bus.objects.filter(grid=grid).count()


# --- a pool process killed again and again -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_pool_process_killed_again_and_again_is_replaced_by_one_that_works(utility):
    """Each replacement must report to its worker within Celery's own default of 4 s (CELERY_WORKER_PROC_ALIVE_TIMEOUT
    set back to it here): the load-flow warm-up (~5–10 s of imports and numba compilation) ran in every new pool
    process and, on a busy machine, Celery killed each one before it reported — the worker never took a task again."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import uuid
    from pathlib import Path

    import redis
    from django.conf import settings
    from django.db import connection

    from ingest import services as ingest_services
    from ingest.testing import metered_grid_create, power_readings, readings_json

    if not settings.CELERY_BROKER_URL:
        pytest.skip("needs a broker (CELERY_BROKER_URL), as `make test` gives")
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    db = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "CELERY_WORKER_PROC_ALIVE_TIMEOUT": "4",
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"}
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=INFO", "--concurrency=1", "--without-mingle",
               "--without-gossip", "--without-heartbeat", "-n", f"test-{uuid.uuid4().hex[:8]}@%h"]
    worker = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR, start_new_session=True,  # noqa: S603 - our own command line
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def pool_process() -> int | None:
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        return int(children[0]) if children else None

    def wait(condition, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        while not (value := condition()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return value

    try:
        killed = []
        for _ in range(3):
            pid = wait(lambda: (p := pool_process()) and p not in killed and p, 120)
            assert pid, "no pool process came up"
            time.sleep(1)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        grid = metered_grid_create(utility, name="respawn", feeders=1, meters_per_feeder=2)
        source, _ = ingest_services.telemetry_source_issue(participant=utility, name="gw-respawn")
        readings = power_readings(list(grid.meters.values_list("id", flat=True)), datetime(2024, 3, 1, tzinfo=UTC), steps=2)
        batch = ingest_services.telemetry_batch_receive(source=source, body=readings_json(readings), content_type="application/json").batch
        done = wait(lambda: models.TelemetryBatch.objects.filter(pk=batch.pk, status="succeeded").exists(), 60)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        output = worker.communicate()[0]
    assert "Timed out waiting for UP message" not in output, output[-3000:]
    assert done, output[-3000:]


@pytest.mark.django_db(transaction=True)
def test_two_workers_creating_the_partition_of_a_new_month_at_once_both_go_on():
    """The first batches of a month on two workers at once: one creates the readings partition, the other must not fail
    with `relation "twin_reading_y…" already exists` (the chaos run lost a whole acknowledged batch to it)."""
    import threading

    import numpy as np
    import psycopg
    from django.db import connection

    from ingest.validation import ValidatedBatch, ts_micros
    from ingest.writer import partitions_ensure

    month = datetime(2031, 3, 1, tzinfo=UTC)
    batch = ValidatedBatch(np.array([1]), np.array([1], dtype=np.int16), np.array([ts_micros(month)]), np.array([1.0]),
                           np.array([0], dtype=np.int16))
    params = {k: v for k, v in connection.get_connection_params().items() if k in ("dbname", "user", "host", "port", "password")}
    errors = []

    def other_worker():
        try:
            partitions_ensure(batch)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    with psycopg.connect(**params) as first:  # a worker creating it, not yet committed
        first.execute("SELECT twin_reading_partition_ensure(%s)", [month.date()])
        thread = threading.Thread(target=other_worker)
        thread.start()
        thread.join(timeout=1.0)  # the other one waits for the lock
        first.commit()
    thread.join(timeout=30)
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('twin_reading_y2031m03') IS NOT NULL")
        exists = cursor.fetchone()[0]
        cursor.execute("DROP TABLE IF EXISTS twin_reading_y2031m03")
    assert exists and not errors, errors
