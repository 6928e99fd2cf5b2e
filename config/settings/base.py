"""Settings shared by every environment. Everything that differs between machines comes from the environment."""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


SECRET_KEY = os.environ.get("SECRET_KEY", "")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "oauth2_provider",
    "ontology",
    "twin",
    "ingest",
    "sharing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "twin.api.errors.UriBoundMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'gridtwin.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "0")),
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

# --- gridtwin -----------------------------------------------------------------------------------
# Base of the IRIs minted for grids and assets that arrive without IRIs of their own (converters).
GRIDTWIN_BASE_IRI = os.environ.get("GRIDTWIN_BASE_IRI", "https://gridtwin.example/id/")
# Where `manage.py demo` writes its files (exports, pictures, the operator's token).
GRIDTWIN_DEMO_DIR = os.environ.get("GRIDTWIN_DEMO_DIR", str(BASE_DIR / "var" / "demo"))
# Largest accepted RDF upload, bytes (50 MB).
GRIDTWIN_MAX_UPLOAD_BYTES = int(os.environ.get("GRIDTWIN_MAX_UPLOAD_BYTES", str(50 * 1024 * 1024)))
# Largest accepted single literal, characters.
GRIDTWIN_MAX_LITERAL_CHARS = int(os.environ.get("GRIDTWIN_MAX_LITERAL_CHARS", str(64 * 1024)))
DATA_UPLOAD_MAX_MEMORY_SIZE = GRIDTWIN_MAX_UPLOAD_BYTES + 1024 * 1024

REST_FRAMEWORK = {
    # Each establishes the request's principal (sharing.principals): a credential (token or gateway key), an
    # OAuth2 client's access token, or a user's session.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "sharing.authentication.CredentialAuthentication",
        "sharing.authentication.ApiClientAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "twin.api.errors.exception_handler",
    # `?format=` names an RDF syntax on export, not a DRF renderer.
    "URL_FORMAT_OVERRIDE": None,
    # Per-principal request rates (429 with Retry-After): GRIDTWIN_THROTTLE_RATES below.
    "DEFAULT_THROTTLE_CLASSES": ["sharing.throttling.PrincipalRateThrottle"],
}
# Requests per credential of a participant ("<n>/second|minute|hour|day"; "off" for no limit), read at each request:
# generous for people and scripts (20 per second sustained), and for telemetry gateways, whose batches are large.
GRIDTWIN_THROTTLE_RATES = {
    scope: (None if rate.strip().lower() in {"", "off", "none"} else rate.strip())
    for scope, rate in (("principal", os.environ.get("GRIDTWIN_THROTTLE_RATE", "1200/minute")),
                        ("gateway", os.environ.get("GRIDTWIN_THROTTLE_GATEWAY_RATE", "600/minute")))
}
# Where the throttle counts live: Redis (GRIDTWIN_THROTTLE_CACHE_URL, else the broker's Redis) so every web worker
# shares one count per principal; in-process memory when there is no Redis (the demo: one process).
_THROTTLE_CACHE_URL = os.environ.get("GRIDTWIN_THROTTLE_CACHE_URL") or (
    os.environ.get("CELERY_BROKER_URL", "") if os.environ.get("CELERY_BROKER_URL", "").startswith(("redis://", "rediss://")) else "")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": ({"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _THROTTLE_CACHE_URL}
                 if _THROTTLE_CACHE_URL else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "throttle"}),
}

# OAuth2 client credentials for third parties' machine clients (django-oauth-toolkit): secrets hashed on save,
# access tokens stored as checksums only (RFC 9700), one hour each.
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
OAUTH2_PROVIDER = {
    "SCOPES": {"shared:read": "read the twin views your agreements grant", "operator": "act as an operator of your participant"},
    "DEFAULT_SCOPES": ["shared:read"],
    "ACCESS_TOKEN_EXPIRE_SECONDS": int(os.environ.get("GRIDTWIN_OAUTH_TOKEN_SECONDS", "3600")),
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    # The rest of RFC 9700 as well (`check --deploy` clean): the hub issues client-credentials tokens only, so
    # refusing the implicit and password grants, plain PKCE, tokens in the query string and http redirects takes
    # nothing away; the gates make a later insecure value an error of `check --deploy`, not a warning.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
    "SCOPES_BACKEND_CLASS": "sharing.oauth.ApiClientScopes",
    "OAUTH2_VALIDATOR_CLASS": "sharing.oauth.ApiClientValidator",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "gridtwin API",
    "DESCRIPTION": "Grid-edge digital twin and data-sharing hub.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Request bodies as their own components: without read-only fields, with minLength 1 where blank is refused (the
    # schema states what the API takes, which tests/test_fuzz_schema.py holds it to).
    "COMPONENT_SPLIT_REQUEST": True,
    # a transformer's ratio and phase tap changers sit on the same sides: one enum for both
    "ENUM_NAME_OVERRIDES": {"TransformerSideEnum": "twin.models.assets.Transformer.TAP_SIDES"},
}

# --- Celery ---------------------------------------------------------------------------------------
# Without a broker URL, tasks run in process (the embedded default used by `make demo`).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = int(os.environ.get("CELERY_TASK_SOFT_TIME_LIMIT", "600"))
CELERY_TASK_TIME_LIMIT = int(os.environ.get("CELERY_TASK_TIME_LIMIT", "660"))
# Redis redelivers an unacknowledged task (its worker died) after the visibility timeout: keep it above the
# hard time limit, or a slow task runs twice (harmless for ingest, but wasted work).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "900")),
    "unacked_restore_interval": int(os.environ.get("CELERY_UNACKED_RESTORE_INTERVAL", "10")),
    "unacked_restore_throttle": int(os.environ.get("CELERY_UNACKED_RESTORE_THROTTLE", "10")),
}
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# Seconds a new pool process has to report before Celery kills it and starts another (Celery's default is 4): a
# replacement for a process that died must get through Django's start on a busy machine (twin.tasks warms up before the fork).
CELERY_WORKER_PROC_ALIVE_TIMEOUT = float(os.environ.get("CELERY_WORKER_PROC_ALIVE_TIMEOUT", "30"))
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Ingest housekeeping (beat): every GRIDTWIN_INGEST_REQUEUE_EVERY_S, publish again the batches still queued
# GRIDTWIN_INGEST_REQUEUE_AFTER_S after their last publish (the broker lost the message: a crash of Redis loses its
# last second of writes) or running that long past the hard time limit (their worker is gone).
GRIDTWIN_INGEST_REQUEUE_EVERY_S = float(os.environ.get("GRIDTWIN_INGEST_REQUEUE_EVERY_S", "600"))
GRIDTWIN_INGEST_REQUEUE_AFTER_S = int(os.environ.get("GRIDTWIN_INGEST_REQUEUE_AFTER_S", "1800"))
CELERY_BEAT_SCHEDULE = {
    "ingest-requeue-stale-batches": {"task": "ingest.requeue_stale_batches", "schedule": GRIDTWIN_INGEST_REQUEUE_EVERY_S},
    "ingest-create-partitions-ahead": {"task": "ingest.create_partitions_ahead", "schedule": 86400.0},
    "loadflow-sweep-stuck-runs": {"task": "twin.loadflow_sweep_stuck_runs", "schedule": 600.0},
}

# --- telemetry ingest -----------------------------------------------------------------------------
# Largest accepted batch body, bytes (a 100k-reading JSON batch with IRIs is ~15 MB), and readings per batch.
GRIDTWIN_TELEMETRY_MAX_BATCH_BYTES = int(os.environ.get("GRIDTWIN_TELEMETRY_MAX_BATCH_BYTES", str(32 * 1024 * 1024)))
GRIDTWIN_TELEMETRY_MAX_READINGS = int(os.environ.get("GRIDTWIN_TELEMETRY_MAX_READINGS", "200000"))
# A reading stamped later than now + this many seconds is rejected (timestamp_in_future); none before the floor.
GRIDTWIN_TELEMETRY_FUTURE_TOLERANCE_S = int(os.environ.get("GRIDTWIN_TELEMETRY_FUTURE_TOLERANCE_S", "900"))
GRIDTWIN_TELEMETRY_OLDEST = os.environ.get("GRIDTWIN_TELEMETRY_OLDEST", "2000-01-01T00:00:00+00:00")
# Deliveries of one batch to workers (first try + redeliveries after a lost worker or a transient error)
# before it is dead-lettered (status "dead" with the error).
GRIDTWIN_TELEMETRY_MAX_ATTEMPTS = int(os.environ.get("GRIDTWIN_TELEMETRY_MAX_ATTEMPTS", "5"))
# Back-pressure: with this many batches queued for the workers, new uploads get 503 + Retry-After (0: no bound).
GRIDTWIN_INGEST_MAX_QUEUED_BATCHES = int(os.environ.get("GRIDTWIN_INGEST_MAX_QUEUED_BATCHES", "2000"))
GRIDTWIN_INGEST_RETRY_AFTER_S = int(os.environ.get("GRIDTWIN_INGEST_RETRY_AFTER_S", "30"))
# Most rows a readings query may return before it must ask for a coarser resolution or a shorter window.
GRIDTWIN_TELEMETRY_MAX_QUERY_ROWS = int(os.environ.get("GRIDTWIN_TELEMETRY_MAX_QUERY_ROWS", "200000"))

# --- load flows -----------------------------------------------------------------------------------
# Voltage band of violations, ± per unit of nominal (EN 50160: 0.10); a run's parameters may narrow or widen it.
GRIDTWIN_LOADFLOW_VM_BAND_PU = float(os.environ.get("GRIDTWIN_LOADFLOW_VM_BAND_PU", "0.10"))
# Most steps of one time series (a leap year of 15-minute steps), and steps per chunk a worker solves (4 weeks).
GRIDTWIN_LOADFLOW_MAX_STEPS = int(os.environ.get("GRIDTWIN_LOADFLOW_MAX_STEPS", "35136"))
GRIDTWIN_LOADFLOW_CHUNK_STEPS = int(os.environ.get("GRIDTWIN_LOADFLOW_CHUNK_STEPS", "2688"))
# Deliveries of one run's task, or of one chunk of a time series, to workers (first try + redeliveries after a lost or
# killed worker) before the run fails as too_many_attempts; a run still running (or queued) this many seconds after it
# started (was created) is failed as deadline_exceeded by the sweeper (Celery beat, every 10 minutes).
GRIDTWIN_LOADFLOW_MAX_ATTEMPTS = int(os.environ.get("GRIDTWIN_LOADFLOW_MAX_ATTEMPTS", "3"))
GRIDTWIN_LOADFLOW_RUN_DEADLINE_S = int(os.environ.get("GRIDTWIN_LOADFLOW_RUN_DEADLINE_S", str(6 * 3600)))
# After every write of a grid, a worker builds its load-flow model into the disk cache (var/cache), so the first run after
# the write does not pay for it (a 10k-bus grid: 5–10 s). Only where workers exist: on the embedded default (no broker)
# it would block the request that wrote the grid.
GRIDTWIN_LOADFLOW_PREPARE_ON_WRITE = env_bool("GRIDTWIN_LOADFLOW_PREPARE_ON_WRITE", bool(CELERY_BROKER_URL))
# A snapshot of every grid every this many minutes (Celery beat, see config/celery_app.py; 0 turns it off).
GRIDTWIN_LOADFLOW_SNAPSHOT_MINUTES = int(os.environ.get("GRIDTWIN_LOADFLOW_SNAPSHOT_MINUTES", "15"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # pandapower says at import, at INFO, that its optional plotly plots are unavailable: noise for every command.
    "loggers": {"django.request": {"level": "ERROR"}, "pandapower.plotting": {"level": "WARNING"}},
}

# SPARQL over the permitted graph (sharing.sparql): limits of one query, and the graphs kept per web worker.
GRIDTWIN_SPARQL_TIMEOUT_S = float(os.environ.get("GRIDTWIN_SPARQL_TIMEOUT_S", "5"))
GRIDTWIN_SPARQL_MAX_ROWS = int(os.environ.get("GRIDTWIN_SPARQL_MAX_ROWS", "10000"))
GRIDTWIN_SPARQL_MAX_QUERY_CHARS = int(os.environ.get("GRIDTWIN_SPARQL_MAX_QUERY_CHARS", "20000"))
GRIDTWIN_SPARQL_MAX_RESULT_BYTES = int(os.environ.get("GRIDTWIN_SPARQL_MAX_RESULT_BYTES", str(32 * 1024 * 1024)))
GRIDTWIN_SPARQL_MEMORY_MB = int(os.environ.get("GRIDTWIN_SPARQL_MEMORY_MB", "512"))
GRIDTWIN_SPARQL_CACHE_GRAPHS = int(os.environ.get("GRIDTWIN_SPARQL_CACHE_GRAPHS", "8"))
GRIDTWIN_SPARQL_CACHE_TRIPLES = int(os.environ.get("GRIDTWIN_SPARQL_CACHE_TRIPLES", "1000000"))
