"""How the API is served: gunicorn (`make serve`), behind a reverse proxy that terminates TLS and buffers uploads.

Sync workers (one request at a time each, no threads): a telemetry upload is CPU work in the worker (reading
the body, checking its outline, hashing it) plus one database write, so more threads per process would only
wait for the GIL. The environment overrides: `GRIDTWIN_BIND` (127.0.0.1:8000), `WEB_CONCURRENCY` (workers,
default one per core plus one), and the rest of the deployment's settings (`DJANGO_SETTINGS_MODULE`,
`DATABASE_URL`, `CELERY_BROKER_URL`, …) as for the workers.
"""

import os

bind = os.environ.get("GRIDTWIN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", str((os.cpu_count() or 1) + 1)))
# A 32 MB batch from a gateway on a slow link takes longer than gunicorn's default 30 s to arrive when no
# proxy buffers it.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
# Django, the apps and the URLconf load once in the arbiter; the workers fork from it warm (no database
# connection is opened before the fork).
preload_app = True
wsgi_app = "config.wsgi:application"


def when_ready(server) -> None:
    """Import the URLconf (every view module) before the workers fork, so no worker's first request pays for it."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 — the attribute access does the import
# The largest request line gunicorn takes (its default is 4,094): the API itself answers a longer path and query than
# twin.api.errors.MAX_URI_BYTES with a 414 in its error shape, which needs the line to reach it.
limit_request_line = 8190
