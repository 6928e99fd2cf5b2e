"""Errors that mean the database went away for a moment, and the Celery task base that retries them.

A PostgreSQL restart or failover ends every session: whatever a task was doing fails with an OperationalError —
Django's, or psycopg's own where the code talks to psycopg directly (binary COPY, binary parameters). Neither says
anything about the work, so a task retries it (with backoff, on a new connection) instead of failing the run or
dead-lettering the batch; the work's own delivery count (a batch's `attempts`, a chunk's `attempts`, a run's
deliveries) still bounds how often.
"""

import psycopg
from celery import Task
from django.db import InterfaceError, OperationalError, connections

TRANSIENT_DATABASE_ERRORS = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)


class DatabaseTask(Task):
    """A task retried with backoff when its database went away; the retry runs on a new connection.

    Closing the connection matters: a session that psycopg saw die (outside Django's wrappers) is not known to
    Django as broken, and with persistent connections (DATABASE_CONN_MAX_AGE) every retry would reuse it and fail.
    """

    abstract = True
    autoretry_for = TRANSIENT_DATABASE_ERRORS
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    # Retries while the database cannot be reached count no delivery of the work (nothing claimed it): this bound is
    # what an outage uses up — 12 doublings up to a minute apart, with full jitter about five minutes on average.
    max_retries = 12

    def retry(self, *args, **kwargs):
        connections.close_all()
        return super().retry(*args, **kwargs)
