"""Replay SimBench load / PV / storage profiles of an imported SimBench grid through the ingest pipeline."""

import time
from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ingest import services
from ingest.replay import ReplayError, replay_batches
from twin import models

WAIT_POLL_S = 0.5


class Command(BaseCommand):
    help = ("Turn the SimBench profiles of an imported SimBench grid into readings of its meters (created when missing) "
            "and send them through the real pipeline (durable batch → Celery task → validation → storage).")

    def add_arguments(self, parser):
        parser.add_argument("--grid", type=int, required=True, help="id of a grid imported with import_grid --simbench")
        parser.add_argument("--simbench-profiles", action="store_true", required=True, help="replay the SimBench profiles")
        parser.add_argument("--start", help="first timestamp, ISO 8601 (default: yesterday 00:00 UTC)")
        parser.add_argument("--days", type=int, default=1)
        parser.add_argument("--batch-size", type=int, default=20000, help="readings per batch")
        parser.add_argument("--source", help="telemetry source name (default: replay-<grid id>, created when missing)")
        parser.add_argument("--no-wait", action="store_true", help="do not wait for the workers to finish the batches")
        parser.add_argument("--wait-timeout", type=float, default=3600, help="seconds to wait for the workers at most")

    def handle(self, *args, grid, simbench_profiles, start, days, batch_size, source, no_wait, wait_timeout, **options):
        grid_row = models.Grid.objects.filter(pk=grid).first()
        if grid_row is None:
            raise CommandError(f"no grid {grid}")
        start_at = self.parse_start(start)
        source_row = self.source(grid_row, source)
        batch_ids, sent = [], 0
        try:
            with tqdm(total=days * 96, unit="step", desc="replay", disable=None, file=self.stderr) as progress:
                for body, count, steps in replay_batches(grid_row, start=start_at, days=days, readings_per_batch=batch_size):
                    receipt = services.telemetry_batch_receive(source=source_row, body=body, content_type="application/json",
                                                               channel="replay")
                    batch_ids.append(receipt.batch.pk)
                    sent += count
                    progress.update(steps)
        except ReplayError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"sent {sent} readings in {len(batch_ids)} batches (source {source_row.name})")
        if not no_wait:
            self.report(self.wait(batch_ids, wait_timeout))

    def parse_start(self, start: str | None) -> datetime:
        if not start:
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            return today - timedelta(days=1)
        try:
            moment = datetime.fromisoformat(start)
        except ValueError as exc:
            raise CommandError(f"--start {start!r} is not ISO 8601") from exc
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def source(self, grid, name: str | None) -> models.TelemetrySource:
        name = name or f"replay-{grid.pk}"
        existing = models.TelemetrySource.objects.filter(name=name).first()
        if existing is not None:
            if existing.participant_id != grid.owner_id:
                raise CommandError(f"source {name} belongs to another participant")
            return existing
        return services.telemetry_source_issue(participant=grid.owner, name=name)[0]

    def wait(self, batch_ids: list[int], timeout_s: float) -> dict[str, int]:
        pending, deadline = set(batch_ids), time.monotonic() + timeout_s
        with tqdm(total=len(batch_ids), unit="batch", desc="stored", disable=None, file=self.stderr) as progress:
            while pending:
                done = set(models.TelemetryBatch.objects.filter(pk__in=pending).exclude(
                    status__in=["queued", "running"]).values_list("pk", flat=True))
                progress.update(len(done))
                pending -= done
                if pending and time.monotonic() > deadline:
                    raise CommandError(f"{len(pending)} batches still unfinished after {timeout_s} s: are workers running?")
                if pending:
                    time.sleep(WAIT_POLL_S)
        batches = models.TelemetryBatch.objects.filter(pk__in=batch_ids)
        totals = {"accepted": 0, "duplicate": 0, "rejected": 0}
        for accepted, duplicate, rejected in batches.values_list("accepted_count", "duplicate_count", "rejected_count"):
            totals["accepted"] += accepted
            totals["duplicate"] += duplicate
            totals["rejected"] += rejected
        totals["not succeeded"] = batches.exclude(status="succeeded").count()
        return totals

    def report(self, totals: dict[str, int]) -> None:
        self.stdout.write("stored: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
