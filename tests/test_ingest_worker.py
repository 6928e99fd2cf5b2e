"""Reliability with a real Celery worker process, real Redis and real PostgreSQL.

The worker runs as a subprocess against the test database (pytest-django's `test_<name>`, visible to
it because these tests commit: `transaction=True`). Redis redelivers the task of a killed worker after
the visibility timeout, set to a few seconds here.
"""

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from ingest import services
from ingest.testing import metered_grid_create, power_readings, readings_json
from twin import models

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

START = datetime(2024, 3, 1, tzinfo=UTC)
DONE = ("succeeded", "failed", "dead")


@pytest.fixture
def broker_url() -> str:
    if not settings.CELERY_BROKER_URL:
        pytest.skip("needs a broker (CELERY_BROKER_URL), as `make test` gives")
    import redis

    # The test broker database holds only test traffic: drop messages (and unacknowledged ones) of earlier runs.
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    return settings.CELERY_BROKER_URL


@pytest.fixture
def start_worker(broker_url):
    """Start `celery worker` processes on the test database; every one still running is killed at the end."""
    db = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "CELERY_BROKER_URL": broker_url,
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
           "CELERY_VISIBILITY_TIMEOUT": "3", "CELERY_UNACKED_RESTORE_INTERVAL": "1", "CELERY_UNACKED_RESTORE_THROTTLE": "1"}
    workers = []

    def start(concurrency: int = 1) -> subprocess.Popen:
        command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=WARNING", f"--concurrency={concurrency}",
                   "--without-mingle", "--without-gossip", "--without-heartbeat", "-n", f"test-{uuid.uuid4().hex[:8]}@%h"]
        worker = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR, start_new_session=True)  # noqa: S603 - our own command line
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


@pytest.fixture
def gateway(utility) -> APIClient:
    _, key = services.telemetry_source_issue(participant=utility, name="gw-worker-test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Gateway {key}")
    return client


def upload(gateway, readings: list[dict]) -> int:
    response = gateway.post("/api/v1/telemetry/batches", data=readings_json(readings), content_type="application/json")
    assert response.status_code == 202, response.content[:300]
    return response.json()["id"]


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.01):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def finished(*batch_ids: int) -> bool:
    return models.TelemetryBatch.objects.filter(pk__in=batch_ids, status__in=DONE).count() == len(batch_ids)


def worker_is_writing_readings() -> bool:
    """Another backend holds a write lock on the readings table: a batch transaction is open mid-write."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                       "WHERE c.relname LIKE 'twin_reading%%' AND l.mode = 'RowExclusiveLock' AND l.pid <> pg_backend_pid()")
        return cursor.fetchone()[0] > 0


def unique_valid(readings: list[dict]) -> set[tuple]:
    """What must be stored: one (point, quantity code, ts, MW) per key of the readings with known points."""
    known = set(models.Meter.objects.values_list("id", flat=True))
    return {(r["point"], 1, datetime.fromisoformat(r["ts"]), r["value"] / 1000) for r in readings if r["point"] in known}


def stored() -> set[tuple]:
    return set(models.Reading.objects.values_list("point_id", "quantity", "ts", "value"))


def test_a_worker_killed_mid_batch_loses_nothing_and_writes_nothing_twice(utility, gateway, start_worker):
    grid = metered_grid_create(utility, name="kill", feeders=20, meters_per_feeder=50)
    points = list(grid.meters.values_list("id", flat=True))
    readings = power_readings(points, START, 150)  # 150k readings: long enough to be caught writing
    readings += readings[:500] + [{**r, "point": 10**9} for r in readings[:100]]  # repeats and unknown points
    random.Random(7).shuffle(readings)
    batch_id = upload(gateway, readings)

    first = start_worker()
    wait_for(worker_is_writing_readings, 60, "the worker to start writing the batch", poll_s=0.002)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert models.TelemetryBatch.objects.get(pk=batch_id).status == "running"
    assert models.Reading.objects.count() == 0  # the killed transaction wrote nothing

    start_worker()
    wait_for(lambda: finished(batch_id), 90, "the redelivered batch", poll_s=0.2)

    batch = models.TelemetryBatch.objects.get(pk=batch_id)
    expected = unique_valid(readings)
    assert batch.status == "succeeded" and batch.attempts == 2
    assert stored() == expected
    assert (batch.accepted_count, batch.duplicate_count, batch.rejected_count) == (len(expected), 500, 100)
    assert models.LatestReading.objects.count() == len(points)


def test_same_batch_twice_shuffled_and_overlapping_batches_give_one_final_state(utility, gateway, start_worker):
    grid = metered_grid_create(utility, name="replays", feeders=10, meters_per_feeder=20)
    points = list(grid.meters.values_list("id", flat=True))
    first = power_readings(points, START, 40)
    shuffled = random.Random(3).sample(first, len(first))
    overlapping = power_readings(points, datetime(2024, 3, 1, 5, tzinfo=UTC), 40)  # the last 20 steps of `first` again
    batch_ids = [upload(gateway, batch) for batch in (first, first, shuffled, overlapping, overlapping[::-1])]

    start_worker(concurrency=2)  # two processes take batches concurrently and race on the same keys
    wait_for(lambda: finished(*batch_ids), 90, "all batches", poll_s=0.2)

    expected = unique_valid(first + overlapping)
    assert stored() == expected
    batches = models.TelemetryBatch.objects.filter(pk__in=batch_ids)
    assert set(batches.values_list("status", flat=True)) == {"succeeded"}
    assert sum(batches.values_list("accepted_count", flat=True)) == len(expected)
    assert all(b.accepted_count + b.duplicate_count == b.received_count for b in batches)
