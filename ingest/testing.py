"""Helpers shared by the ingest tests and benchmarks: metered grids of any size and batch bodies.

`metered_grid_create` writes rows straight through the ORM (no SHACL, no RDF): it is for measuring and
testing the pipeline at sizes the import path would take minutes to build, never for real data.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import orjson

from twin import models

QUARTER_HOUR = timedelta(minutes=15)


def metered_grid_create(owner: models.Participant, *, name: str, feeders: int, meters_per_feeder: int) -> models.Grid:
    """A grid with `feeders` feeders, one LV bus per feeder and `meters_per_feeder` smart meters on each."""
    base = f"https://gridtwin.example/id/test/{name}"
    grid = models.Grid.objects.create(iri=base, name=name, owner=owner, source=f"test:{name}")
    voltage = models.BaseVoltage.objects.create(iri=f"{base}/voltage/0.4", grid=grid, name="0.4 kV", nominal_voltage_kv=0.4)
    feeder_rows = models.Feeder.objects.bulk_create(
        [models.Feeder(iri=f"{base}/feeder/{f}", grid=grid, name=f"feeder {f}") for f in range(feeders)])
    buses = models.Bus.objects.bulk_create(
        [models.Bus(iri=f"{base}/bus/{f}", grid=grid, base_voltage=voltage, feeder=feeder) for f, feeder in enumerate(feeder_rows)])
    models.Meter.objects.bulk_create(
        [models.Meter(iri=f"{base}/meter/{f}-{m}", grid=grid, name=f"meter {f}-{m}", feeder=feeder, measured_iri=bus.iri)
         for f, (feeder, bus) in enumerate(zip(feeder_rows, buses, strict=True)) for m in range(meters_per_feeder)],
        batch_size=5000)
    return grid


def readings_json(readings: list[dict]) -> bytes:
    return orjson.dumps({"readings": readings})


def readings_csv(readings: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["point", "quantity", "ts", "value", "unit", "quality"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(readings)
    return out.getvalue().encode()


def readings_senml(readings: list[dict]) -> bytes:
    return orjson.dumps([{"n": f"{r['point']}/{r['quantity']}", "t": datetime.fromisoformat(r["ts"]).timestamp(), "v": r["value"],
                          "u": r["unit"]} for r in readings])


def power_readings(point_ids: list[int], start: datetime, steps: int, *, unit: str = "kW") -> list[dict]:
    """`steps` quarter-hourly active-power readings per point from `start`.

    The value is a function of point and time only (point id mod 97 + hour of day as a fraction), so
    overlapping batches agree on every reading they share, as one meter's telemetry does.
    """
    readings = []
    for k in range(steps):
        ts = start + k * QUARTER_HOUR
        hour = ts.hour + ts.minute / 60
        readings.extend({"point": pk, "quantity": "active_power", "ts": ts.isoformat(), "value": pk % 97 + hour, "unit": unit}
                        for pk in point_ids)
    return readings
