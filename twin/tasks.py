"""Celery tasks of the twin's load-flow engine: thin — they take ids, call a service and own no logic.

A time series fans out as a group of chunk tasks (no result backend needed): each chunk task stores
its chunk and the one that completes the run finalizes it. Late acknowledgement (settings) means a
chunk whose worker was killed is delivered again and solved again; a chunk already stored is skipped.
Deliveries are counted in the database and capped (GRIDTWIN_LOADFLOW_MAX_ATTEMPTS: a run that kills its worker
each time fails instead of coming back for ever), a restart of the database is retried (`twin.transient`), not a
failed run, and a beat task fails the runs whose messages were lost.
"""

import logging

from celery import group, shared_task
from celery.signals import worker_init
from django.db import transaction

from twin.loadflow import services
from twin.loadflow.solver import numba_disk_cache
from twin.transient import DatabaseTask

logger = logging.getLogger(__name__)


@worker_init.connect
def warm_up_loadflow(**kwargs) -> None:
    """Pay pandapower's imports and its numba kernels (~5–10 s compiled, well under a second from numba's disk cache) once,
    in the worker's main process before it forks its pool.

    Every pool process (and every replacement of one that died) starts warm, in milliseconds. Warming up in each pool
    process instead took longer than Celery waits for a new pool process to report (worker_proc_alive_timeout) on a
    busy machine: Celery killed it and started another, for ever, and the worker took no task.
    """
    try:
        import pandapower as pp
        import pandapower.networks
        from lightsim2grid.algorithm import NRSing_KLU  # noqa: F401

        numba_disk_cache()  # the kernels the model builds use, compiled once per machine, not once per worker
        pp.runpp(pandapower.networks.example_simple(), lightsim2grid=False, init="dc", calculate_voltage_angles=True,
                 tolerance_mva=1e-8)
    except Exception:  # a worker that could not warm up still works, only its first run is slower
        logger.exception("load-flow warm-up failed")


@shared_task(bind=True, base=DatabaseTask, name="twin.loadflow_run", acks_late=True, reject_on_worker_lost=True)
def loadflow_run(self, run_id: int) -> None:
    """Execute a queued load-flow run; a time series dispatches its chunks to any worker."""
    # delivered again after a lost worker, or retried after the database went away: the run is ours to take over
    redelivered = bool((self.request.delivery_info or {}).get("redelivered")) or self.request.retries > 0
    chunks = services.loadflow_run_execute(run_id=run_id, redelivered=redelivered)
    if chunks:
        group(loadflow_chunk.s(run_id, index) for index in chunks).apply_async()


@shared_task(base=DatabaseTask, name="twin.loadflow_chunk", acks_late=True, reject_on_worker_lost=True)
def loadflow_chunk(run_id: int, index: int) -> None:
    """Solve and store one chunk of a time series."""
    services.loadflow_chunk_solve(run_id=run_id, index=index)


@shared_task(base=DatabaseTask, name="twin.loadflow_model_prepare", acks_late=True, reject_on_worker_lost=True)
def loadflow_model_prepare(grid_id: int) -> bool:
    """Build a grid's load-flow model into the disk cache after a write (`twin.history.model_prepare_after_commit`)."""
    return services.loadflow_model_prepare(grid_id=grid_id)


@shared_task(name="twin.loadflow_snapshot_all_grids")
def loadflow_snapshot_all_grids() -> int:
    """Queue a snapshot of every grid (Celery beat, every GRIDTWIN_LOADFLOW_SNAPSHOT_MINUTES)."""
    runs = services.loadflow_schedule_snapshots()
    for run in runs:
        transaction.on_commit(lambda run_id=run.pk: loadflow_run.delay(run_id))
    return len(runs)


@shared_task(name="twin.loadflow_sweep_stuck_runs")
def loadflow_sweep_stuck_runs() -> int:
    """Fail the runs stuck past GRIDTWIN_LOADFLOW_RUN_DEADLINE_S (Celery beat, every 10 minutes)."""
    return len(services.loadflow_runs_sweep())


def enqueue(run_id: int) -> None:
    """Start a stored run once the transaction that created it has committed."""
    transaction.on_commit(lambda: loadflow_run.delay(run_id))
