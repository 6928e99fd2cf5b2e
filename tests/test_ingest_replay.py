"""Replaying SimBench profiles of an imported SimBench grid through the pipeline (as `make demo` does)."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from config.celery_app import app as celery_app
from twin import models

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture
def replay(django_capture_on_commit_callbacks):
    """Run the replay with Celery as the embedded default runs it: tasks in process, after their batch commits
    (the test's transaction never commits: the captured commit callbacks run when the replay is done)."""

    def run(**options):
        eager = celery_app.conf.task_always_eager
        celery_app.conf.task_always_eager = True
        try:
            with django_capture_on_commit_callbacks(execute=True):
                call_command("replay_telemetry", simbench_profiles=True, no_wait=True, **options)
        finally:
            celery_app.conf.task_always_eager = eager

    return run


def test_replay_turns_profiles_into_readings_of_new_meters(lv_net, replay):
    import simbench

    from tests.conftest import LV_CODE

    call_command("import_grid", simbench=LV_CODE)
    grid = models.Grid.objects.get(source=f"simbench:{LV_CODE}")
    start = datetime(2024, 1, 2, tzinfo=UTC)

    replay(grid=grid.pk, start=start.isoformat(), days=1, batch_size=1000)

    assert models.Meter.objects.filter(grid=grid).count() == len(lv_net.load) + len(lv_net.sgen)
    expected = 96 * (2 * len(lv_net.load) + len(lv_net.sgen))
    assert models.Reading.objects.count() == expected
    assert set(models.TelemetryBatch.objects.values_list("status", flat=True)) == {"succeeded"}
    profiles = simbench.get_absolute_values(lv_net, profiles_instead_of_study_cases=True)
    meter = models.Meter.objects.get(measured_iri=f"{grid.iri}/load/0")
    noon = models.Reading.objects.get(point=meter, quantity=1, ts=start + timedelta(hours=12))
    assert noon.value == pytest.approx(profiles[("load", "p_mw")][0].iloc[96 + 48], abs=1e-9)  # day 2 of the year, step 48
    batches = models.TelemetryBatch.objects.filter(channel="replay")
    assert sum(b.accepted_count for b in batches) == expected and not any(b.rejected_count for b in batches)

    replay(grid=grid.pk, start=start.isoformat(), days=1)
    assert models.Reading.objects.count() == expected  # the same readings again change nothing
    again = models.TelemetryBatch.objects.filter(channel="replay").order_by("id").last()
    assert (again.accepted_count, again.duplicate_count) == (0, expected)
