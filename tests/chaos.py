"""Chaos run: readings and a load-flow time series through the real stack while its processes die, then an audit.

    .venv/bin/python tests/chaos.py [--kills N] [--readings N] [--workers K] [--redis-restarts N] [--pg-restarts N]
                                    [--lf-days N] [--lf-kills N] [--seed S] [--report var/chaos-report.json] [--short]

Everything runs on private infrastructure in a temporary directory, so the machine's own services are never
touched: a `redis-server` with the append-only file on, a PostgreSQL cluster (`initdb` + `pg_ctl` of the newest
/usr/lib/postgresql/*/bin, run as the `postgres` user when started as root), the API under gunicorn
(config/gunicorn_conf.py), K Celery workers (`celery -A config worker`, as `make worker`, one pool process each) and
Celery beat, all with the production settings (`config.settings.prod`). The grid, its meters, the gateway key and
the operator's token come from the project's management commands.

1. Ingest. A deterministic set of readings (some repeated exactly, in the batch and across batches, some invalid
   with a known reason) goes through `POST /api/v1/telemetry/batches` the way a gateway sends it: an Idempotency-Key
   per batch, retries on connection errors, 5xx, 429 and 503 (after Retry-After). Meanwhile workers are SIGKILLed —
   mostly the pool process running a task, sometimes the whole worker, which is then started again — Redis is killed
   and started again on its append-only file, and PostgreSQL is restarted (`pg_ctl restart -m fast|immediate`).
   Once everything is quiet the database is compared with the source: lost (acknowledged, but neither stored nor
   rejected), duplicated, acknowledged-but-missing batches, wrongly rejected or stored readings, wrong values.
2. Load flow. A time series is solved undisturbed, then again on the same inputs while the worker solving a chunk
   is SIGKILLed (each chunk fewer times than GRIDTWIN_LOADFLOW_MAX_ATTEMPTS, the documented bound), the task that
   plans the run is killed once, and Redis and PostgreSQL are restarted. The disturbed run must succeed with exactly
   the undisturbed run's rows: every chunk's arrays, violations, inputs and the run's summary.

The figures go to stdout as a table and to the JSON report; the exit status is 1 when anything was lost,
duplicated or differs. `make chaos` runs the long version, tests/test_chaos.py the short one.
"""

# ruff: noqa: S603, S607 - the harness starts the services it tests; every command line is its own, none comes from input
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from glob import glob
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GRID_CODE = "1-LV-rural1--0-sw"
READINGS_START = datetime(2024, 5, 1, tzinfo=UTC)
INVALID_START = datetime(2024, 9, 1, tzinfo=UTC)  # invalid readings get keys of their own: they never meet a valid one
LOADFLOW_START = datetime(2016, 6, 20, tzinfo=UTC)  # SimBench profiles feed the load flow
STEP = timedelta(minutes=15)
# (quantity, unit, divisor to the canonical unit): values are sent in these units and stored in the canonical one.
QUANTITY_UNITS = [("active_power", "kW", 1000.0), ("reactive_power", "Mvar", 1.0), ("voltage", "V", 1000.0)]
INVALID_KINDS = ["unknown_quantity", "not_a_number", "unit_mismatch", "unknown_point", "timestamp_without_zone"]
LOG_STARTED = {"batch": re.compile(r"telemetry batch (\d+): delivery (\d+)"),
               "chunk": re.compile(r"load-flow run (\d+) chunk (\d+): delivery (\d+)"),
               "run": re.compile(r"load-flow run (\d+): delivery (\d+)")}
LOG_FINISHED = re.compile(r"Task [\w.]+\[[0-9a-f-]+\] (succeeded|retry|raised|failed)|WorkerLostError")
LOG_READY = re.compile(r"@\S+ ready\.")


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, *, timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            value = predicate()
            if value:
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(interval_s)


# --- private infrastructure -------------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server on a free port with the append-only file on, in its own directory; killed and started again on it."""

    def __init__(self, directory: Path):
        self.directory, self.port, self.process = directory, free_port(), None
        directory.mkdir()

    def start(self) -> None:
        log_file = open(self.directory / "redis.log", "a")  # noqa: SIM115 - the process keeps it
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory), "--appendonly", "yes",
             "--appendfsync", "everysec", "--save", "", "--protected-mode", "no"], stdout=log_file, stderr=subprocess.STDOUT)
        import redis

        client = redis.Redis(port=self.port)
        wait_for(client.ping, timeout_s=30, what="redis")

    def restart(self, *, hard: bool, down_s: float) -> None:
        """SIGKILL (hard: the last second of writes may be lost, as on a crash) or SIGTERM, then start on the same AOF."""
        self.process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        self.process.wait(timeout=30)
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb, pg_ctl), on a free port, owned by `postgres` when run as root."""

    def __init__(self, directory: Path):
        bins = sorted(glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
        if not bins:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin, self.port = Path(bins[-1]), free_port()
        self.directory, self.data = directory, directory / "data"
        directory.mkdir()
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_owner:
            shutil.chown(directory, "postgres", "postgres")

    def run(self, *args: str) -> None:
        subprocess.run([*self.as_owner, str(self.bin / args[0]), *args[1:]], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def init(self) -> None:
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.directory}'\n"
                       "max_connections = 200\nfsync = on\nsynchronous_commit = on\n")
        self.pg_ctl("start")

    def pg_ctl(self, action: str, *options: str) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "postgres.log"), "-w", "-t", "60", *options, action)

    def restart(self, mode: str) -> None:
        """`pg_ctl restart -m fast` (sessions ended, clean shutdown) or `-m immediate` (a crash: recovery from the WAL)."""
        self.pg_ctl("restart", "-m", mode)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.pg_ctl("stop", "-m", "immediate")

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"


# --- the project's processes --------------------------------------------------------------------------------------


@dataclass
class Work:
    """What a worker's pool process is doing, from the line the service logs when it starts a delivery."""

    kind: str  # "batch", "chunk" or "run"
    subject: str  # the batch id, "run/chunk index" or the run id
    delivery: int
    started: float = field(default_factory=time.monotonic)


class Worker:
    """One `celery -A config worker` with one pool process; its log says what the pool process is working on.

    The services log each delivery they start (`telemetry batch 12: delivery 1`, `load-flow run 3 chunk 5: delivery 2`,
    `load-flow run 3: delivery 1`) from the pool process, and Celery logs the end of every task: between the two, the
    pool process is mid-work.
    """

    durations: dict[str, list[float]] = {}  # kind → seconds the finished deliveries took (shared by all workers)

    def __init__(self, number: int, stack: Stack):
        self.number, self.stack, self.process = number, stack, None
        self.work: Work | None = None
        self.ready = threading.Event()
        self.lock = threading.Lock()

    def start(self) -> None:
        self.ready.clear()
        with self.lock:
            self.work = None
        self.process = subprocess.Popen(
            [PYTHON, "-m", "celery", "-A", "config", "worker", "--loglevel=INFO", "--concurrency=1", "-n", f"chaos{self.number}@%h"],
            cwd=ROOT, env=self.stack.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._follow, args=(self.process,), daemon=True).start()

    def _follow(self, process: subprocess.Popen) -> None:
        with open(self.stack.directory / f"worker{self.number}.log", "ab") as out:
            for raw in process.stdout:
                out.write(raw)
                self._read(raw.decode("utf-8", "replace"))

    def _read(self, line: str) -> None:
        for kind, pattern in LOG_STARTED.items():
            if (match := pattern.search(line)) is not None:
                *subject, delivery = match.groups()
                with self.lock:
                    self.work = Work(kind, "/".join(subject), int(delivery))
                return
        if LOG_FINISHED.search(line):
            with self.lock:
                if self.work is not None:
                    self.durations.setdefault(self.work.kind, []).append(time.monotonic() - self.work.started)
                self.work = None
        elif LOG_READY.search(line):
            self.ready.set()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pool_pid(self) -> int | None:
        """The pool process (the only child of the worker's main process)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with contextlib.suppress(OSError, ValueError):
            children = [int(pid) for pid in path.read_text().split()]
            return children[0] if children else None
        return None

    def current(self) -> Work | None:
        with self.lock:
            return self.work

    def kill_pool_process(self) -> Work | bool | None:
        """SIGKILL the process running the task (the worker starts a new one and gets the task's message back); returns
        what it was doing (None: idle), False when there was no pool process to kill."""
        pid = self.pool_pid()
        if pid is None:
            return False
        with self.lock:
            work, self.work = self.work, None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return work

    def kill(self) -> Work | None:
        """SIGKILL the whole worker (main and pool process), as a lost machine: its unacknowledged message comes back
        after the visibility timeout."""
        with self.lock:
            work, self.work = self.work, None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        return work

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def typical_duration(kind: str) -> float:
    """The median time a delivery of `kind` took so far (a first guess before any finished)."""
    seen = sorted(Worker.durations.get(kind, []))
    return seen[len(seen) // 2] if seen else {"batch": 0.05, "chunk": 0.5, "run": 0.05}[kind]


class Stack:
    """The API, K workers and beat on the private services, with the production settings."""

    def __init__(self, directory: Path, redis: PrivateRedis, postgres: PrivatePostgres, workers: int):
        self.directory, self.api_port = directory, free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "GRIDTWIN_"))},
            "DJANGO_SETTINGS_MODULE": "config.settings.prod", "SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": postgres.url("gridtwin_chaos"), "CELERY_BROKER_URL": f"redis://127.0.0.1:{redis.port}/0",
            "ALLOWED_HOSTS": "127.0.0.1", "GRIDTWIN_BIND": f"127.0.0.1:{self.api_port}", "WEB_CONCURRENCY": "2",
            # A worker lost with its message unacknowledged is noticed after the visibility timeout: short here, still
            # above the hard time limit (config/settings/base.py says why).
            "CELERY_VISIBILITY_TIMEOUT": "40", "CELERY_TASK_SOFT_TIME_LIMIT": "25", "CELERY_TASK_TIME_LIMIT": "30",
            "CELERY_UNACKED_RESTORE_INTERVAL": "2", "CELERY_UNACKED_RESTORE_THROTTLE": "1",
            # Beat's housekeeping on a chaos clock: batches whose message Redis lost are published again after 20 s.
            "GRIDTWIN_INGEST_REQUEUE_EVERY_S": "5", "GRIDTWIN_INGEST_REQUEUE_AFTER_S": "20",
            "GRIDTWIN_LOADFLOW_SNAPSHOT_MINUTES": "0", "GRIDTWIN_INGEST_RETRY_AFTER_S": "1",
            "GRIDTWIN_LOADFLOW_CHUNK_STEPS": "96", "PYTHONUNBUFFERED": "1",
        }
        self.workers = [Worker(n, self) for n in range(workers)]
        self.api = self.beat = None

    def manage(self, *args: str) -> str:
        done = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout.strip()

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        out = open(self.directory / f"{name}.log", "ab")  # noqa: SIM115 - the process keeps it
        return subprocess.Popen([PYTHON, "-m", *args], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> None:
        self.api = self.spawn("api", "gunicorn", "-c", "config/gunicorn_conf.py")
        self.beat = self.spawn("beat", "celery", "-A", "config", "beat", "--loglevel=INFO", "-s", str(self.directory / "beat-schedule"))
        for worker in self.workers:
            worker.start()

    def wait_ready(self) -> None:
        for worker in self.workers:
            if not worker.ready.wait(180):
                raise TimeoutError(f"worker {worker.number} did not start: see {self.directory}/worker{worker.number}.log")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api_port}/api/v1/{path}"

    def stop(self) -> None:
        for process in (self.api, self.beat):
            if process and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        for worker in self.workers:
            worker.stop()


# --- the readings and what must become of each ---------------------------------------------------------------------


@dataclass
class Batch:
    """One upload: its body, its Idempotency-Key and the expected outcome of each reading."""

    number: int
    readings: list[dict]
    expected: list[tuple]  # per reading: ("valid", point, quantity, ts, canonical value) or ("invalid", reason)
    batch_id: int | None = None
    attempts: int = 0
    statuses: Counter = field(default_factory=Counter)

    @property
    def key(self) -> str:
        return f"chaos-batch-{self.number}"

    def body(self) -> bytes:
        return json.dumps({"readings": self.readings}).encode()


def _invalid(kind: str, point: int, ts: datetime, rng: random.Random) -> dict:
    reading = {"point": point, "quantity": "active_power", "ts": ts.isoformat().replace("+00:00", "Z"),
               "value": round(rng.uniform(0, 10), 3), "unit": "kW"}
    if kind == "unknown_quantity":
        reading["quantity"] = "flux_capacitance"
    elif kind == "not_a_number":
        reading["value"] = "n/a"
    elif kind == "unit_mismatch":
        reading["unit"] = "V"
    elif kind == "unknown_point":
        reading["point"] = 2**40 + point
    elif kind == "timestamp_without_zone":
        reading["ts"] = ts.replace(tzinfo=None).isoformat()
    return reading


def reading_plan(*, meters: list[int], count: int, per_batch: int, seed: int) -> list[Batch]:
    """`count` distinct valid readings in batches of about `per_batch`, with 3 % exact repeats inside the batch, 3 %
    repeats of an earlier batch's reading and 3 % invalid readings, shuffled inside each batch; deterministic in `seed`."""
    rng = random.Random(seed)
    keys_per_step = len(meters) * len(QUANTITY_UNITS)
    batches, earlier, made, invalid_made = [], [], 0, 0
    while made < count:
        readings, expected = [], []
        for _ in range(min(per_batch, count - made)):
            point = meters[made % len(meters)]
            quantity, unit, divisor = QUANTITY_UNITS[(made // len(meters)) % len(QUANTITY_UNITS)]
            ts = READINGS_START + (made // keys_per_step) * STEP
            value = round(rng.uniform(200, 250) if quantity == "voltage" else rng.uniform(-5, 15), 3)
            reading = {"point": point, "quantity": quantity, "ts": ts.isoformat().replace("+00:00", "Z"), "value": value, "unit": unit}
            readings.append(reading)
            expected.append(("valid", point, quantity, ts, value / divisor))
            made += 1
        extras = []
        for _ in range(max(1, len(readings) * 3 // 100)):
            extras.append((dict(rng.choice(readings)), None))  # repeated inside the batch
            if earlier:
                extras.append((dict(rng.choice(earlier)), None))  # repeated from an earlier batch
            kind = rng.choice(INVALID_KINDS)
            extras.append((_invalid(kind, rng.choice(meters), INVALID_START + invalid_made * STEP, rng), kind))
            invalid_made += 1
        earlier.extend(rng.sample(readings, min(5, len(readings))))
        for reading, kind in extras:
            if kind is None:
                original = expected[readings.index(reading)] if reading in readings else _expected_of(reading)
                readings.append(reading)
                expected.append(original)
            else:
                readings.append(reading)
                expected.append(("invalid", kind))
        order = list(range(len(readings)))
        rng.shuffle(order)
        batches.append(Batch(len(batches), [readings[i] for i in order], [expected[i] for i in order]))
    return batches


def _expected_of(reading: dict) -> tuple:
    divisor = {quantity: d for quantity, _, d in QUANTITY_UNITS}[reading["quantity"]]
    return ("valid", reading["point"], reading["quantity"], datetime.fromisoformat(reading["ts"]), reading["value"] / divisor)


# --- the gateway ---------------------------------------------------------------------------------------------------


class Gateway:
    """Sends batches as a gateway does: one Idempotency-Key per batch, retried until the hub answers 202.

    Retries connection errors, timeouts and 5xx with a capped backoff, 429 and 503 after their Retry-After; any other
    answer is a refusal and is recorded. Idempotency comes from the server: a retry sends the same key and body.
    """

    def __init__(self, stack: Stack, key: str):
        self.stack, self.session_headers = stack, {"Authorization": f"Gateway {key}", "Content-Type": "application/json",
                                                   "X-Forwarded-Proto": "https"}  # as the TLS proxy sets it
        self.refused: list[tuple[int, int, str]] = []
        self.local = threading.local()

    def send(self, batch: Batch, *, deadline: float) -> None:
        session = getattr(self.local, "session", None) or requests.Session()
        self.local.session = session
        body, pause = batch.body(), 0.2
        while time.monotonic() < deadline:
            batch.attempts += 1
            try:
                response = session.post(self.stack.url("telemetry/batches"), data=body, timeout=30,
                                        headers={**self.session_headers, "Idempotency-Key": batch.key})
            except requests.RequestException as exc:
                batch.statuses[type(exc).__name__] += 1
                session = self.local.session = requests.Session()
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            batch.statuses[response.status_code] += 1
            if response.status_code == 202:
                batch.batch_id = response.json()["id"]
                return
            if response.status_code in (429, 503):
                time.sleep(min(float(response.headers.get("Retry-After", "1")), 5.0))
            elif response.status_code >= 500:
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
            else:
                self.refused.append((batch.number, response.status_code, response.text[:300]))
                return


# --- chaos ---------------------------------------------------------------------------------------------------------


@dataclass
class ChaosLog:
    """What the monkey did, and what each kill hit."""

    kills: int = 0
    pool_kills: int = 0
    worker_kills: int = 0
    kills_in_flight: Counter = field(default_factory=Counter)  # kind of work → kills that hit it mid-work
    idle_kills: int = 0
    worker_exits: int = 0  # workers that died on their own (not killed) and were started again
    redis_restarts: int = 0
    postgres_restarts: int = 0
    hits: list[tuple[str, str, int]] = field(default_factory=list)  # (kind, subject, delivery) of each mid-work kill
    events: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {text}")
        log(text)

    def killed(self, worker: Worker, how: str, work: Work | None) -> None:
        self.kills += 1
        if how == "pool process":
            self.pool_kills += 1
        else:
            self.worker_kills += 1
        if work is None:
            self.idle_kills += 1
            self.note(f"kill #{self.kills}: {how} of worker {worker.number}, idle")
            return
        self.kills_in_flight[work.kind] += 1
        self.hits.append((work.kind, work.subject, work.delivery))
        self.note(f"kill #{self.kills}: {how} of worker {worker.number} mid-work: {work.kind} {work.subject}, delivery "
                  f"{work.delivery}, {time.monotonic() - work.started:.3f} s in")


class Monkey:
    """Kills workers (the pool process in the middle of a task, or the whole worker) and restarts Redis and PostgreSQL.

    A delivery that is the last one allowed (`max_delivery`: the bound after which the project gives up on purpose —
    a batch is dead-lettered, a run fails as too_many_attempts) is spared: the chaos tests recovery, not the bound."""

    def __init__(self, stack: Stack, redis: PrivateRedis, postgres: PrivatePostgres, rng: random.Random, chaos: ChaosLog):
        self.stack, self.redis, self.postgres, self.rng, self.chaos = stack, redis, postgres, rng, chaos
        self.background: list[threading.Thread] = []
        self.services_lock = threading.Lock()
        self.killed_workers: set[int] = set()  # workers down because the monkey killed them (it restarts them itself)
        threading.Thread(target=self._supervise, daemon=True).start()

    def _supervise(self) -> None:
        """Start again a worker that exited on its own, as the deployment's supervisor (systemd, Kubernetes) does."""
        while True:
            time.sleep(1)
            for worker in self.stack.workers:
                if worker.process is not None and not worker.alive() and worker.number not in self.killed_workers:
                    self.chaos.worker_exits += 1
                    self.chaos.note(f"worker {worker.number} exited on its own (status {worker.process.returncode}, see its log): "
                                    "started again, as a supervisor would")
                    worker.start()

    def busy_worker(self, kind: str, *, max_delivery: int, wait_s: float) -> Worker | None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            busy = [w for w in self.stack.workers if w.alive() and (work := w.current()) and work.kind == kind
                    and work.delivery < max_delivery]
            if busy:
                return self.rng.choice(busy)
            time.sleep(0.002)
        return None

    def kill_one(self, *, kind: str, max_delivery: int, whole_worker_share: float, wait_s: float = 3.0, idle_ok: bool = True) -> bool:
        """Kill a worker in the middle of a delivery of `kind` (at a random point of its typical duration); when none is
        busy within `wait_s`, an idle one if `idle_ok`. True when something was killed."""
        worker = self.busy_worker(kind, max_delivery=max_delivery, wait_s=wait_s)
        if worker is not None:
            time.sleep(self.rng.uniform(0, typical_duration(kind)))
        else:
            live = [w for w in self.stack.workers if w.alive() and w.ready.is_set()]
            if not live or not idle_ok:
                return False
            worker = self.rng.choice(live)
        if self.rng.random() < whole_worker_share:
            self.killed_workers.add(worker.number)
            work = worker.kill()
            self.chaos.killed(worker, "SIGKILL of the whole worker", work)
            self.in_background(self._restart_worker, worker)
            return True
        work = worker.kill_pool_process()
        if work is False:
            return False
        self.chaos.killed(worker, "pool process", work)
        return True

    def in_background(self, fn, *args) -> None:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        thread.start()
        self.background.append(thread)

    def _restart_worker(self, worker: Worker) -> None:
        time.sleep(self.rng.uniform(0.5, 3.0))
        worker.start()
        self.killed_workers.discard(worker.number)
        worker.ready.wait(180)

    def restart_redis(self) -> None:
        with self.services_lock:
            hard = self.chaos.redis_restarts % 2 == 0
            self.chaos.redis_restarts += 1
            self.chaos.note(f"redis restart #{self.chaos.redis_restarts} ({'SIGKILL' if hard else 'SIGTERM'}, same AOF)")
            self.redis.restart(hard=hard, down_s=self.rng.uniform(0.5, 3.0))
            self.chaos.note(f"redis up again (restart #{self.chaos.redis_restarts})")

    def restart_postgres(self) -> None:
        with self.services_lock:
            mode = "immediate" if self.chaos.postgres_restarts % 2 == 0 else "fast"
            self.chaos.postgres_restarts += 1
            self.chaos.note(f"postgres restart #{self.chaos.postgres_restarts} (pg_ctl restart -m {mode})")
            self.postgres.restart(mode)
            self.chaos.note(f"postgres up again (restart #{self.chaos.postgres_restarts})")

    def restart_mid_work(self, service: str, kind: str, *, wait_s: float = 10.0, background: bool = True) -> None:
        """Restart Redis or PostgreSQL once a worker is in the middle of a delivery of `kind`: in the background (the
        kills go on meanwhile), or before anything else happens (the work in flight meets the restart, not a kill)."""
        if self.busy_worker(kind, max_delivery=10**6, wait_s=wait_s) is not None:
            time.sleep(self.rng.uniform(0, typical_duration(kind) / 2))
        restart = self.restart_redis if service == "redis" else self.restart_postgres
        if background:
            self.in_background(restart)
        else:
            restart()

    def settle(self) -> None:
        for thread in self.background:
            thread.join()
        self.background.clear()
        for worker in self.stack.workers:
            wait_for(worker.alive, timeout_s=30, what=f"worker {worker.number} started again")
            worker.ready.wait(180)


def spread(total: int, count: int) -> list[int]:
    """`count` positions spread evenly inside 0..total (never at the very start or end)."""
    return [round(total * (i + 1) / (count + 1)) for i in range(count)]


# --- the database, read through the project's models ---------------------------------------------------------------


def django_ready(env: dict) -> None:
    os.environ.update({k: v for k, v in env.items() if k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "GRIDTWIN_", "SECRET_"))})
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def query(fn, *, attempts: int = 30):
    """Run a read against the database, surviving its restarts (a fresh connection each time)."""
    from django.db import InterfaceError, OperationalError, connection

    for attempt in range(attempts):
        try:
            connection.close()
            return fn()
        except (OperationalError, InterfaceError):
            if attempt == attempts - 1:
                raise
            time.sleep(1)
    return None


# --- phase 1: ingest -----------------------------------------------------------------------------------------------


def ingest_phase(args, stack: Stack, monkey: Monkey, chaos: ChaosLog, gateway: Gateway, meters: list[int]) -> dict:
    from django.conf import settings

    batches = reading_plan(meters=meters, count=args.readings, per_batch=args.per_batch, seed=args.seed)
    total = len(batches)
    restarts = sorted([(at, "redis") for at in spread(total, args.redis_restarts)] +
                      [(at, "postgres") for at in spread(total, args.pg_restarts)])
    log(f"ingest: {sum(len(b.readings) for b in batches)} readings in {total} batches, {args.kills} kills, "
        f"{args.redis_restarts} Redis and {args.pg_restarts} PostgreSQL restarts")
    lock, pending, sent = threading.Lock(), list(batches), [0]
    started = time.monotonic()
    deadline = started + args.timeout_s
    # Lockstep: a batch goes only on a permit, and the monkey hands out the permits, a few before each kill — so
    # there is work in flight whenever it strikes, and the stream lasts as long as the kills.
    permits, per_kill = threading.Semaphore(args.clients), total / max(args.kills, 1)

    def client() -> None:
        while True:
            with lock:
                if not pending:
                    return
                batch = pending.pop(0)
            while not permits.acquire(timeout=1) and time.monotonic() < deadline:
                pass
            gateway.send(batch, deadline=deadline)
            with lock:
                sent[0] += 1

    clients = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    for thread in clients:
        thread.start()
    owed = 0.0
    while chaos.kills < args.kills and any(t.is_alive() for t in clients) and time.monotonic() < deadline:
        while restarts and sent[0] >= restarts[0][0]:
            monkey.restart_mid_work(restarts.pop(0)[1], "batch", wait_s=2)
        owed += per_kill
        for _ in range(int(owed)):
            permits.release()
        owed -= int(owed)
        if not monkey.kill_one(kind="batch", max_delivery=settings.GRIDTWIN_TELEMETRY_MAX_ATTEMPTS,
                               whole_worker_share=args.whole_worker_share, wait_s=5):
            owed -= per_kill  # no worker up to kill: no more work either
            time.sleep(0.2)
    for _ in range(total):  # the kills are done: the rest of the stream goes as fast as it can
        permits.release()
    for _, service in restarts:  # a stream too short for them: at its end
        monkey.restart_mid_work(service, "batch", wait_s=0)
    for thread in clients:
        thread.join(timeout=60)
    streamed_s = time.monotonic() - started
    monkey.settle()
    log(f"ingest: stream done in {streamed_s:.0f} s; waiting for the workers to finish every batch")
    quiet_s = wait_quiet(batches, timeout_s=args.quiet_timeout_s)
    result = ingest_audit(batches, gateway, chaos)
    result.update({"stream_s": round(streamed_s, 1), "quiescence_s": round(quiet_s, 1)})
    return result


def wait_quiet(batches: list[Batch], *, timeout_s: float) -> float:
    """Wait until every acknowledged batch is finished (beat republishes the ones whose message Redis lost)."""
    from twin.models import TelemetryBatch

    ids = [b.batch_id for b in batches if b.batch_id is not None]
    started = time.monotonic()

    def unfinished() -> int:
        return TelemetryBatch.objects.filter(pk__in=ids, status__in=["queued", "running"]).count()

    last = None
    while time.monotonic() - started < timeout_s:
        left = query(unfinished)
        if left == 0:
            break
        if left != last:
            log(f"  {left} batches unfinished")
            last = left
        time.sleep(1)
    return time.monotonic() - started


def ingest_audit(batches: list[Batch], gateway: Gateway, chaos: ChaosLog) -> dict:
    """Compare the database with the source, reading by reading."""
    from django.db import connection

    from twin.models import QUANTITIES, RejectedReading, TelemetryBatch

    acknowledged = [b for b in batches if b.batch_id is not None]
    ids = [b.batch_id for b in acknowledged]
    expected_store: dict[tuple, float] = {}
    expected_reject: dict[tuple, str] = {}
    valid_positions: set[tuple] = set()
    for batch in acknowledged:
        for position, outcome in enumerate(batch.expected):
            if outcome[0] == "valid":
                _, point, quantity, ts, value = outcome
                expected_store[(point, QUANTITIES[quantity].code, ts)] = value
                valid_positions.add((batch.batch_id, position))
            else:
                expected_reject[(batch.batch_id, position)] = outcome[1]

    def read():
        with connection.cursor() as cursor:
            cursor.execute("SELECT point_id, quantity, ts, value, count(*) OVER (PARTITION BY point_id, quantity, ts) FROM twin_reading "
                           "WHERE batch_id = ANY(%s)", [ids])
            stored = cursor.fetchall()
        rejected = list(RejectedReading.objects.filter(batch_id__in=ids).values_list("batch_id", "position", "reason"))
        rows = list(TelemetryBatch.objects.filter(pk__in=ids).values_list("pk", "status", "attempts", "received_count",
                                                                         "accepted_count", "duplicate_count", "rejected_count", "error"))
        keys = Counter(TelemetryBatch.objects.filter(idempotency_key__startswith="chaos-batch-").values_list("idempotency_key", flat=True))
        return stored, rejected, rows, keys

    stored, rejected, rows, keys = query(read)
    stored_values = {(p, q, ts): v for p, q, ts, v, _ in stored}
    duplicated_readings = sum(1 for *_, n in stored if n > 1)
    rejected_by_position = Counter((b, p) for b, p, _ in rejected)
    reasons = {(b, p): r for b, p, r in rejected}
    missing = [k for k in expected_store if k not in stored_values]
    wrong_value = [k for k, v in expected_store.items() if k in stored_values and not math.isclose(stored_values[k], v, rel_tol=1e-12)]
    unexpected_stored = [k for k in stored_values if k not in expected_store]
    not_rejected = [k for k in expected_reject if k not in reasons]
    wrong_reason = [k for k, r in expected_reject.items() if k in reasons and reasons[k] != r]
    wrongly_rejected = [k for k in valid_positions if k in reasons]
    status = Counter(row[1] for row in rows)
    attempts = {row[0]: row[2] for row in rows}
    unbalanced = [row[0] for row in rows if row[1] == "succeeded" and row[3] != row[4] + row[5] + row[6]]
    found = {row[0] for row in rows}
    ack_missing = [b.batch_id for b in acknowledged if b.batch_id not in found] + [row[0] for row in rows if row[1] != "succeeded"]
    http = Counter()
    for batch in batches:
        http.update({str(k): v for k, v in batch.statuses.items()})
    return {
        "batches_sent": len(batches), "batches_acknowledged": len(acknowledged), "batches_refused": len(gateway.refused),
        "refusals": gateway.refused[:10], "http_answers": dict(http), "uploads": sum(b.attempts for b in batches),
        "readings_sent": sum(len(b.readings) for b in batches), "readings_acknowledged": sum(len(b.readings) for b in acknowledged),
        "distinct_valid_readings": len(expected_store), "readings_stored": len(stored_values),
        "readings_rejected": len(rejected), "invalid_readings": len(expected_reject),
        "lost": len(missing) + len(not_rejected), "lost_examples": [str(k) for k in (missing + not_rejected)[:10]],
        "duplicated": duplicated_readings + sum(n - 1 for n in rejected_by_position.values()) + sum(n - 1 for n in keys.values()),
        "acknowledged_but_missing": len(ack_missing), "acknowledged_but_missing_ids": ack_missing[:20],
        "wrongly_rejected": len(wrongly_rejected), "wrong_reason": len(wrong_reason), "wrong_value": len(wrong_value),
        "unexpected_stored": len(unexpected_stored), "unbalanced_batches": len(unbalanced),
        "batch_status": dict(status), "batches_redelivered": sum(1 for row in rows if row[2] > 1),
        # a mid-work kill is followed by another delivery (unless it came after the commit, when the next one is a no-op)
        "mid_work_kills_redone": sum(1 for kind, subject, delivery in chaos.hits
                                     if kind == "batch" and attempts.get(int(subject), 0) > delivery),
        "dead_errors": sorted({row[7][:200] for row in rows if row[1] != "succeeded"})[:5],
    }


# --- phase 2: load flow --------------------------------------------------------------------------------------------


class Operator:
    """The grid owner's operator at the API (a token from `onboard_participant`)."""

    def __init__(self, stack: Stack, token: str):
        self.stack, self.headers = stack, {"Authorization": f"Token {token}", "X-Forwarded-Proto": "https"}

    def call(self, method: str, path: str, *, deadline_s: float = 120, **kwargs) -> dict:
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                response = requests.request(method, self.stack.url(path), headers=self.headers, timeout=30, **kwargs)
                if response.status_code < 500 and response.status_code != 429:
                    response.raise_for_status()
                    return response.json()
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method} {path}: no answer")
            time.sleep(0.5)

    def start_series(self, grid_id: int, days: int) -> int:
        end = LOADFLOW_START + timedelta(days=days)
        return self.call("POST", "loadflow/runs", json={"grid": grid_id, "kind": "timeseries", "start": LOADFLOW_START.isoformat(),
                                                        "end": end.isoformat(), "parameters": {"vm_min_pu": 0.97, "vm_max_pu": 1.03}})["id"]

    def wait(self, run_id: int, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.call("GET", f"loadflow/runs/{run_id}")
            if run["status"] in ("succeeded", "failed"):
                return run
            time.sleep(0.5)
        raise TimeoutError(f"run {run_id} not finished in {timeout_s} s")


def run_rows(run_id: int) -> dict:
    """Everything a run stored, without ids, times and timings: chunk arrays, violations, inputs, results, summary."""
    import numpy as np

    from twin.models import LoadFlowRun

    def read():
        run = LoadFlowRun.objects.get(pk=run_id)
        chunks = {}
        for index, steps, start, blob in run.chunks.order_by("index").values_list("index", "steps", "start", "arrays"):
            arrays = dict(np.load(io.BytesIO(bytes(blob)))) if blob is not None else {}
            chunks[index] = (steps, start, arrays)
        related = {}
        for name in ("violations", "input_records", "bus_results", "branch_results", "hosting_results"):
            rows = getattr(run, name).values()
            related[name] = sorted(tuple(sorted((k, str(v)) for k, v in row.items() if k not in ("id", "run_id"))) for row in rows)
        fields = {name: getattr(run, name) for name in ("status", "error", "summary", "inputs", "layout", "telemetry_start",
                                                       "telemetry_end", "steps_total", "steps_done", "chunks_total", "chunks_done")}
        attempts = list(run.chunks.order_by("index").values_list("attempts", flat=True))
        return {"chunks": chunks, "related": related, "fields": fields, "attempts": attempts}

    return query(read)


def rows_differences(undisturbed: dict, disturbed: dict) -> list[str]:
    import numpy as np

    differences = []
    if undisturbed["chunks"].keys() != disturbed["chunks"].keys():
        differences.append(f"chunks {sorted(undisturbed['chunks'])} != {sorted(disturbed['chunks'])}")
    for index, (steps, start, arrays) in undisturbed["chunks"].items():
        other = disturbed["chunks"].get(index)
        if other is None:
            continue
        if (steps, start) != other[:2]:
            differences.append(f"chunk {index}: steps/start differ")
        if arrays.keys() != other[2].keys():
            differences.append(f"chunk {index}: arrays {sorted(arrays)} != {sorted(other[2])}")
        for name, values in arrays.items():
            theirs = other[2].get(name)
            if theirs is None or values.dtype != theirs.dtype or not np.array_equal(values, theirs, equal_nan=True):
                differences.append(f"chunk {index}: array {name} differs")
    for name, rows in undisturbed["related"].items():
        if rows != disturbed["related"][name]:
            differences.append(f"{name}: {len(rows)} rows vs {len(disturbed['related'][name])}, not the same")
    for name, value in undisturbed["fields"].items():
        if value != disturbed["fields"][name]:
            differences.append(f"run.{name}: {str(value)[:200]} != {str(disturbed['fields'][name])[:200]}")
    return differences


def loadflow_phase(args, stack: Stack, monkey: Monkey, chaos: ChaosLog, operator: Operator, grid_id: int) -> dict:
    from django.conf import settings

    from twin.models import LoadFlowRun

    started = time.monotonic()
    undisturbed_id = operator.start_series(grid_id, args.lf_days)
    undisturbed = operator.wait(undisturbed_id, args.timeout_s)
    log(f"load flow: undisturbed run {undisturbed_id} {undisturbed['status']} in {time.monotonic() - started:.0f} s")
    kills_before, started = chaos.kills, time.monotonic()
    disturbed_id = operator.start_series(grid_id, args.lf_days)
    # Kills stay under the cap with one attempt to spare: a PostgreSQL or Redis restart during a chunk costs it a delivery too
    # (the transient-error retry), and a chunk that lost all GRIDTWIN_LOADFLOW_MAX_ATTEMPTS deliveries fails the run by design.
    max_delivery = settings.GRIDTWIN_LOADFLOW_MAX_ATTEMPTS - 1
    monkey.kill_one(kind="run", max_delivery=max_delivery, whole_worker_share=0.0, wait_s=20, idle_ok=False)  # the planning task
    restarts = sorted([(at, "redis") for at in spread(args.lf_kills, args.lf_redis_restarts)] +
                      [(at, "postgres") for at in spread(args.lf_kills, args.lf_pg_restarts)])
    lf_kills = 0
    while time.monotonic() - started < args.timeout_s:
        status = query(lambda: LoadFlowRun.objects.filter(pk=disturbed_id).values_list("status", flat=True).first())
        if status in ("succeeded", "failed") or (lf_kills >= args.lf_kills and not restarts):
            break
        while restarts and lf_kills >= restarts[0][0]:
            monkey.restart_mid_work(restarts.pop(0)[1], "chunk", background=False)
        if lf_kills < args.lf_kills and monkey.kill_one(kind="chunk", max_delivery=max_delivery, idle_ok=False, wait_s=5,
                                                        whole_worker_share=args.lf_whole_worker_share):
            lf_kills += 1
        time.sleep(monkey.rng.uniform(0.0, 0.5))
    monkey.settle()
    disturbed = operator.wait(disturbed_id, args.timeout_s)
    disturbed_s = time.monotonic() - started
    log(f"load flow: disturbed run {disturbed_id} {disturbed['status']} after {chaos.kills - kills_before} kills, {disturbed_s:.0f} s")
    a, b = run_rows(undisturbed_id), run_rows(disturbed_id)
    differences = rows_differences(a, b)
    return {"undisturbed_run": undisturbed_id, "disturbed_run": disturbed_id, "undisturbed_status": undisturbed["status"],
            "disturbed_status": disturbed["status"], "disturbed_error": disturbed.get("error", ""), "days": args.lf_days,
            "chunks": len(a["chunks"]), "kills": chaos.kills - kills_before, "chunk_attempts": b["attempts"],
            "chunks_redone": sum(1 for n in b["attempts"] if n > 1),
            "mid_work_kills": [hit for hit in chaos.hits if hit[0] in ("chunk", "run") and hit[1].split("/")[0] == str(disturbed_id)],
            "differences": differences[:30], "equal": not differences and disturbed["status"] == "succeeded",
            "disturbed_s": round(disturbed_s, 1)}


# --- the run -------------------------------------------------------------------------------------------------------


def setup(stack: Stack) -> tuple[int, list[int], str, str]:
    """Migrate, start the processes, and meanwhile import the grid, make its meters and issue the credentials."""
    began = time.monotonic()
    stack.manage("migrate", "--noinput", "-v0")
    log(f"migrated in {time.monotonic() - began:.0f} s")
    stack.start()
    token = stack.manage("onboard_participant", "Chaos utility", "chaos-operator").splitlines()[-1]
    grid_id = int(stack.manage("import_grid", "--simbench", GRID_CODE, "--participant", "Chaos utility").split()[1])
    # a meter for every profiled load, generator and storage unit, through the twin's change path (as replay_telemetry does)
    stack.manage("shell", "-c", f"from ingest.services import profile_meters_ensure; from twin.models import Grid; "
                                f"profile_meters_ensure(grid=Grid.objects.get(pk={grid_id}))")
    key = stack.manage("issue_telemetry_key", "Chaos utility", "chaos-gateway").splitlines()[-1]
    from twin.models import Meter

    meters = query(lambda: list(Meter.objects.filter(grid_id=grid_id).order_by("id").values_list("id", flat=True)))
    stack.wait_ready()
    return grid_id, meters, key, token


def print_table(report: dict) -> None:
    ingest, lf, chaos = report["ingest"], report["loadflow"], report["chaos"]
    rows = [
        ("worker kills (pool / whole worker)", f"{chaos['kills']} ({chaos['pool_kills']} / {chaos['worker_kills']})"),
        ("kills with a task in flight", f"{sum(chaos['kills_in_flight'].values())} {chaos['kills_in_flight']}"),
        ("Redis restarts / PostgreSQL restarts", f"{chaos['redis_restarts']} / {chaos['postgres_restarts']}"),
        ("workers that exited on their own (restarted)", chaos["worker_exits"]),
        ("readings sent / acknowledged", f"{ingest['readings_sent']} / {ingest['readings_acknowledged']}"),
        ("batches sent / acknowledged / uploads", f"{ingest['batches_sent']} / {ingest['batches_acknowledged']} / {ingest['uploads']}"),
        ("distinct valid / stored", f"{ingest['distinct_valid_readings']} / {ingest['readings_stored']}"),
        ("invalid / rejected", f"{ingest['invalid_readings']} / {ingest['readings_rejected']}"),
        ("lost", ingest["lost"]), ("duplicated", ingest["duplicated"]),
        ("acknowledged but missing", ingest["acknowledged_but_missing"]),
        ("wrongly rejected / wrong reason / wrong value",
         f"{ingest['wrongly_rejected']} / {ingest['wrong_reason']} / {ingest['wrong_value']}"),
        ("batches redelivered", ingest["batches_redelivered"]),
        ("load flow: chunks / kills / chunks redone", f"{lf['chunks']} / {lf['kills']} / {lf['chunks_redone']}"),
        ("load flow: disturbed run", f"{lf['disturbed_status']}, {'equal to' if lf['equal'] else 'DIFFERS from'} the undisturbed run"),
        ("wall time", f"{report['wall_s']:.0f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    print("\n" + "\n".join(f"  {name:<{width}}  {value}" for name, value in rows) + "\n", flush=True)


def passed(report: dict) -> bool:
    ingest, lf = report["ingest"], report["loadflow"]
    return not any(ingest[k] for k in ("lost", "duplicated", "acknowledged_but_missing", "wrongly_rejected", "wrong_reason",
                                       "wrong_value", "unexpected_stored", "unbalanced_batches", "batches_refused")) and lf["equal"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="the short run of `make test` (the defaults below are the long one)")
    parser.add_argument("--kills", type=int, help="worker SIGKILLs while readings stream (long: 200)")
    parser.add_argument("--readings", type=int, help="distinct valid readings (long: 60000)")
    parser.add_argument("--per-batch", type=int, default=200)
    parser.add_argument("--clients", type=int, default=3, help="gateway connections sending at once")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (one pool process each)")
    parser.add_argument("--whole-worker-share", type=float, help="share of kills that take the whole worker down (long: 0.25)")
    parser.add_argument("--redis-restarts", type=int)
    parser.add_argument("--pg-restarts", type=int)
    parser.add_argument("--lf-days", type=int, help="days of the load-flow time series (one chunk a day)")
    parser.add_argument("--lf-kills", type=int, help="worker SIGKILLs while the disturbed load flow runs")
    parser.add_argument("--lf-redis-restarts", type=int)
    parser.add_argument("--lf-pg-restarts", type=int)
    parser.add_argument("--lf-whole-worker-share", type=float, help="(long: 0.2)")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--timeout-s", type=float, default=3600)
    parser.add_argument("--quiet-timeout-s", type=float, default=300)
    parser.add_argument("--report", default=str(ROOT / "var" / "chaos-report.json"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data) afterwards")
    args = parser.parse_args(argv)
    defaults = ({"kills": 12, "readings": 4000, "redis_restarts": 1, "pg_restarts": 1, "lf_days": 3, "lf_kills": 3,
                 "lf_redis_restarts": 0, "lf_pg_restarts": 1, "whole_worker_share": 0.15, "lf_whole_worker_share": 0.0} if args.short else
                {"kills": 200, "readings": 60000, "redis_restarts": 4, "pg_restarts": 4, "lf_days": 14, "lf_kills": 16,
                 "lf_redis_restarts": 2, "lf_pg_restarts": 2, "whole_worker_share": 0.25,
                 "lf_whole_worker_share": 0.2})
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)

    began = time.monotonic()
    for stop in (signal.SIGINT, signal.SIGTERM):  # stopped from outside: still clean up every process started here
        signal.signal(stop, lambda number, frame: sys.exit(128 + number))
    directory = Path(tempfile.mkdtemp(prefix="gridtwin-chaos-"))
    directory.chmod(0o755)
    redis, postgres = PrivateRedis(directory / "redis"), PrivatePostgres(directory / "postgres")
    stack = Stack(directory, redis, postgres, args.workers)
    chaos, ok = ChaosLog(), False
    try:
        redis.start()
        postgres.init()
        postgres.run("createdb", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres", "gridtwin_chaos")
        django_ready(stack.env)
        grid_id, meters, key, token = setup(stack)
        log(f"set up in {time.monotonic() - began:.0f} s: grid {grid_id}, {len(meters)} meters; logs in {directory}")
        monkey = Monkey(stack, redis, postgres, random.Random(args.seed), chaos)
        ingest = ingest_phase(args, stack, monkey, chaos, Gateway(stack, key), meters)
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps({"arguments": vars(args), "ingest": ingest, "loadflow": "not run yet",
                                                 "chaos": vars(chaos)}, indent=1, default=str))
        loadflow = loadflow_phase(args, stack, monkey, chaos, Operator(stack, token), grid_id)
        report = {"arguments": vars(args), "ingest": ingest, "loadflow": loadflow, "wall_s": round(time.monotonic() - began, 1),
                  "chaos": {k: v for k, v in vars(chaos).items()}}
        report["passed"] = ok = passed(report)
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=1, default=str))
        print_table(report)
        log(f"{'PASSED' if ok else 'FAILED'}; report in {args.report}")
    finally:
        stack.stop()
        redis.stop()
        postgres.stop()
        if args.keep or not ok:
            log(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
