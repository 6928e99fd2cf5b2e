"""Local development and the demo: SQLite and Celery in process unless the environment says otherwise."""

from config.settings.base import *  # noqa: F403
from config.settings.base import env_bool

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = SECRET_KEY or "dev-only-not-secret"  # noqa: F405
# SQLite ignores the INCLUDE columns of covering indexes (PostgreSQL uses them); the embedded demo does not need them.
SILENCED_SYSTEM_CHECKS = ["models.W040"]
