"""gridtwin's Django project. Sets the thread count of the numerical libraries before anything imports them.

gridtwin scales by processes (web workers and Celery workers, one per core): a BLAS that also starts a
thread per core inside each process oversubscribes the machine, and its threads spin against each other.
On 2 busy cores, the chunks of a year of SimBench 1-MV-urban load flows took 11.5 s in one process with
OpenBLAS's default threads and 4.2 s with one. Set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS /
MKL_NUM_THREADS to override.
"""

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

from config.celery_app import app as celery_app  # noqa: E402

__all__ = ["celery_app"]
