"""Local development and the demo: DEBUG on, SQLite and Celery in process unless the environment says otherwise.

The default of `manage.py` only (`make demo`, `runserver`); gunicorn and Celery workers default to
config.settings.prod, which refuses to start without its services (the reasons are in that module).
"""

from config.settings.base import *  # noqa: F403
from config.settings.base import env_bool

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = SECRET_KEY or "dev-only-not-secret"  # noqa: F405
# SQLite ignores the INCLUDE columns of covering indexes (PostgreSQL uses them); the embedded demo does not need them.
SILENCED_SYSTEM_CHECKS = ["models.W040"]
