"""Shared setup of the benchmark scripts: Django against the benchmark database, a clean schema."""

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/gridtwin_bench"


def ensure_postgres_database(url: str) -> None:
    """Create the benchmark database when it does not exist yet."""
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin_url = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')


def setup_django() -> None:
    """Configure Django on BENCH_DATABASE_URL (default: local PostgreSQL, database gridtwin_bench) and migrate."""
    sys.path.insert(0, str(ROOT))
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    if url.startswith("postgres"):
        ensure_postgres_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def private_url(suffix: str) -> str:
    """BENCH_DATABASE_URL with `_<suffix>` appended to the database name (unless it already ends so): a database of one
    script's own, dropped and created afresh by `run_on_private_database`."""
    parsed = urlparse(os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    name = parsed.path.lstrip("/")
    ending = f"_{suffix}"
    return parsed._replace(path=f"/{name if name.endswith(ending) else name + ending}").geturl()


def drop_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    with psycopg.connect(parsed._replace(path="/postgres").geturl(), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{parsed.path.lstrip("/")}" WITH (FORCE)')


def run_on_private_database(suffix: str, run, args, *, keep: bool = False) -> None:
    """`run(args)` with Django set up on a fresh private database (`private_url(suffix)`), DEBUG off (it keeps every
    query's SQL in memory: not what a deployment measures) and Celery in process; the database is dropped at the end
    unless `keep`."""
    import time

    url = private_url(suffix)
    os.environ["BENCH_DATABASE_URL"] = url
    os.environ["DEBUG"] = "0"
    os.environ["CELERY_BROKER_URL"] = ""  # tasks run in process (the embedded path), whatever the shell says
    started = time.perf_counter()
    drop_database(url)
    setup_django()
    print(f"database {urlparse(url).path.lstrip('/')} created and migrated in {time.perf_counter() - started:.1f} s")
    try:
        run(args)
    finally:
        from django.db import connections

        connections.close_all()
        if not keep:
            drop_database(url)


def summary_ms(times: list[float]) -> tuple[float, float]:
    """Median and p95 (inclusive quantiles) of timings in ms."""
    import statistics

    return statistics.median(times), statistics.quantiles(times, n=100, method="inclusive")[94]
