"""The short chaos run of `make test` (tests/chaos.py --short; `make chaos` is the long one).

Private Redis and PostgreSQL, the API under gunicorn, two Celery workers and beat, all with production settings; a
known set of readings streamed through the ingest API while workers are SIGKILLed mid-work, Redis is killed and
started again on its append-only file and PostgreSQL is restarted; then a load-flow time series solved undisturbed and
again while its chunks' workers are killed. Nothing acknowledged may be lost or stored twice, and the disturbed run
must equal the undisturbed one row for row.
"""

import json
import shutil
import subprocess
import sys
from glob import glob
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def test_short_chaos_run_loses_nothing_duplicates_nothing_and_redoes_killed_chunks_exactly(tmp_path):
    if not shutil.which("redis-server") or not glob("/usr/lib/postgresql/*/bin/initdb"):
        pytest.skip("the chaos run starts its own redis-server and PostgreSQL cluster (initdb, pg_ctl): not installed")
    report_path = tmp_path / "chaos-report.json"
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "chaos.py"), "--short", "--report", str(report_path)],  # noqa: S603
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert report_path.exists(), done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(report_path.read_text())
    ingest, loadflow, chaos = report["ingest"], report["loadflow"], report["chaos"]

    assert ingest["batches_acknowledged"] == ingest["batches_sent"], ingest["refusals"]
    assert (ingest["lost"], ingest["duplicated"], ingest["acknowledged_but_missing"]) == (0, 0, 0), ingest
    assert (ingest["wrongly_rejected"], ingest["wrong_reason"], ingest["wrong_value"], ingest["unexpected_stored"]) == (0, 0, 0, 0)
    assert ingest["readings_stored"] == ingest["distinct_valid_readings"] and ingest["readings_rejected"] == ingest["invalid_readings"]
    assert loadflow["disturbed_status"] == "succeeded", loadflow["disturbed_error"]
    assert loadflow["equal"], loadflow["differences"]
    # the chaos happened: workers were killed in the middle of their work, and Redis and PostgreSQL restarted
    assert chaos["kills"] >= 12 and chaos["kills_in_flight"].get("batch", 0) >= 1, chaos["events"]
    assert chaos["redis_restarts"] >= 1 and chaos["postgres_restarts"] >= 1
    assert done.returncode == 0, done.stdout[-4000:]
