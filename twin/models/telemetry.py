"""Telemetry in the twin: the quantity vocabulary, telemetry sources, batches, readings and their rejections.

A reading is (measurement point, quantity, timestamp, value, quality); the point is a `Meter`, the
quantity comes from a fixed vocabulary with one canonical unit each (a QUDT unit IRI), and values are
stored in that unit. The natural key (point, quantity, ts) is the primary key, so writing a reading
twice stores it once. On PostgreSQL the readings table is range-partitioned by month on `ts`
(migration 0002); the model describes the parent table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import models

from twin.models.assets import Meter
from twin.models.credentials import Credential
from twin.models.grid import Participant

QUDT_UNIT = "http://qudt.org/vocab/unit/"


@dataclass(frozen=True)
class QuantitySpec:
    """One measured quantity: its canonical unit (symbol and QUDT IRI), the units accepted on the way in
    with their factor to the canonical unit, and the physically plausible range in the canonical unit.

    Energies are interval energies (the energy of the interval that ends at the reading's timestamp),
    so summing them over a period is meaningful.
    """

    code: int
    name: str
    unit: str
    unit_iri: str
    factors: dict[str, float] = field(hash=False)
    min_value: float
    max_value: float
    energy: bool = False


def _quantity(code: int, name: str, units: list[tuple[str, str, float]], min_value: float, max_value: float,
              energy: bool = False) -> QuantitySpec:
    """A quantity from its units as (symbol, QUDT unit name, factor to the canonical unit); the first is canonical.

    Each unit is accepted as its symbol, its QUDT IRI and its `unit:` CURIE.
    """
    factors = {}
    for symbol, qudt_name, factor in units:
        factors.update({symbol: factor, QUDT_UNIT + qudt_name: factor, "unit:" + qudt_name: factor})
    return QuantitySpec(code, name, units[0][0], QUDT_UNIT + units[0][1], factors, min_value, max_value, energy)


QUANTITIES: dict[str, QuantitySpec] = {spec.name: spec for spec in [
    _quantity(1, "active_power", [("MW", "MegaW", 1.0), ("W", "W", 1e-6), ("kW", "KiloW", 1e-3), ("GW", "GigaW", 1e3)],
              -1e4, 1e4),
    _quantity(2, "reactive_power", [("Mvar", "MegaV-A_Reactive", 1.0), ("var", "V-A_Reactive", 1e-6),
                                    ("kvar", "KiloV-A_Reactive", 1e-3)], -1e4, 1e4),
    _quantity(3, "apparent_power", [("MVA", "MegaV-A", 1.0), ("VA", "V-A", 1e-6), ("kVA", "KiloV-A", 1e-3)], 0.0, 1e4),
    _quantity(4, "active_energy", [("MWh", "MegaW-HR", 1.0), ("Wh", "W-HR", 1e-6), ("kWh", "KiloW-HR", 1e-3),
                                   ("GWh", "GigaW-HR", 1e3)], -1e9, 1e9, energy=True),
    _quantity(5, "reactive_energy", [("Mvarh", "MegaV-A_Reactive-HR", 1.0), ("varh", "V-A_Reactive-HR", 1e-6),
                                     ("kvarh", "KiloV-A_Reactive-HR", 1e-3)], -1e9, 1e9, energy=True),
    _quantity(6, "voltage", [("kV", "KiloV", 1.0), ("V", "V", 1e-3)], 0.0, 1000.0),
    _quantity(7, "current", [("kA", "KiloA", 1.0), ("A", "A", 1e-3)], 0.0, 100.0),
    _quantity(8, "state_of_charge", [("%", "PERCENT", 1.0), ("%EL", "PERCENT", 1.0)], 0.0, 100.0),
    _quantity(9, "frequency", [("Hz", "HZ", 1.0)], 40.0, 70.0),
    _quantity(10, "power_factor", [("1", "UNITLESS", 1.0)], -1.0, 1.0),
]}
QUANTITY_BY_CODE: dict[int, QuantitySpec] = {spec.code: spec for spec in QUANTITIES.values()}
QUANTITY_CHOICES = [(spec.code, spec.name) for spec in QUANTITIES.values()]


class Quality(models.IntegerChoices):
    """Quality flag of a reading, as the device reports it (after IEC 61850 validity, plus substituted values)."""

    GOOD = 0, "good"
    ESTIMATED = 1, "estimated"
    QUESTIONABLE = 2, "questionable"
    INVALID = 3, "invalid"


class TelemetrySource(models.Model):
    """A gateway that sends telemetry for one participant; its key is a `Credential` of kind gateway.

    `name` is a slug that also names the source in MQTT topics (`gridtwin/telemetry/<name>/<format>`).
    """

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="telemetry_sources")
    name = models.SlugField(max_length=100, unique=True)
    credential = models.OneToOneField(Credential, on_delete=models.PROTECT, related_name="telemetry_source")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.participant})"

    @property
    def revoked(self) -> bool:
        return not self.credential.is_usable

    @classmethod
    def issue(cls, *, participant: Participant, name: str) -> tuple[TelemetrySource, str]:
        """Create a source and return it with its raw key, which is shown once and never stored."""
        credential, raw = Credential.issue(kind=Credential.Kind.GATEWAY, participant=participant, name=name)
        return cls.objects.create(participant=participant, name=name, credential=credential), raw


class TelemetryBatch(models.Model):
    """One upload of readings (HTTP or MQTT), durable as received before any worker touches it.

    Its life is in the row: queued → running → succeeded, or `failed` (the body cannot be read) or
    `dead` (given up after `attempts` deliveries, with the error). Counts: every received reading is
    accepted (newly stored), duplicate (already stored, or repeated in the batch) or rejected.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        DEAD = "dead"

    source = models.ForeignKey(TelemetrySource, on_delete=models.PROTECT, related_name="batches")
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="telemetry_batches")
    channel = models.CharField(max_length=10, default="http", help_text="How the batch arrived: http, mqtt or replay.")
    content_type = models.CharField(max_length=100)
    body = models.BinaryField(help_text="The raw upload, kept as received.")
    body_sha256 = models.CharField(max_length=64)
    idempotency_key = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveIntegerField(default=0, help_text="Deliveries to a worker so far.")
    received_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True,
                                        help_text="When its message was last handed to the broker (a requeue waits from here).")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    received_count = models.PositiveIntegerField(default=0)
    accepted_count = models.PositiveIntegerField(default=0)
    duplicate_count = models.PositiveIntegerField(default=0)
    rejected_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "telemetry batches"
        constraints = [
            models.UniqueConstraint(fields=["source", "idempotency_key"], condition=~models.Q(idempotency_key=""),
                                    name="telemetry_batch_idempotency_key_unique"),
        ]
        indexes = [models.Index(fields=["status", "received_at"], name="telemetry_batch_status_idx")]

    def __str__(self) -> str:
        return f"batch {self.pk} ({self.status})"


class RejectedReading(models.Model):
    """A reading a batch carried that was not stored, with a machine-readable reason and the reading as sent."""

    batch = models.ForeignKey(TelemetryBatch, on_delete=models.CASCADE, related_name="rejected_readings")
    position = models.PositiveIntegerField(help_text="0-based index of the reading in the batch (CSV: data row).")
    reason = models.CharField(max_length=40)
    message = models.CharField(max_length=500)
    reading = models.JSONField(help_text="The reading as sent.")

    class Meta:
        ordering = ["batch", "position"]
        indexes = [models.Index(fields=["batch", "position"], name="rejected_reading_batch_idx")]

    def __str__(self) -> str:
        return f"batch {self.batch_id} #{self.position}: {self.reason}"


class Reading(models.Model):
    """One measured value of a point, in the canonical unit of its quantity (see `QUANTITIES`).

    The primary key is the natural key (point, quantity, ts). There is deliberately no database foreign
    key to the meter: the partitioned table takes ~100k rows/s per worker, and a per-row trigger check
    would cost a large share of that; workers only write points they have just resolved, and a reading
    outlives the meter row it was measured by (history is not deleted with a re-imported grid).
    """

    pk = models.CompositePrimaryKey("point", "quantity", "ts")
    point = models.ForeignKey(Meter, on_delete=models.DO_NOTHING, db_constraint=False, related_name="readings")
    quantity = models.PositiveSmallIntegerField(choices=QUANTITY_CHOICES)
    ts = models.DateTimeField(help_text="Time the value refers to (end of the interval for energies), with time zone.")
    value = models.FloatField(help_text="In the canonical unit of the quantity.")
    quality = models.PositiveSmallIntegerField(choices=Quality.choices, default=Quality.GOOD)
    batch = models.ForeignKey(TelemetryBatch, on_delete=models.DO_NOTHING, db_constraint=False, null=True,
                              related_name="+", help_text="The batch that first wrote this reading (provenance).")

    class Meta:
        db_table = "twin_reading"

    def __str__(self) -> str:
        return f"{self.point_id} {QUANTITY_BY_CODE[self.quantity].name} {self.ts:%Y-%m-%dT%H:%M:%S%z} = {self.value}"


class LatestReading(models.Model):
    """The newest reading per (point, quantity), kept by upsert in the same transaction as the readings.

    Answers "latest value for every point of a feeder" with an index lookup instead of a search in the
    partitioned table (23 ms vs 84 ms for 10k points in FIELD-NOTES). Every batch updates its rows in place,
    so the table keeps room on its pages (fillfactor 50, migration 0004) and has no index on the updated
    columns: updates are HOT and touch no index.
    """

    pk = models.CompositePrimaryKey("point", "quantity")
    point = models.ForeignKey(Meter, on_delete=models.CASCADE, db_index=False, related_name="latest_readings")  # the key leads with it
    quantity = models.PositiveSmallIntegerField(choices=QUANTITY_CHOICES)
    ts = models.DateTimeField()
    value = models.FloatField()
    quality = models.PositiveSmallIntegerField(choices=Quality.choices, default=Quality.GOOD)

    class Meta:
        db_table = "twin_latestreading"

    def __str__(self) -> str:
        return f"{self.point_id} {QUANTITY_BY_CODE[self.quantity].name} latest {self.ts:%Y-%m-%dT%H:%M:%S%z} = {self.value}"


class HourlyReading(models.Model):
    """Count, sum, min and max of one point's readings of one quantity in one UTC hour (PostgreSQL only).

    Kept off the write path: a worker only marks the hours its batch added readings to (`DirtyHour`, a few
    rows per batch, in the same transaction as the readings); `ingest.requeue_stale_batches` (Celery beat,
    every 10 minutes) recomputes the marked hours of settled batches from the readings and drops their marks.
    Queries read the rollup for clean whole hours and the readings for marked hours and the partial hours at
    the edges of their window, so they are exact at any moment.
    """

    pk = models.CompositePrimaryKey("point", "quantity", "hour")
    point = models.ForeignKey(Meter, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+")
    quantity = models.PositiveSmallIntegerField(choices=QUANTITY_CHOICES)
    hour = models.DateTimeField(help_text="Start of the UTC hour.")
    count = models.PositiveIntegerField()
    sum = models.FloatField()
    min = models.FloatField()
    max = models.FloatField()

    class Meta:
        db_table = "twin_readinghourly"
        # Covering: a feeder-year reads ~900k rollup rows by index only, without visiting the table.
        indexes = [models.Index(fields=["point", "quantity", "hour"], include=["count", "sum", "min", "max"],
                                name="reading_hourly_covering_idx")]

    def __str__(self) -> str:
        return f"{self.point_id} {QUANTITY_BY_CODE[self.quantity].name} {self.hour:%Y-%m-%dT%H} n={self.count}"


class DirtyHour(models.Model):
    """A UTC hour a batch added readings to and whose rollup (`HourlyReading`) is not recomputed yet.

    One row per (hour, batch): plain inserts that never wait on each other; the hour is clean once no row
    names it.
    """

    pk = models.CompositePrimaryKey("hour", "batch")
    hour = models.DateTimeField()
    batch = models.BigIntegerField()

    class Meta:
        db_table = "twin_readinghourdirty"

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%dT%H} (batch {self.batch})"
