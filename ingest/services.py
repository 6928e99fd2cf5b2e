"""Writes of the ingest pipeline: sources, receiving a batch durably, processing it, dead-lettering it.

A batch's path: `telemetry_batch_receive` (HTTP view, MQTT bridge, replay) checks the body can be read,
stores it as received and publishes the processing task only once that transaction has committed;
`telemetry_batch_process` (the Celery task) claims the batch, validates and writes it in one
transaction; a batch that keeps failing is dead-lettered with its error after a bounded number of
deliveries. Every step can run twice without changing the outcome.

Readings belong to the participant whose gateway sent them: the transaction that first stores readings for a
meter fixes its `telemetry_owner` to the batch's participant, once (`_points_claim`). Which meters a gateway
may write is the rule of `twin.selectors.points_of` (writable).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from ingest import selectors
from ingest.payloads import PayloadError, count_batch, decode_batch, media_type_of
from ingest.validation import ValidatedBatch, readings_validate
from ingest.writer import (
    Int8Array,
    binary_array,
    binary_cursor,
    partitions_ahead,
    partitions_ensure,
    readings_write,
    rollups_rebuild,
    rollups_refresh,
)
from twin import models as twin
from twin.history import Author
from twin.rdf_codec import TripleWriter, write_meters
from twin.selectors import chunks, points_of
from twin.services import grid_apply_changes

logger = logging.getLogger(__name__)
Status = twin.TelemetryBatch.Status
REJECTION_INSERT_CHUNK = 5000
ROLLUP_SETTLE_S = 300  # the hours a batch marked are recomputed once it finished this long ago
# Assets whose SimBench profile a replay turns into readings, and the kind of meter that measures each.
PROFILED_METER_KINDS = [(twin.Load, "smart_meter"), (twin.StaticGenerator, "pv_inverter"), (twin.Storage, "battery")]
POINT_CLAIM_ATTEMPTS = 3  # resolve → write rounds when a point changes hands meanwhile (a concurrent re-publish)
# The PostgreSQL form of `twin.selectors.points_of(writable=True)` restricted to meters without a telemetry owner yet,
# locked in id order (two workers claiming overlapping new meters never deadlock), then given the batch's participant.
CLAIM_SQL = (
    "UPDATE twin_meter SET telemetry_owner_id = %(participant)s WHERE id IN ("
    "SELECT m.id FROM twin_meter m JOIN twin_grid g ON g.id = m.grid_id "
    "WHERE m.id = ANY(%(points)s) AND m.telemetry_owner_id IS NULL AND m.retired_at IS NULL "
    "AND (m.owner_id = %(participant)s OR m.owner_id IS NULL AND g.owner_id = %(participant)s) "
    "ORDER BY m.id FOR UPDATE OF m)"
)
CLAIMED_SQL = ("SELECT count(*) FROM twin_meter WHERE id = ANY(%(points)s) AND telemetry_owner_id = %(participant)s "
               "AND retired_at IS NULL")


class PointsMoved(RuntimeError):
    """A point of the batch stopped being its source's to write between resolving it and writing its readings."""


@transaction.atomic
def telemetry_source_issue(*, participant: twin.Participant, name: str) -> tuple[twin.TelemetrySource, str]:
    """Register a gateway for a participant; returns the source and its raw key (shown once, stored hashed)."""
    return twin.TelemetrySource.issue(participant=participant, name=name)


@dataclass
class Receipt:
    """What receiving a batch did: the batch, and whether this call created it (False: an idempotent retry)."""

    batch: twin.TelemetryBatch
    created: bool


def telemetry_batch_receive(*, source: twin.TelemetrySource, body: bytes, content_type: str, idempotency_key: str = "",
                            channel: str = "http") -> Receipt:
    """Store a batch as received and queue it for processing once the row has committed.

    Raises PayloadError (nothing stored) when the body as a whole cannot be read, or when the
    idempotency key was used before with a different body. The same key with the same body returns
    the first batch unchanged.
    """
    media_type = media_type_of(content_type)
    received_count = count_batch(body, media_type)
    digest = hashlib.sha256(body).hexdigest()
    if idempotency_key:
        existing = _idempotent_replay(source, idempotency_key, digest)
        if existing is not None:
            return Receipt(existing, created=False)
    try:
        with transaction.atomic():
            batch = twin.TelemetryBatch.objects.create(
                source=source, participant_id=source.participant_id, channel=channel, content_type=media_type,
                body=b"" if connection.vendor == "postgresql" else body, body_sha256=digest, idempotency_key=idempotency_key,
                received_count=received_count)
            if connection.vendor == "postgresql":
                binary_cursor().execute("UPDATE twin_telemetrybatch SET body = %b WHERE id = %s", [body, batch.pk])
            transaction.on_commit(lambda: telemetry_batch_publish(batch_id=batch.pk))
    except IntegrityError:
        existing = _idempotent_replay(source, idempotency_key, digest) if idempotency_key else None
        if existing is None:
            raise
        return Receipt(existing, created=False)  # a concurrent retry with the same key won the race
    return Receipt(batch, created=True)


def _batch_body(batch_id: int) -> bytes:
    if connection.vendor != "postgresql":
        return bytes(twin.TelemetryBatch.objects.values_list("body", flat=True).get(pk=batch_id))
    with binary_cursor() as cursor:
        cursor.execute("SELECT body FROM twin_telemetrybatch WHERE id = %s", [batch_id])
        return bytes(cursor.fetchone()[0])


def _idempotent_replay(source: twin.TelemetrySource, key: str, digest: str) -> twin.TelemetryBatch | None:
    existing = twin.TelemetryBatch.objects.defer("body").filter(source=source, idempotency_key=key).first()
    if existing is not None and existing.body_sha256 != digest:
        raise PayloadError("idempotency_key_reused", f"Idempotency-Key {key!r} was used for batch {existing.pk} with another body",
                           status=422)
    return existing


def telemetry_batch_record_unreadable(*, source: twin.TelemetrySource, body: bytes, content_type: str, error: PayloadError,
                                      channel: str, idempotency_key: str = "") -> twin.TelemetryBatch:
    """Keep a body nobody can be told about (an MQTT message) as a failed batch with the reason it cannot be read."""
    existing = twin.TelemetryBatch.objects.defer("body").filter(source=source, idempotency_key=idempotency_key).first() \
        if idempotency_key else None
    return existing or twin.TelemetryBatch.objects.create(
        source=source, participant_id=source.participant_id, channel=channel, content_type=content_type[:100], body=body,
        body_sha256=hashlib.sha256(body).hexdigest(), idempotency_key=idempotency_key, status=Status.FAILED,
        finished_at=timezone.now(), error=f"{error.reason}: {error.message}")


def telemetry_backlog_full() -> bool:
    """Whether the workers' backlog is at its bound (`GRIDTWIN_INGEST_MAX_QUEUED_BATCHES` batches queued; 0: no bound).

    Accepting more would only grow the queue: the edge sheds load instead (503 with Retry-After), and a gateway retries
    later with the same Idempotency-Key. One indexed count, stopped at the bound."""
    bound = settings.GRIDTWIN_INGEST_MAX_QUEUED_BATCHES
    return bound > 0 and twin.TelemetryBatch.objects.filter(status=Status.QUEUED)[:bound].count() >= bound


def telemetry_batch_publish(*, batch_id: int) -> None:
    """Hand a stored batch to the workers. A failed publish loses nothing: the batch stays queued and
    `telemetry_batches_requeue` (Celery beat) publishes it again."""
    from ingest.tasks import process_batch  # tasks call services

    twin.TelemetryBatch.objects.filter(pk=batch_id).update(published_at=timezone.now())
    try:
        process_batch.delay(batch_id)
    except Exception:  # broker down, or (in process) the task itself failed: the row records the rest
        logger.exception("could not run or publish telemetry batch %s; it stays queued", batch_id)


def telemetry_batch_process(*, batch_id: int) -> twin.TelemetryBatch | None:
    """Validate a batch and write its readings, rejections and counts in one transaction.

    Claims the batch first (counting the delivery): a finished batch is left alone (a duplicate
    delivery is a no-op), and a batch delivered more than GRIDTWIN_TELEMETRY_MAX_ATTEMPTS times is
    dead-lettered instead of processed. Only points the source may write are stored (the rest are
    `unknown_point`), and the first readings of a meter fix its telemetry owner (`_points_claim`); when a
    point changed hands between resolving and writing, nothing is written and the batch is resolved again.
    Returns the finished batch, or None when there was nothing to do.
    """
    now = timezone.now()
    claimed = twin.TelemetryBatch.objects.filter(pk=batch_id, status__in=[Status.QUEUED, Status.RUNNING]).update(
        status=Status.RUNNING, attempts=F("attempts") + 1, started_at=now)
    if not claimed:
        return None
    batch = twin.TelemetryBatch.objects.defer("body").get(pk=batch_id)
    logger.info("telemetry batch %s: delivery %s", batch_id, batch.attempts)
    if batch.attempts > settings.GRIDTWIN_TELEMETRY_MAX_ATTEMPTS:
        telemetry_batch_dead_letter(batch_id=batch_id, error=f"gave up after {batch.attempts - 1} deliveries")
        return None
    try:
        decoded = decode_batch(_batch_body(batch_id), batch.content_type)
    except PayloadError as exc:
        twin.TelemetryBatch.objects.filter(pk=batch_id).update(status=Status.FAILED, finished_at=timezone.now(),
                                                               error=f"{exc.reason}: {exc.message}")
        return None
    for _ in range(POINT_CLAIM_ATTEMPTS):
        point_ids = selectors.point_ids_for([batch.participant_id], decoded.point_keys(), writable=True)
        validated = readings_validate(decoded, point_ids=point_ids, now=batch.received_at)
        partitions_ensure(validated)
        try:
            with transaction.atomic():
                still_running = twin.TelemetryBatch.objects.select_for_update().filter(pk=batch_id, status=Status.RUNNING)
                if not still_running.values_list("pk", flat=True):
                    return None  # another delivery of the same batch finished it while this one waited for the lock
                if not _points_claim(validated, participant_id=batch.participant_id):
                    raise PointsMoved(f"a point of batch {batch_id} changed hands while it was written")
                accepted = readings_write(validated, batch_id=batch_id)
                twin.RejectedReading.objects.bulk_create(
                    [twin.RejectedReading(batch_id=batch_id, position=r.position, reason=r.reason, message=_storable(r.message)[:500],
                                          reading=r.reading) for r in validated.rejections], batch_size=REJECTION_INSERT_CHUNK)
                twin.TelemetryBatch.objects.filter(pk=batch_id).update(
                    status=Status.SUCCEEDED, finished_at=timezone.now(), error="", received_count=validated.received_count,
                    accepted_count=accepted, duplicate_count=validated.duplicate_count + len(validated) - accepted,
                    rejected_count=len(validated.rejections))
        except PointsMoved:
            continue  # nothing was written: resolve the points again, the moved ones are unknown_point now
        return twin.TelemetryBatch.objects.defer("body").get(pk=batch_id)
    raise PointsMoved(f"the points of batch {batch_id} kept changing hands in {POINT_CLAIM_ATTEMPTS} attempts")


def _storable(text: str) -> str:
    """Text PostgreSQL takes: NUL and unpaired surrogates (from a reading quoted in a message) as escapes."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _points_claim(validated: ValidatedBatch, *, participant_id: int) -> bool:
    """Fix the provenance of the batch's points, then confirm every one is still the batch participant's to write.

    Inside the write's transaction: the points without a telemetry owner that the participant may write get it as
    their `telemetry_owner` (one statement over the distinct points; it locks only those rows, so the first batch of a
    meter and a re-publish dropping it go one after the other — see twin.services `_stale_meters_remove`). Then
    every point must have the participant as telemetry owner and not be retired; False when one does not (it was
    re-owned, claimed by another participant's gateway, retired or deleted since `point_ids_for` resolved it), and
    the caller writes nothing and resolves again.
    """
    points = np.unique(validated.point_id)
    if not len(points):
        return True
    if connection.vendor == "postgresql":
        params = {"participant": participant_id, "points": binary_array(Int8Array, points)}
        with binary_cursor() as cursor:
            cursor.execute(CLAIM_SQL, params)
            cursor.execute(CLAIMED_SQL, params)
            return cursor.fetchone()[0] == len(points)
    claimed = 0
    for part in chunks(points.tolist()):
        points_of([participant_id], writable=True).filter(id__in=part, telemetry_owner__isnull=True) \
            .update(telemetry_owner_id=participant_id)
        claimed += twin.Meter.objects.filter(id__in=part, telemetry_owner_id=participant_id, retired_at__isnull=True).count()
    return claimed == len(points)


def telemetry_batch_dead_letter(*, batch_id: int, error: str) -> bool:
    """Give up on an unfinished batch: status `dead` with the error. The body stays for a later requeue."""
    return bool(twin.TelemetryBatch.objects.filter(pk=batch_id, status__in=[Status.QUEUED, Status.RUNNING]).update(
        status=Status.DEAD, finished_at=timezone.now(), error=error[:5000]))


def telemetry_batches_requeue(*, older_than_s: int | None = None, include_dead: bool = False) -> int:
    """Publish again the batches whose message was lost or never published — and, on request, the dead ones with their
    delivery count reset.

    Lost means: queued `older_than_s` after its last publish (not after its receipt: under a long but healthy backlog
    the first message is still waiting, and every extra copy would count a delivery towards the dead letter), or
    running longer than a worker may run a task (CELERY_TASK_TIME_LIMIT) plus `older_than_s` — its worker is gone.
    `older_than_s` defaults to GRIDTWIN_INGEST_REQUEUE_AFTER_S."""
    older_than_s = settings.GRIDTWIN_INGEST_REQUEUE_AFTER_S if older_than_s is None else older_than_s
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_s)
    last_publish = Coalesce("published_at", "received_at")
    worker_gone = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + older_than_s)
    stale = twin.TelemetryBatch.objects.alias(last_publish=last_publish).filter(
        Q(status=Status.QUEUED, last_publish__lt=cutoff) | Q(status=Status.RUNNING, started_at__lt=worker_gone))
    ids = list(stale.values_list("pk", flat=True))
    if include_dead:
        dead = twin.TelemetryBatch.objects.filter(status=Status.DEAD)
        dead_ids = list(dead.values_list("pk", flat=True))
        dead.update(status=Status.QUEUED, attempts=0, error="", finished_at=None)
        ids += dead_ids
    for batch_id in ids:
        telemetry_batch_publish(batch_id=batch_id)
    return len(ids)


def reading_rollups_rebuild(*, start: datetime, end: datetime) -> int:
    """Recompute the hourly rollup of the hours overlapping [start, end) — after readings were loaded around the workers."""
    return rollups_rebuild(start, end)


def reading_rollups_refresh(*, settled_s: int = ROLLUP_SETTLE_S) -> int:
    """Recompute the hourly rollup of the hours marked by batches that finished more than `settled_s` ago; returns
    the hours recomputed. Late batches for the same hours keep arriving, so waiting a while recomputes each hour
    fewer times."""
    return rollups_refresh(timezone.now() - timedelta(seconds=settled_s))


def reading_partitions_ahead(*, months: int = 3) -> list[str]:
    """Create the readings partitions of this month and the next `months` ahead of the data (PostgreSQL)."""
    return partitions_ahead(months)


def profile_meters_ensure(*, grid: twin.Grid) -> dict[str, int]:
    """A meter for every profiled load, generator and storage unit of the grid (measured asset IRI → meter id).

    Missing meters are added through the twin's change path, so they are judged by the shapes and the
    grid's next version records the change; meters that exist already are kept, and retired ones (a re-publish
    dropped them) are described again, which brings the same rows back with their readings.
    """
    measured = set(twin.Meter.objects.filter(grid=grid, retired_at__isnull=True).values_list("measured_iri", flat=True))
    rows = []
    for model, kind in PROFILED_METER_KINDS:
        live = model.objects.filter(grid=grid, retired_at__isnull=True).exclude(profile="")
        for asset in live.order_by("id").values("iri", "name", "feeder_id"):
            if asset["iri"] not in measured:
                rows.append({"iri": f"{asset['iri']}/meter", "name": f"meter of {asset['name'] or asset['iri']}", "kind": kind,
                             "measured_iri": asset["iri"], "feeder_id": asset["feeder_id"], "owner_id": None, "in_service": True})
    if rows:
        writer = TripleWriter()
        feeders = dict(twin.Feeder.objects.filter(grid=grid).values_list("id", "iri"))
        write_meters(writer, rows, {"Feeder": feeders, "Participant": {}})
        grid_apply_changes(grid=grid, graph=writer.graph, author=Author(via="replay", participant=grid.owner))
    return dict(twin.Meter.objects.filter(grid=grid, retired_at__isnull=True).values_list("measured_iri", "id"))
