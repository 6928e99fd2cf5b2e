"""Redelivery of load-flow work is bounded: a run or chunk that kills its worker each time fails, a lost run is swept.

A worker killed mid-task (the hard time limit, out of memory, SIGKILL) runs no `except`: the task's message comes
back (late acknowledgement, `reject_on_worker_lost`) with the run still `running`. The tests play that with an
exception no handler catches (`WorkerKilled`, a BaseException) and deliver the task again, as the broker would.
"""

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from ontology.converters.pandapower_net import net_to_graph
from tests.conftest import LV_CODE
from twin import models
from twin.loadflow import services
from twin.services import grid_import_graph
from twin.tasks import loadflow_sweep_stuck_runs

Run = models.LoadFlowRun
DAY = datetime(2016, 6, 20, tzinfo=UTC)


class WorkerKilled(BaseException):
    """What a SIGKILLed worker's task amounts to: it stops, and nothing after it runs."""


@pytest.fixture
def grid(db, utility, lv_net):
    graph = net_to_graph(lv_net, grid_iri=f"https://gridtwin.example/id/simbench/{LV_CODE}", grid_name=LV_CODE, owner_iri=utility.iri)
    return grid_import_graph(graph=graph, participant=utility, source=f"simbench:{LV_CODE}").grid  # SimBench profiles feed the runs


def killing(monkeypatch, name: str) -> list:
    entered = []

    def kill(*args, **kwargs):
        entered.append(name)
        raise WorkerKilled

    monkeypatch.setattr(services, name, kill)
    return entered


def test_a_run_that_kills_its_worker_each_time_fails_after_the_attempt_limit(grid, settings, monkeypatch):
    settings.GRIDTWIN_LOADFLOW_MAX_ATTEMPTS = 3
    entered = killing(monkeypatch, "loadflow_hosting_capacity_solve")
    run = services.loadflow_run_create(grid=grid, kind=Run.Kind.HOSTING_CAPACITY, start=DAY, end=DAY + timedelta(days=1))
    for delivery in range(10):
        with contextlib.suppress(WorkerKilled):
            services.loadflow_run_execute(run_id=run.pk, redelivered=delivery > 0)
    run.refresh_from_db()
    assert len(entered) == 3
    assert run.status == Run.Status.FAILED and run.error.startswith("too_many_attempts:"), run.error


def test_a_chunk_that_kills_its_worker_each_time_fails_the_run_and_drops_what_was_stored(grid, settings, monkeypatch):
    settings.GRIDTWIN_LOADFLOW_MAX_ATTEMPTS = 2
    settings.GRIDTWIN_LOADFLOW_CHUNK_STEPS = 48
    run = services.loadflow_run_create(grid=grid, kind=Run.Kind.TIMESERIES, start=DAY, end=DAY + timedelta(days=1))
    assert services.loadflow_run_execute(run_id=run.pk) == [0, 1]
    services.loadflow_chunk_solve(run_id=run.pk, index=1)  # stored, before the other chunk's worker dies
    assert models.TimeSeriesChunk.objects.get(run=run, index=1).arrays is not None, Run.objects.get(pk=run.pk).error
    entered = killing(monkeypatch, "solve")
    for _ in range(6):
        with contextlib.suppress(WorkerKilled):
            services.loadflow_chunk_solve(run_id=run.pk, index=0)
    run.refresh_from_db()
    assert len(entered) == 2
    assert run.status == Run.Status.FAILED and run.error.startswith("too_many_attempts: chunk 0"), run.error
    assert not models.TimeSeriesChunk.objects.filter(run=run, arrays__isnull=False).exists()


def test_the_sweeper_fails_runs_whose_messages_were_lost_and_leaves_live_ones(grid, settings):
    settings.GRIDTWIN_LOADFLOW_RUN_DEADLINE_S = 3600
    long_ago = timezone.now() - timedelta(hours=2)
    lost_running, live_running, lost_queued, live_queued = (services.loadflow_run_create(grid=grid, at=DAY) for _ in range(4))
    for run in (lost_running, live_running):
        assert services.loadflow_run_claim(run_id=run.pk) is not None
    Run.objects.filter(pk=lost_running.pk).update(started_at=long_ago)
    Run.objects.filter(pk=lost_queued.pk).update(created_at=long_ago)

    assert sorted(loadflow_sweep_stuck_runs.apply().get() for _ in range(2)) == [0, 2]
    statuses = dict(Run.objects.values_list("pk", "status"))
    assert statuses[lost_running.pk] == statuses[lost_queued.pk] == Run.Status.FAILED
    assert statuses[live_running.pk] == Run.Status.RUNNING and statuses[live_queued.pk] == Run.Status.QUEUED
    assert Run.objects.get(pk=lost_running.pk).error.startswith("deadline_exceeded: still running")
    assert "twin.loadflow_sweep_stuck_runs" in {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}


def test_a_finished_run_keeps_the_count_of_its_deliveries_beside_its_timings(grid, settings):
    settings.GRIDTWIN_LOADFLOW_CHUNK_STEPS = 48
    snapshot = services.loadflow_run_create(grid=grid, at=DAY)
    series = services.loadflow_run_create(grid=grid, kind=Run.Kind.TIMESERIES, start=DAY, end=DAY + timedelta(days=1))
    services.loadflow_run_execute(run_id=snapshot.pk)
    for index in services.loadflow_run_execute(run_id=series.pk):
        services.loadflow_chunk_solve(run_id=series.pk, index=index)
    snapshot.refresh_from_db()
    series.refresh_from_db()
    assert snapshot.status == series.status == Run.Status.SUCCEEDED, (snapshot.error, series.error)
    assert snapshot.timings["deliveries"] == 1 and snapshot.timings["solve_s"] > 0
    assert series.timings["deliveries"] == 1 and series.timings["wall_s"] > 0
