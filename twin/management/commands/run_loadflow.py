"""Run a load flow on a grid: a snapshot at a time, or a time series over a period; prints the run id (and results)."""

import json
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from ontology.errors import OntologyError
from twin import models
from twin.ids import parse_id
from twin.loadflow import selectors, services


def parse_time(text: str) -> datetime:
    """ISO 8601; a time without a zone is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CommandError(f"{text!r} is not an ISO 8601 time") from exc
    return value if timezone.is_aware(value) else value.replace(tzinfo=timezone.get_fixed_timezone(0))


class Command(BaseCommand):
    help = "Run a load flow: GRID (id, IRI, name or SimBench code) [--at TIME] or [--start TIME --end TIME]."
    # No system checks before each run (they import every view of the API: ~0.5 s of a 3 s command); `manage.py check`
    # and the deploy check run them where they belong.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("grid")
        parser.add_argument("--at", help="snapshot time (ISO 8601; default now)")
        parser.add_argument("--start", help="first step of a time series (ISO 8601)")
        parser.add_argument("--end", help="end of a time series, exclusive (ISO 8601)")
        parser.add_argument("--kind", choices=models.LoadFlowRun.Kind.values, help="default: snapshot, or timeseries with --start")
        parser.add_argument("--step-minutes", type=int, default=15)
        parser.add_argument("--parameters", help="JSON object: vm_min_pu, vm_max_pu, max_loading_percent, scenario …")
        parser.add_argument("--queue", action="store_true", help="hand the run to the Celery workers instead of solving here")
        parser.add_argument("--json", dest="as_json", action="store_true", help="print the run and its results as JSON")

    def handle(self, *args, grid, at, start, end, kind, step_minutes, parameters, queue, as_json, **options):
        found = self.find_grid(grid)
        try:
            params = _json_object(parameters)
            run = services.loadflow_run_create(
                grid=found, kind=kind or ("timeseries" if start else "snapshot"), at=parse_time(at) if at else None,
                start=parse_time(start) if start else None, end=parse_time(end) if end else None, step_minutes=step_minutes,
                parameters=params, trigger="command")
        except OntologyError as exc:
            raise CommandError(f"{exc.reason}: {exc.message}") from exc
        self.stdout.write(f"run {run.pk}")
        if queue:
            from twin.tasks import enqueue

            enqueue(run.pk)
            return
        for index in services.loadflow_run_execute(run_id=run.pk):
            services.loadflow_chunk_solve(run_id=run.pk, index=index)
        run.refresh_from_db()
        if as_json:
            self.stdout.write(_dumps(selectors.run_report(run)))
        else:
            self.stderr.write(f"{run.kind} {run.status}" + (f" — {run.error}" if run.error else "") + f"; summary {run.summary}")
        if run.status == models.LoadFlowRun.Status.FAILED:
            raise CommandError(run.error)

    def find_grid(self, key: str) -> models.Grid:
        grids = models.Grid.objects.all()
        found = (grids.filter(pk=number).first() if (number := parse_id(key)) else None) or grids.filter(iri=key).first() \
            or grids.filter(name=key).first() or grids.filter(source=f"simbench:{key}").order_by("-id").first()
        if found is None:
            raise CommandError(f"no grid {key!r} (give an id, IRI, name or SimBench code)")
        return found


def _json_object(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CommandError(f"--parameters is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CommandError("--parameters must be a JSON object")
    return value


def _dumps(value) -> str:
    return json.dumps(value, indent=1, default=str)
