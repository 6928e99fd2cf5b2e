"""Test settings: real PostgreSQL (DATABASE_URL, defaulting to the local server) and fast password hashing."""

import os

import dj_database_url

from config.settings.base import *  # noqa: F403

SECRET_KEY = "test-only-not-secret"  # noqa: S105 - tests only
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gridtwin"),
    )
}
# Commits return before the WAL reaches the disk: durability across a crash of the database server is not what the suite tests
# (tests/chaos.py restarts its own cluster with the production settings), and every request of the live-server tests commits.
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"]["OPTIONS"] = {"options": "-c synchronous_commit=off"}
GRIDTWIN_LOADFLOW_PREPARE_ON_WRITE = False  # no worker consumes the test broker (tests/test_loadflow_storage.py turns it on)
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
# No request rates in the suite (tests/test_throttling.py sets its own), and counts in memory, not in the test broker.
GRIDTWIN_THROTTLE_RATES = {"principal": None, "gateway": None}
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "throttle"},
}
