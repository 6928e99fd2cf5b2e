"""Production: everything from the environment, secure cookies, no defaults for secrets or services.

Which settings module runs where (`DJANGO_SETTINGS_MODULE` always wins when it is set):

* `config.wsgi` (gunicorn, `make serve`) and `config.celery_app` (`make worker`, `make beat`, any `celery -A
  config`) default to **this module**: a process that serves requests or runs tasks is a deployment, and a
  forgotten variable must end in a refusal to start, never in DEBUG pages, a private SQLite file or tasks
  run inside the request.
* `manage.py` defaults to `config.settings.dev` (DEBUG on, SQLite and Celery in process) so that `make demo`
  and a newcomer's `manage.py runserver` work with no environment at all. Administration of a deployment
  (`migrate`, `createsuperuser`, `verify_audit` …) sets `DJANGO_SETTINGS_MODULE=config.settings.prod`, as the
  deployment's workers do.
* pytest uses `config.settings.test` (pyproject.toml).

Behind the TLS-terminating proxy (`config/gunicorn_conf.py`): the proxy must set `X-Forwarded-Proto` (and
strip it from clients), so that Django knows a request came over HTTPS (absolute URLs say https://, the
redirect below does not loop). `GRIDTWIN_TLS_PROXY=0` turns that trust off when gunicorn is reached directly.
HSTS (one year with subdomains by default: `SECURE_HSTS_SECONDS`, 0 turns it off, `SECURE_HSTS_INCLUDE_SUBDOMAINS`)
and the redirect of plain HTTP to HTTPS (`SECURE_SSL_REDIRECT`, on) are the defaults a hub of critical-infrastructure
data should have; a health check over plain HTTP goes to a path in `SECURE_REDIRECT_EXEMPT` (comma-separated regexes).
"""

import os

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import env_bool

_missing = [name for name in ("SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL") if not os.environ.get(name, "").strip()]
if _missing:
    raise ImproperlyConfigured(
        f"production settings (config.settings.prod) need {', '.join(_missing)} in the environment: SECRET_KEY a long random "
        "string, DATABASE_URL the PostgreSQL database (postgres://user@host:5432/name), CELERY_BROKER_URL the broker "
        "(redis://host:6379/0). They have no defaults here: without them the hub would run on a private SQLite file with "
        "tasks inside the request. For the embedded demo use config.settings.dev (manage.py's default).")

DEBUG = False
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
if env_bool("GRIDTWIN_TLS_PROXY", True):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [p for p in os.environ.get("SECURE_REDIRECT_EXEMPT", "").split(",") if p]
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", str(365 * 24 * 3600)))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
# Preloading is a commitment the deployment makes to the browsers' lists (hstspreload.org), not one this code can
# make for it: off unless asked, and its check (W021, "preload not set") is silenced for that reason only.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = ["security.W021"]
