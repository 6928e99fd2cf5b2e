"""N concurrent API clients against the deployment's processes, and the ingest back-pressure at twice the sustainable rate.

The processes are started as `make serve` and `make worker` start them: gunicorn with `config/gunicorn_conf.py` (sync
workers, one per core plus one; `config.wsgi` defaults to the production settings) and a Celery worker with
`DJANGO_SETTINGS_MODULE=config.settings.prod`, one process per core. The script sets the deployment's environment:
a random SECRET_KEY, DATABASE_URL (a private PostgreSQL database: BENCH_DATABASE_URL with `_load` appended, dropped
and created afresh), CELERY_BROKER_URL (BENCH_BROKER_URL, default redis://127.0.0.1:6379/12 — flushed), ALLOWED_HOSTS;
the clients send `X-Forwarded-Proto: https` as the TLS proxy does (production redirects plain HTTP). The per-principal
throttles are raised to 1,000,000 requests a minute, not turned off: every request still pays the throttle's count
in Redis, but the figure is the hub's throughput, not the throttle's rate.

The world, through the project's own paths: SimBench `1-LV-rural1--0-sw` imported (`import_grid --simbench`), a day of
its profiles replayed through the ingest pipeline (`replay_telemetry`), a snapshot load flow solved, an aggregator with an
agreement in force over the grid (hourly, per feeder, k = 5; the aggregator story of `manage.py demo`, approved
directly), its OAuth2 client's token fetched from `/o/token/`, an operator's API token and a gateway key.

1. **Mix**: for each concurrency level (`--clients 8,32,64`), that many clients (threads, spread over up to 4 processes)
   send a weighted mix for `--seconds` each — grid reads, asset lists, telemetry reads and POSTed batches, load-flow
   results, shared meters and shared hourly telemetry under the agreement, the DCAT catalog — then the **baseline**:
   the same clients on `GET /api/v1/telemetry/quantities` (a constant list behind the same authentication, throttle
   and middleware: the floor of the stack). Per endpoint and overall: req/s, p50 / p95 / p99 ms, errors (any status
   other than the one expected, or no answer).
2. **Back-pressure**: gunicorn restarted with `GRIDTWIN_INGEST_MAX_QUEUED_BATCHES=--cap`. The sustainable ingest
   rate: 2 × worker-processes gateways, each uploading a batch and waiting for it to be stored, for `--ingest-seconds`.
   Then batches are sent open loop at `--overload` × that rate for `--ingest-seconds`: the hub must answer 503
   `overloaded` with Retry-After to what it cannot take, keep the queue near the cap (sampled every 0.1 s; the bound
   is the cap plus the web workers that may pass the check together), and store every reading of every 202.

Run: `.venv/bin/python benchmarks/load_api.py [--clients 8,32,64] [--seconds 20] [--ingest-seconds 30] [--cap 20]`
(`make load`). Figures go to `var/load-report.json` (`--report`). Exit status 1 when a request erred, a shed upload
had no Retry-After, the queue passed its bound or an accepted reading is missing.
"""

from __future__ import annotations

import argparse
import http.client
import io
import itertools
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from urllib.parse import urlencode

from _setup import ROOT, run_on_private_database

PORT = 8766
GRID = "1-LV-rural1--0-sw"
WORKERS = os.cpu_count() or 2  # `make worker`: one process per core
WEB_WORKERS = WORKERS + 1  # `make serve`: config/gunicorn_conf.py's default
CLIENT_PROCESSES = 4
RATE = "1000000/minute"
MIX_BATCH_START = datetime(2025, 3, 1, tzinfo=UTC)
INGEST_BATCH_START = datetime(2024, 1, 1, tzinfo=UTC)
INGEST_STEPS = 24  # 6 hours of 15-minute readings of every meter per back-pressure batch
BASELINE = "baseline quantities"
SLOT_S = 2_000  # seconds of batch timestamps per client thread (it sends fewer batches than that)


@dataclass
class Endpoint:
    """One kind of request of the mix: who sends it, how often (weight), and the status it must get."""

    name: str
    method: str
    path: str
    auth: str
    weight: int
    expected: int = 200
    body: str = ""  # "batch": a fresh one-step batch of every meter


@dataclass
class World:
    grid_id: int
    run_id: int
    feeder_id: int
    agreement_id: int
    meter_ids: list[int]
    day: datetime
    auth: dict[str, str] = field(default_factory=dict)


# --- the services ---------------------------------------------------------------------------------------------------


def deployment_env(url: str, broker: str, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TMPDIR", "DATABASE_CONN_MAX_AGE"}}
    return {**keep, "SECRET_KEY": secrets.token_urlsafe(50), "DATABASE_URL": url, "CELERY_BROKER_URL": broker,
            "ALLOWED_HOSTS": "127.0.0.1,localhost", "GRIDTWIN_THROTTLE_RATE": RATE, "GRIDTWIN_THROTTLE_GATEWAY_RATE": RATE,
            "LOG_LEVEL": "WARNING", **extra}


def serve(env: dict, log: Path) -> subprocess.Popen:
    """`make serve`: gunicorn -c config/gunicorn_conf.py (production settings by default), on the benchmark's port."""
    return subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn_conf.py"], cwd=ROOT,
                            env={**env, "GRIDTWIN_BIND": f"127.0.0.1:{PORT}"}, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def work(env: dict, log: Path) -> subprocess.Popen:
    """`make worker`: a Celery worker with production settings, one process per core."""
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=WARNING", f"--concurrency={WORKERS}",
                             "-n", "load@%h"], cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "config.settings.prod"},
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def request(method: str, path: str, *, auth: str = "", body: bytes | None = None, content_type: str = "",
            extra: dict | None = None, timeout: float = 60) -> tuple[int, dict, bytes]:
    """One request as the TLS proxy forwards it (a new connection: gunicorn's sync workers close each one)."""
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    headers = {"X-Forwarded-Proto": "https", "Host": "127.0.0.1", **({"Authorization": auth} if auth else {}),
               **({"Content-Type": content_type} if content_type else {}), **(extra or {})}
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def server_is_up() -> bool:
    try:
        return request("GET", "/api/v1/telemetry/quantities", timeout=2)[0] == 401
    except OSError:
        return False


def pool_processes_up(broker: str) -> int:
    """Worker processes that finished starting (a prefork child reports up once its start-up hooks ran)."""
    from celery import Celery

    stats = Celery(broker=broker).control.inspect(timeout=0.5).stats() or {}
    return sum(s["pool"].get("writes", {}).get("inqueues", {}).get("total", 0) for s in stats.values())


# --- the world ------------------------------------------------------------------------------------------------------


def world_create() -> World:
    """The grid, its telemetry and a load flow, the aggregator's agreement, and the credentials (module docstring)."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from ingest import services as ingest
    from sharing.models import Purpose
    from tests.hub import agreement_in_state, participant_create
    from twin import models
    from twin.loadflow import services as loadflow
    from twin.models import Credential

    started = time.perf_counter()
    call_command("import_grid", simbench=GRID, stdout=io.StringIO(), stderr=io.StringIO())
    grid = models.Grid.objects.get(source=f"simbench:{GRID}")
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    call_command("replay_telemetry", grid=grid.pk, simbench_profiles=True, days=1, start=day.isoformat(), stdout=io.StringIO(),
                 stderr=io.StringIO())
    run = loadflow.loadflow_run_create(grid=grid, trigger="command", at=day + timedelta(hours=12))
    for index in loadflow.loadflow_run_execute(run_id=run.pk):
        loadflow.loadflow_chunk_solve(run_id=run.pk, index=index)
    run.refresh_from_db()
    provider = grid.owner
    aggregator = participant_create("Load Aggregator", ["aggregator"])
    agreement = agreement_in_state(provider, aggregator, "active")
    user = get_user_model().objects.create(username="load-operator")
    provider.members.add(user)
    _, token = Credential.issue(kind=Credential.Kind.TOKEN, participant=provider, user=user, name="load operator")
    _, gateway_key = ingest.telemetry_source_issue(participant=provider, name="load-gateway")
    _, pressure_key = ingest.telemetry_source_issue(participant=provider, name="pressure-gateway")
    from sharing.oauth import api_client_issue

    _, client_id, client_secret = api_client_issue(participant=aggregator, name="load aggregator client")
    meters = list(models.Meter.objects.filter(grid=grid, retired_at__isnull=True).order_by("id").values_list("id", flat=True))
    feeder = models.Feeder.objects.filter(grid=grid, meters__isnull=False).order_by("id").first()
    readings = models.Reading.objects.filter(point__grid=grid).count()
    print(f"world: SimBench {GRID} ({models.Bus.objects.filter(grid=grid).count()} buses, {len(meters)} meters), {readings} readings "
          f"replayed, snapshot run {run.pk} {run.status}, agreement {agreement.pk} ({Purpose.FLEXIBILITY_PROCUREMENT}) in "
          f"{time.perf_counter() - started:.1f} s")
    world = World(grid_id=grid.pk, run_id=run.pk, feeder_id=feeder.pk, agreement_id=agreement.pk, meter_ids=meters, day=day)
    world.auth = {"operator": f"Token {token}", "gateway": f"Gateway {gateway_key}", "pressure": f"Gateway {pressure_key}",
                  "client_id": client_id, "client_secret": client_secret}
    return world


def consumer_token(world: World) -> str:
    """The aggregator's access token, fetched from the live server as its client would."""
    body = urlencode({"grant_type": "client_credentials", "client_id": world.auth["client_id"],
                      "client_secret": world.auth["client_secret"]})
    status, _, content = request("POST", "/o/token/", body=body.encode(), content_type="application/x-www-form-urlencoded")
    if status != 200:
        raise SystemExit(f"/o/token/ answered {status}: {content[:300]!r}")
    return f"Bearer {json.loads(content)['access_token']}"


def mix(world: World) -> list[Endpoint]:
    purpose = "flexibility_procurement"
    day = {"start": world.day.isoformat(), "end": (world.day + timedelta(days=1)).isoformat()}
    shared = {"purpose": purpose, "agreement": world.agreement_id}
    return [
        Endpoint("grid", "GET", f"/api/v1/grids/{world.grid_id}/", "operator", 3),
        Endpoint("buses", "GET", f"/api/v1/buses/?{urlencode({'grid': world.grid_id, 'limit': 100})}", "operator", 2),
        Endpoint("loads", "GET", f"/api/v1/loads/?{urlencode({'grid': world.grid_id, 'limit': 100})}", "operator", 2),
        Endpoint("feeder readings hourly", "GET", "/api/v1/telemetry/readings?" + urlencode(
            {"feeder": world.feeder_id, "quantity": "active_power", "resolution": "hour", "group": "all", **day}), "operator", 1),
        Endpoint("telemetry batch POST", "POST", "/api/v1/telemetry/batches", "gateway", 2, expected=202, body="batch"),
        Endpoint("load-flow results", "GET", f"/api/v1/loadflow/runs/{world.run_id}/results/", "operator", 2),
        Endpoint("shared meters", "GET", f"/api/v1/shared/meters?{urlencode({**shared, 'limit': 100})}", "consumer", 2),
        Endpoint("shared telemetry hourly", "GET", "/api/v1/shared/telemetry?" + urlencode({**shared, "quantity": "active_power", **day}),
                 "consumer", 1),
        Endpoint("catalog", "GET", f"/api/v1/shared/catalog?{urlencode({'limit': 20})}", "consumer", 1),
    ]


def batch_body(meter_ids: list[int], start: datetime, steps: int) -> bytes:
    readings = [{"point": pk, "quantity": "active_power", "ts": (start + k * timedelta(minutes=15)).isoformat().replace("+00:00", "Z"),
                 "value": round(1 + (pk % 7) * 0.1 + k * 0.01, 3), "unit": "kW"} for k in range(steps) for pk in meter_ids]
    return json.dumps({"readings": readings}).encode()


# --- the clients (in child processes) -------------------------------------------------------------------------------


def client_thread(plan: list[Endpoint], auth: dict, meter_ids: list[int], seconds: float, seed: int, slot: int, out: list) -> None:
    """Requests of the mix until `seconds` have passed; `slot` (unique per thread of the run) spaces its batches' times."""
    chooser = random.Random(seed)  # a reproducible mix, not a secret
    weights = [e.weight for e in plan]
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        endpoint = chooser.choices(plan, weights)[0]
        body = content_type = None
        if endpoint.body == "batch":  # one step of every meter, at a time no other request of the run uses (slot, count)
            body = batch_body(meter_ids, MIX_BATCH_START + timedelta(seconds=slot * SLOT_S + sent), 1)
            content_type = "application/json"
            sent += 1
        started = time.perf_counter()
        try:
            status = request(endpoint.method, endpoint.path, auth=auth[endpoint.auth], body=body, content_type=content_type or "")[0]
        except OSError:
            status = 0
        out.append((endpoint.name, status == endpoint.expected, (time.perf_counter() - started) * 1000, status))


def client_process(plan: list[Endpoint], auth: dict, meter_ids: list[int], threads: int, seconds: float, first_slot: int) -> list:
    out: list = []
    workers = [threading.Thread(target=client_thread, args=(plan, auth, meter_ids, seconds, first_slot + k, first_slot + k, out))
               for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return out


def run_clients(plan: list[Endpoint], world: World, clients: int, seconds: float, first_slot: int) -> list:
    """`clients` threads over up to CLIENT_PROCESSES forked processes; thread k of the run has slot `first_slot + k`."""
    processes = min(CLIENT_PROCESSES, clients)
    shares = [clients // processes + (1 if k < clients % processes else 0) for k in range(processes)]
    # spawned, not forked: a fork would inherit this process's broker and database connections (kombu's after-fork hook
    # then blocks on the inherited Redis socket)
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(client_process, plan, world.auth, world.meter_ids, share, seconds, first_slot + sum(shares[:k]))
                   for k, share in enumerate(shares)]
        return [row for future in futures for row in future.result()]


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else (values[0] if values else 0.0)


def summarise(rows: list, seconds: float, plan: list[Endpoint]) -> dict[str, dict]:
    """Per endpoint of the plan (in its order) and overall: req/s, latency percentiles, errors and their statuses."""
    by_name: dict[str, list] = {e.name: [] for e in plan}
    for row in rows:
        by_name[row[0]].append(row)
    by_name["overall"] = rows
    summary = {}
    for name, found in by_name.items():
        times = [r[2] for r in found]
        errors = [r[3] for r in found if not r[1]]
        summary[name] = {"requests": len(found), "req_per_s": round(len(found) / seconds, 1), "p50_ms": round(percentile(times, 50), 1),
                         "p95_ms": round(percentile(times, 95), 1), "p99_ms": round(percentile(times, 99), 1), "errors": len(errors),
                         "error_statuses": sorted(set(errors))}
    return summary


def print_level(clients: int, summary: dict, baseline: dict) -> None:
    print(f"\n{clients} clients — {'endpoint':<26} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, s in summary.items():
        print(f"{'':>{len(str(clients)) + 11}}{name:<26} {s['req_per_s']:8.1f} {s['p50_ms']:8.1f} {s['p95_ms']:8.1f} {s['p99_ms']:8.1f} "
              f"{s['errors']:7d}{'  ' + str(s['error_statuses']) if s['errors'] else ''}")
    b, o = baseline["overall"], summary["overall"]
    print(f"{'':>{len(str(clients)) + 11}}{BASELINE:<26} {b['req_per_s']:8.1f} {b['p50_ms']:8.1f} {b['p95_ms']:8.1f} {b['p99_ms']:8.1f} "
          f"{b['errors']:7d}")
    print(f"{'':>{len(str(clients)) + 11}}mix / baseline: throughput {o['req_per_s'] / b['req_per_s']:.2f}×, "
          f"p50 {o['p50_ms'] / b['p50_ms']:.1f}×")


# --- back-pressure --------------------------------------------------------------------------------------------------


def queued_batches() -> int:
    from twin import models

    return models.TelemetryBatch.objects.filter(status="queued").count()


def batch_finished(batch_id: int) -> bool:
    from twin import models

    return models.TelemetryBatch.objects.filter(pk=batch_id, status__in=["succeeded", "failed", "dead"]).exists()


def sustainable_rate(world: World, seconds: float, counter: itertools.count) -> float:
    """Batches per second the workers store when never idle: 2 × worker processes gateways, each waiting for its batch."""
    from django.db import connections

    finished: list[float] = []
    deadline = time.monotonic() + seconds

    def gateway() -> None:
        try:
            while time.monotonic() < deadline:
                status, _, content = upload(world, counter)
                if status != 202:
                    raise SystemExit(f"closed-loop upload answered {status}: {content[:200]!r}")
                batch_id = json.loads(content)["id"]
                while not batch_finished(batch_id):
                    time.sleep(0.05)
                finished.append(time.monotonic())
        finally:
            connections.close_all()

    started = time.monotonic()
    with ThreadPoolExecutor(2 * WORKERS) as pool:
        list(pool.map(lambda _: gateway(), range(2 * WORKERS)))
    return len(finished) / (time.monotonic() - started)


def upload(world: World, counter: itertools.count) -> tuple[int, dict, bytes]:
    k = next(counter)  # atomic under the GIL: each upload its own 6 hours
    body = batch_body(world.meter_ids, INGEST_BATCH_START + k * INGEST_STEPS * timedelta(minutes=15), INGEST_STEPS)
    return request("POST", "/api/v1/telemetry/batches", auth=world.auth["pressure"], body=body, content_type="application/json",
                   extra={"Idempotency-Key": f"pressure-{k}"})


def overload(world: World, rate_per_s: float, seconds: float, counter: itertools.count) -> dict:
    """Open loop at `rate_per_s` for `seconds`: the answers, and the queue depth sampled every 0.1 s meanwhile."""
    from django.db import connections

    answers: list[tuple[int, str | None, int | None]] = []
    depth: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        try:
            while not sampling.is_set():
                depth.append(queued_batches())
                time.sleep(0.1)
        finally:
            connections.close_all()

    def send() -> None:
        try:
            status, headers, content = upload(world, counter)
        except OSError:
            status, headers, content = 0, {}, b""
        answers.append((status, headers.get("Retry-After"), json.loads(content)["id"] if status == 202 else None))

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    total = int(rate_per_s * seconds)
    # enough senders that a slow answer does not slow the offer (an upload may wait seconds in the listen queue)
    with ThreadPoolExecutor(max(4 * WEB_WORKERS, int(rate_per_s * 4))) as pool:
        for k in range(total):
            time.sleep(max(0.0, started + k / rate_per_s - time.monotonic()))
            pool.submit(send)
    sent_s = time.monotonic() - started
    sampling.set()
    sampler.join()
    return {"answers": answers, "depth": depth, "sent_s": sent_s}


def verify_stored(accepted_ids: list[int], timeout_s: float = 600) -> dict:
    """Wait for the accepted batches, then compare what they carried with what the readings table holds."""
    from django.db import connection

    from twin import models

    batches = models.TelemetryBatch.objects.filter(pk__in=accepted_ids)
    wait_until(lambda: not batches.filter(status__in=["queued", "running"]).exists(), timeout_s, "the accepted batches")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM twin_reading WHERE batch_id = ANY(%s)", [accepted_ids])
        stored = cursor.fetchone()[0]
    carried = sum(batches.values_list("received_count", flat=True))
    return {"accepted_batches": len(accepted_ids), "batches_stored": batches.count(),
            "succeeded": batches.filter(status="succeeded").count(), "readings_accepted": carried, "readings_stored": stored}


# --- main -----------------------------------------------------------------------------------------------------------


def run(args) -> None:
    import redis

    broker = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12")
    redis.Redis.from_url(broker).flushdb()
    url = os.environ["DATABASE_URL"]
    world = world_create()
    logs = ROOT / "var" / "load"
    logs.mkdir(parents=True, exist_ok=True)
    env = deployment_env(url, broker)
    report: dict = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": {"cores": os.cpu_count(),
                    "load_average": os.getloadavg()}, "web_workers": WEB_WORKERS, "worker_processes": WORKERS,
                    "throttle_rate": RATE, "seconds_per_level": args.seconds, "levels": {}}
    failures: list[str] = []
    wall = time.perf_counter()
    worker = work(env, logs / "celery.log")
    server = serve(env, logs / "gunicorn.log")
    try:
        wait_until(server_is_up, 120, "gunicorn")
        wait_until(lambda: pool_processes_up(broker) >= WORKERS, 180, "the Celery worker processes")
        world.auth["consumer"] = consumer_token(world)
        plan = mix(world)
        baseline_plan = [Endpoint(BASELINE, "GET", "/api/v1/telemetry/quantities", "operator", 1)]
        for endpoint in [e for e in plan + baseline_plan if not e.body]:  # each web worker's first requests are start-up
            for _ in range(2 * WEB_WORKERS):
                status, _, content = request(endpoint.method, endpoint.path, auth=world.auth[endpoint.auth])
                if status != endpoint.expected:
                    raise SystemExit(f"{endpoint.name}: {endpoint.path} answered {status}: {content[:300]!r}")
        print(f"{WEB_WORKERS} gunicorn sync workers, {WORKERS} Celery worker processes, throttle {RATE} per principal; "
              f"{args.seconds:g} s per level and for the baseline; load average {os.getloadavg()[0]:.1f}")
        first_slot = 0
        for clients in args.clients:
            summary = summarise(run_clients(plan, world, clients, args.seconds, first_slot), args.seconds, plan)
            baseline = summarise(run_clients(baseline_plan, world, clients, args.seconds, first_slot + clients), args.seconds,
                                 baseline_plan)
            first_slot += 2 * clients
            print_level(clients, summary, baseline)
            report["levels"][str(clients)] = {"mix": summary, "baseline": baseline}
            failures += [f"{clients} clients: {s['errors']} errors on {name}" for name, s in summary.items()
                         if s["errors"] and name != "overall"]
            failures += [f"{clients} clients: {baseline['overall']['errors']} baseline errors"] if baseline["overall"]["errors"] else []
        wait_until(lambda: queued_batches() == 0, 300, "the mix's batches")

        stop(server)
        server = serve({**env, "GRIDTWIN_INGEST_MAX_QUEUED_BATCHES": str(args.cap)}, logs / "gunicorn.log")
        wait_until(server_is_up, 120, "gunicorn (with the ingest cap)")
        report["backpressure"] = pressure = backpressure(world, args, failures)
    finally:
        stop(server)
        stop(worker)
    report["wall_s"] = round(time.perf_counter() - wall, 1)
    report["failures"] = failures
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nfigures written to {args.report}; services and clients took {report['wall_s']} s")
    if failures:
        print("FAILED: " + "; ".join(failures))
        raise SystemExit(1)
    print(f"zero errors; back-pressure held (max {pressure['max_queued']} queued, cap {args.cap}); every accepted reading stored")


def backpressure(world: World, args, failures: list[str]) -> dict:
    from django.db import connections

    counter = itertools.count()
    readings_per_batch = INGEST_STEPS * len(world.meter_ids)
    print(f"\ningest back-pressure: batches of {readings_per_batch} readings, cap {args.cap} queued batches, "
          f"{WEB_WORKERS} web workers")
    rate = sustainable_rate(world, args.ingest_seconds, counter)
    print(f"  sustainable (closed loop, {2 * WORKERS} gateways waiting for their batch): {rate:.1f} batches/s = "
          f"{rate * readings_per_batch:,.0f} readings/s")
    target = args.overload * rate
    found = overload(world, target, args.ingest_seconds, counter)
    answers = found["answers"]
    accepted = [batch_id for status, _, batch_id in answers if status == 202]
    shed = [retry for status, retry, _ in answers if status == 503]
    other = sorted({status for status, _, _ in answers if status not in (202, 503)})
    max_queued = max(found["depth"], default=0)
    bound = args.cap + WEB_WORKERS
    print(f"  open loop at {args.overload:g}× = {target:.1f} batches/s for {args.ingest_seconds:g} s: {len(answers)} uploads, all answered "
          f"after {found['sent_s']:.1f} s ({len(answers) / found['sent_s']:.1f}/s), {len(accepted)} accepted (202), {len(shed)} shed "
          f"(503 overloaded, {sum(1 for r in shed if r)} with Retry-After {shed[0] if shed else '-'} s), other statuses {other or 'none'}")
    print(f"  queue depth: max {max_queued} queued batches (sampled every 0.1 s) vs cap {args.cap} "
          f"(bound: cap + {WEB_WORKERS} web workers passing the check together = {bound})")
    stored = verify_stored(accepted)
    connections.close_all()
    print(f"  accepted {stored['accepted_batches']} batches / {stored['readings_accepted']} readings → stored "
          f"{stored['batches_stored']} batches ({stored['succeeded']} succeeded) / {stored['readings_stored']} readings")
    if not shed:
        failures.append("no upload was shed at twice the sustainable rate")
    if any(r is None for r in shed):
        failures.append("a 503 without Retry-After")
    if other:
        failures.append(f"back-pressure answers other than 202/503: {other}")
    if max_queued > bound:
        failures.append(f"queue grew to {max_queued} batches, past the bound {bound}")
    if not (stored["batches_stored"] == stored["succeeded"] == len(accepted) and stored["readings_stored"] == stored["readings_accepted"]):
        failures.append(f"accepted readings missing: {stored}")
    return {"readings_per_batch": readings_per_batch, "sustainable_batches_per_s": round(rate, 2),
            "sustainable_readings_per_s": round(rate * readings_per_batch), "offered_batches_per_s": round(target, 2),
            "sent": len(answers), "sent_per_s": round(len(answers) / found["sent_s"], 2), "accepted": len(accepted), "shed_503": len(shed),
            "shed_with_retry_after": sum(1 for r in shed if r), "retry_after_s": shed[0] if shed else None, "other_statuses": other,
            "cap": args.cap, "bound": bound, "max_queued": max_queued, **stored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=lambda s: [int(n) for n in s.split(",")], default=[8, 32, 64],
                        help="concurrency levels, comma-separated")
    parser.add_argument("--seconds", type=float, default=20, help="seconds per level (and per baseline)")
    parser.add_argument("--ingest-seconds", type=float, default=30, help="seconds of the sustainable and of the overload phase")
    parser.add_argument("--cap", type=int, default=20,
                        help="GRIDTWIN_INGEST_MAX_QUEUED_BATCHES of the back-pressure phase (small, so the queue reaches it in seconds)")
    parser.add_argument("--overload", type=float, default=2.0, help="offered ingest rate, times the sustainable one")
    parser.add_argument("--report", default=str(ROOT / "var" / "load-report.json"))
    parser.add_argument("--keep", action="store_true", help="keep the private database")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated run still stops its gunicorn and worker (finally)
    run_on_private_database("load", run, args, keep=args.keep)


if __name__ == "__main__":
    main()
