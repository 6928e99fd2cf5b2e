"""Telemetry ingest end to end, next to raw COPY into the same table, and the two read paths that matter.

Prints, on a 10k-point grid (100 feeders × 100 meters):
  * end to end: 1M readings as 10 HTTP batches of 100k (JSON) → gunicorn as `make serve` runs it → Redis → Celery
    workers (one process per core, warm) → PostgreSQL, readings/s from the first request to the last batch stored; then the
    time the beat task takes to roll up the hours those batches marked (not part of the write path);
  * raw psycopg binary COPY of the same 1M rows into the same (emptied) table, rows/s, and the ratio — once with
    psycopg's write_row per row (the plain approach) and once as one numpy-built binary stream (what the workers send);
  * latest value of every point of the grid: the latest-value table (what the API serves) next to a
    LATERAL search of the readings table, ms;
  * hourly means of one feeder (100 points) over a year of 15-minute data (3.5M readings), ms: from the hourly
    rollup (what the API serves), next to the plain aggregate of the readings.
Run: `.venv/bin/python benchmarks/ingest_throughput.py [--batches 10] [--workers N]`
(BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/gridtwin_bench; BENCH_BROKER_URL, default
redis://127.0.0.1:6379/13 — flushed).
"""

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from _setup import ROOT, setup_django

PORT = 8765
WEB_WORKERS = (os.cpu_count() or 1) + 1  # as `make serve` starts by default (config/gunicorn_conf.py)
POINTS_PER_FEEDER = 100
FEEDERS = 100
STEPS_PER_BATCH = 10  # × 10k points = 100k readings per batch
START = datetime(2024, 6, 1, tzinfo=UTC)
YEAR = (datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))


def median_ms(fn, repeat: int = 5) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), value


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def server_is_up() -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
        connection.request("GET", "/api/v1/telemetry/quantities")
        return connection.getresponse().status == 401
    except OSError:
        return False


def start_services(env: dict, workers: int) -> list[subprocess.Popen]:
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn_conf.py"], cwd=ROOT,
                              env={**env, "GRIDTWIN_BIND": f"127.0.0.1:{PORT}", "WEB_CONCURRENCY": str(WEB_WORKERS)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=WARNING", f"--concurrency={workers}",
                               "--without-mingle", "--without-gossip", "-n", "bench@%h"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [server, worker]


def pool_processes_up(app) -> int:
    """Worker processes that finished starting (a prefork child reports up once its start-up hooks ran, e.g. the
    load-flow warm-up): only those take tasks."""
    stats = app.control.inspect(timeout=0.5).stats() or {}
    return sum(s["pool"].get("writes", {}).get("inqueues", {}).get("total", 0) for s in stats.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=10, help="batches of 100k readings")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="worker processes")
    parser.add_argument("--clients", type=int, default=1, help="HTTP clients uploading side by side")
    args = parser.parse_args()
    os.environ["CELERY_BROKER_URL"] = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13")
    os.environ["DEBUG"] = "0"
    setup_django()

    import numpy as np
    import orjson
    import psycopg
    import redis
    from django.db import connection, transaction

    from config.celery_app import app
    from ingest import selectors, services
    from ingest.testing import metered_grid_create
    from ingest.writer import copy_binary_readings
    from twin import models
    from twin.selectors import points_of
    from twin.services import participant_for_cli

    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).flushdb()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE twin_reading, twin_readinghourly, twin_readinghourdirty, twin_latestreading, twin_rejectedreading, "
                       "twin_telemetrybatch CASCADE")
    models.TelemetrySource.objects.filter(name="bench-gateway").delete()
    models.Grid.objects.filter(name="ingest-bench").delete()
    participant = participant_for_cli("Benchmark utility")
    grid = metered_grid_create(participant, name="ingest-bench", feeders=FEEDERS, meters_per_feeder=POINTS_PER_FEEDER)
    points = list(models.Meter.objects.filter(grid=grid).order_by("id").values_list("id", flat=True))
    _, key = services.telemetry_source_issue(participant=participant, name="bench-gateway")
    print(f"grid: {len(points)} points on {FEEDERS} feeders; {args.batches} batches of {STEPS_PER_BATCH * len(points)} readings; "
          f"{args.workers} worker processes; {args.clients} HTTP client(s)")

    bodies, rows = [], []
    for b in range(args.batches):
        readings = []
        for k in range(b * STEPS_PER_BATCH, (b + 1) * STEPS_PER_BATCH):
            ts = START + k * timedelta(minutes=15)
            stamp = ts.isoformat().replace("+00:00", "Z")
            readings.extend({"point": pk, "quantity": "active_power", "ts": stamp, "value": (pk % 97) + k / 4, "unit": "kW"}
                            for pk in points)
            rows.extend((pk, 1, ts, ((pk % 97) + k / 4) / 1000, 0, None) for pk in points)
        bodies.append(orjson.dumps({"readings": readings}))
    total = len(rows)
    print(f"  {total} readings, {sum(map(len, bodies)) / 1e6:.0f} MB of JSON")

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.dev"}
    processes = start_services(env, args.workers)
    try:
        wait_until(server_is_up, 60, "gunicorn")
        # Workers are long-lived: their start-up (imports, the load-flow warm-up, ~5 s of CPU per process) is not part
        # of the ingest rate, and on two cores it must not overlap the timed window.
        wait_until(lambda: pool_processes_up(app) >= args.workers, 120, "the Celery worker processes")
        for _ in range(4 * WEB_WORKERS):  # each web worker's first requests (database connection, DRF) are start-up too
            warm_up = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
            warm_up.request("GET", "/api/v1/telemetry/quantities", headers={"Authorization": f"Gateway {key}"})
            assert warm_up.getresponse().status == 200
        print("end to end: HTTP batch → broker → worker(s) → PostgreSQL")
        def upload(share: list[bytes]) -> None:
            client = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
            for body in share:
                client.request("POST", "/api/v1/telemetry/batches", body=body,
                               headers={"Authorization": f"Gateway {key}", "Content-Type": "application/json"})
                response = client.getresponse()
                response.read()
                assert response.status == 202, response.status

        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:  # gateways upload side by side (each to a gunicorn worker)
            list(pool.map(upload, [bodies[i :: args.clients] for i in range(args.clients)]))
        accepted_s = time.perf_counter() - started
        batches = models.TelemetryBatch.objects.filter(source__name="bench-gateway")
        wait_until(lambda: batches.filter(status__in=["succeeded", "failed", "dead"]).count() == args.batches, 600, "the batches")
        end_to_end_s = time.perf_counter() - started
    finally:
        for process in processes:
            process.terminate()
            process.wait()
    stored = sum(batches.values_list("accepted_count", flat=True))
    assert stored == total == models.Reading.objects.count(), (stored, total)
    e2e_rate = total / end_to_end_s
    print(f"  all {args.batches} batches answered 202 after     {accepted_s:8.2f} s")
    print(f"  all readings stored after                   {end_to_end_s:8.2f} s   {e2e_rate:10,.0f} readings/s   goal ≥ 100,000/s")
    started = time.perf_counter()
    hours = services.reading_rollups_refresh(settled_s=-60)
    print(f"  afterwards, off the write path (Celery beat): hourly rollup of the {hours} hours the batches marked "
          f"{time.perf_counter() - started:.2f} s")

    print("plain approach: one psycopg binary COPY of the same rows into the same table (emptied)")
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE twin_reading")
    with psycopg.connect(os.environ["DATABASE_URL"]) as raw, raw.cursor() as cursor:
        started = time.perf_counter()
        with cursor.copy("COPY twin_reading (point_id, quantity, ts, value, quality, batch_id) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "int2", "timestamptz", "float8", "int2", "int8"])
            for row in rows:
                copy.write_row(row)
        raw.commit()
        copy_s = time.perf_counter() - started
    copy_rate = total / copy_s
    print(f"  raw COPY, psycopg write_row per row         {copy_s:8.2f} s   {copy_rate:10,.0f} rows/s")
    # The workers lay out the binary COPY stream with numpy (ingest.writer): the same trick on the raw side, for a
    # baseline that is only PostgreSQL's share.
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE twin_reading")
    columns = list(zip(*rows, strict=True))
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    arrays = (np.array(columns[0]), np.array(columns[1]), np.array([(ts - epoch) // timedelta(microseconds=1) for ts in columns[2]]),
              np.array(columns[3]), np.array(columns[4]))  # the columns as the workers hold them (not timed, like `rows` above)
    with psycopg.connect(os.environ["DATABASE_URL"]) as raw, raw.cursor() as cursor:
        started = time.perf_counter()
        data = copy_binary_readings(*arrays, None)
        with cursor.copy("COPY twin_reading (point_id, quantity, ts, value, quality, batch_id) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(data)
        raw.commit()
        buffer_s = time.perf_counter() - started
    buffer_rate = total / buffer_s
    print(f"  raw COPY, one numpy-built binary stream     {buffer_s:8.2f} s   {buffer_rate:10,.0f} rows/s")
    print(f"  ratio end to end / raw COPY (write_row) = {e2e_rate / copy_rate:.0%}   goal ≥ 50 %;   "
          f"end to end / raw COPY (numpy stream) = {e2e_rate / buffer_rate:.0%}")

    print(f"latest value of every point of the {len(points)}-point grid")
    with connection.cursor() as cursor:  # the grid was created a minute ago: statistics as autovacuum keeps them on a live database
        cursor.execute("ANALYZE twin_meter")
        cursor.execute("ANALYZE twin_latestreading")
    meters = points_of([participant.pk]).filter(grid=grid)
    latest_ms, latest = median_ms(lambda: selectors.latest_readings(meters=meters))
    assert len(latest) == len(points)
    lateral_sql = ("SELECT m.id, r.ts, r.value FROM twin_meter m CROSS JOIN LATERAL (SELECT ts, value FROM twin_reading r "
                   "WHERE r.point_id = m.id AND r.quantity = 1 ORDER BY ts DESC LIMIT 1) r WHERE m.grid_id = %s")
    with connection.cursor() as cursor:
        lateral_ms, _ = median_ms(lambda: (cursor.execute(lateral_sql, [grid.pk]), cursor.fetchall()))
    print(f"  latest-value table (selector, rows as dicts) {latest_ms:7.1f} ms   goal < 100 ms")
    print(f"  plain: LATERAL on the readings' primary key  {lateral_ms:7.1f} ms   ratio {lateral_ms / latest_ms:.1f}×")

    feeder_points = points[:POINTS_PER_FEEDER]
    print(f"hourly means of one feeder ({len(feeder_points)} points) over a year of 15-minute data")
    with connection.cursor() as cursor:
        for month in range(1, 13):
            cursor.execute("SELECT twin_reading_partition_ensure(%s)", [f"2023-{month:02d}-01"])
    steps = int((YEAR[1] - YEAR[0]) / timedelta(minutes=15))
    with psycopg.connect(os.environ["DATABASE_URL"]) as raw, raw.cursor() as cursor:
        with cursor.copy("COPY twin_reading (point_id, quantity, ts, value) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "int2", "timestamptz", "float8"])
            for k in range(steps):
                ts = YEAR[0] + k * timedelta(minutes=15)
                for pk in feeder_points:
                    copy.write_row((pk, 1, ts, pk / 1000 + (k % 96) / 1e4))
        raw.commit()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE twin_reading")
    started = time.perf_counter()
    services.reading_rollups_rebuild(start=YEAR[0], end=YEAR[1])  # the workers keep the rollup; a raw COPY bypasses them
    rebuild_s = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE twin_reading")
        cursor.execute("VACUUM ANALYZE twin_readinghourly")
    print(f"  {steps * len(feeder_points)} readings loaded (raw COPY, not timed), hourly rollup rebuilt in {rebuild_s:.1f} s, "
          "tables vacuumed")
    spec = models.QUANTITIES["active_power"]
    hourly_ms, series = median_ms(lambda: selectors.readings_series(point_ids=feeder_points, spec=spec, start=YEAR[0], end=YEAR[1],
                                                                     resolution="hour", per_point=False), repeat=3)
    assert len(series[0]["readings"]) == 8760
    plain_sql = ("SELECT date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS b, avg(value), min(value), max(value), "
                 "count(value) FROM twin_reading WHERE point_id = ANY(%s) AND quantity = 1 AND ts >= %s AND ts < %s GROUP BY 1 ORDER BY 1")

    def plain_hourly():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")
            cursor.execute(plain_sql, [feeder_points, *YEAR])
            return cursor.fetchall()

    plain_ms, plain = median_ms(plain_hourly, repeat=3)
    assert len(plain) == 8760 and all(abs(row[1] - r["mean"]) < 1e-9 for row, r in zip(plain, series[0]["readings"], strict=True))
    print(f"  hourly rollup + edges (selector)             {hourly_ms:7.1f} ms   goal < 500 ms")
    print(f"  plain: aggregate of the readings             {plain_ms:7.1f} ms   ratio {plain_ms / hourly_ms:.1f}×")


if __name__ == "__main__":
    main()
