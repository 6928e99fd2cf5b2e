"""Celery tasks of ingest: thin — they take ids, call a service and own no logic.

Delivery guarantees come from the settings (late acknowledgement, a task whose worker died is
delivered again, prefetch of 1, soft and hard time limits) and from here: transient database errors
(Django's and psycopg's, `twin.transient`) are retried with backoff on a new connection, and a batch
that fails for good is dead-lettered (status `dead` with its error). `telemetry_batch_process` counts
deliveries itself, so redeliveries after lost workers are bounded too.
"""

from celery import shared_task

from ingest import services
from twin.transient import DatabaseTask


class DeadLetterTask(DatabaseTask):
    """A task on one batch, retried when the database went away, that leaves the batch dead with the error when it
    fails for good."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        batch_id = kwargs.get("batch_id", args[0] if args else None)
        if batch_id is not None:
            services.telemetry_batch_dead_letter(batch_id=batch_id, error=f"{type(exc).__name__}: {exc}")


@shared_task(base=DeadLetterTask, name="ingest.process_batch", acks_late=True, reject_on_worker_lost=True)
def process_batch(batch_id: int) -> None:
    """Validate and store one telemetry batch."""
    services.telemetry_batch_process(batch_id=batch_id)


@shared_task(name="ingest.requeue_stale_batches")
def requeue_stale_batches() -> int:
    """Ingest housekeeping (Celery beat, every 10 minutes): publish again the batches whose message was lost, and
    recompute the hourly rollup of the hours settled batches marked."""
    requeued = services.telemetry_batches_requeue()
    services.reading_rollups_refresh()
    return requeued


@shared_task(name="ingest.refresh_rollups")
def refresh_rollups(settled_s: int = services.ROLLUP_SETTLE_S) -> int:
    """Recompute the hourly rollup of the hours marked by batches finished more than `settled_s` ago."""
    return services.reading_rollups_refresh(settled_s=settled_s)


@shared_task(name="ingest.create_partitions_ahead")
def create_partitions_ahead(months: int = 3) -> list[str]:
    """Create the readings partitions of the coming months (run by Celery beat)."""
    return services.reading_partitions_ahead(months=months)
