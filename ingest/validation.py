"""Reading fields → rows in canonical units, or rejections with a machine-readable reason.

Reasons: malformed_reading, missing_field, unknown_point, unknown_quantity, unit_mismatch, not_a_number,
out_of_range, timestamp_invalid, timestamp_without_zone, timestamp_in_future, timestamp_too_old,
invalid_quality, conflicting_duplicate (one key twice in a batch with different values: the batch
contradicts itself, so every copy is rejected — this keeps the outcome independent of the order).
Identical repeats of a key inside a batch collapse into one row and count as duplicates.

This loop is the hot path of ingest (about a microsecond per reading): plain dict lookups, no per-row
objects beyond the row tuple.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings

from ingest.payloads import DecodedBatch, json_safe
from twin.models import QUANTITIES, Quality

# (quantity name, unit spelling) → (quantity code, multiplier, divisor, min, max in the canonical unit). Smaller units
# divide by a whole power of ten (4200 W / 1e6 is 0.0042 exactly as written; 4200 × 1e-6 is not).
UNIT_TABLE: dict[tuple[str, str], tuple[int, float, float, float, float]] = {
    (spec.name, unit): (spec.code, factor if factor >= 1 else 1.0, 1.0 if factor >= 1 else float(round(1 / factor)),
                        spec.min_value, spec.max_value)
    for spec in QUANTITIES.values() for unit, factor in spec.factors.items()
}
QUALITY_CODES = {label: value for value, label in Quality.choices} | {None: Quality.GOOD, "": Quality.GOOD}
FIELD_NAMES = ("point", "quantity", "ts", "value", "unit")

Row = tuple  # (point_id, quantity code, ts, value in the canonical unit, quality code)


@dataclass
class Rejection:
    position: int
    reason: str
    message: str
    reading: object


@dataclass
class ValidatedBatch:
    """Rows to store, one per natural key, in the order they came; and the rest."""

    rows: list[Row]
    rejections: list[Rejection] = field(default_factory=list)
    duplicate_count: int = 0
    received_count: int = 0

    def latest_rows(self) -> list[Row]:
        """The newest row per (point, quantity), in key order (concurrent upserts then lock rows in one order)."""
        newest: dict[tuple[int, int], Row] = {}
        for row in self.rows:
            current = newest.get((row[0], row[1]))
            if current is None or row[2] > current[2]:
                newest[(row[0], row[1])] = row
        return [newest[key] for key in sorted(newest)]


def readings_validate(batch: DecodedBatch, *, point_ids: Mapping[str, int], now: datetime) -> ValidatedBatch:
    """Judge every reading of a decoded batch; `point_ids` maps the point keys the source may write to meter ids."""
    latest_allowed = now + timedelta(seconds=settings.GRIDTWIN_TELEMETRY_FUTURE_TOLERANCE_S)
    oldest = datetime.fromisoformat(settings.GRIDTWIN_TELEMETRY_OLDEST)
    kept: dict[tuple, tuple] = {}
    repeats: dict[tuple, list[tuple]] = {}
    first_positions: dict[tuple, int] = {}
    rejections: list[Rejection] = []

    def reject(position: int, reason: str, message: str) -> None:
        rejections.append(Rejection(position, reason, message, json_safe(batch.as_sent(position))))

    for position, fields in enumerate(batch.fields):
        if fields is None:
            reject(position, "malformed_reading", "not a reading (expected an object / a row with every column)")
            continue
        point, quantity, ts, value, unit, quality = fields
        if point is None or quantity is None or ts is None or value is None or unit is None:
            missing = [name for name, given in zip(FIELD_NAMES, fields, strict=False) if given is None]
            reject(position, "missing_field", f"missing: {', '.join(missing)}")
            continue
        point_id = point_ids.get(point)
        if point_id is None:
            reject(position, "unknown_point", f"no measurement point {point!r} that this source may write")
            continue
        unit_entry = UNIT_TABLE.get((quantity, unit)) if isinstance(quantity, str) and isinstance(unit, str) else None
        if unit_entry is None:
            if quantity not in QUANTITIES:
                reject(position, "unknown_quantity", f"unknown quantity {quantity!r}; known: {', '.join(QUANTITIES)}")
            else:
                accepted = ", ".join(u for u in QUANTITIES[quantity].factors if ":" not in u)
                reject(position, "unit_mismatch", f"{unit!r} is not a unit of {quantity}; use one of {accepted}")
            continue
        code, multiplier, divisor, min_value, max_value = unit_entry
        number = _number(value)
        if number is None:
            reject(position, "not_a_number", f"value {value!r} is not a finite number")
            continue
        number = number * multiplier / divisor
        if not min_value <= number <= max_value:
            reject(position, "out_of_range", f"{quantity} {number:g} {QUANTITIES[quantity].unit} is outside [{min_value:g}, {max_value:g}]")
            continue
        moment = _moment(ts)
        if moment is None:
            reject(position, "timestamp_invalid", f"ts {ts!r} is not an ISO 8601 date and time")
            continue
        if moment.tzinfo is None:
            reject(position, "timestamp_without_zone", f"ts {ts!r} has no time zone (add Z or an offset)")
            continue
        if moment > latest_allowed:
            reject(position, "timestamp_in_future", f"ts {ts} is later than now + {settings.GRIDTWIN_TELEMETRY_FUTURE_TOLERANCE_S} s")
            continue
        if moment < oldest:
            reject(position, "timestamp_too_old", f"ts {ts} is before {settings.GRIDTWIN_TELEMETRY_OLDEST}")
            continue
        quality_code = QUALITY_CODES.get(quality) if isinstance(quality, str | None) else None
        if quality_code is None:
            reject(position, "invalid_quality", f"quality {quality!r} is not one of {', '.join(label for _, label in Quality.choices)}")
            continue
        key = (point_id, code, moment)
        if key in kept:
            repeats.setdefault(key, []).append((position, number, quality_code))
        else:
            kept[key] = (point_id, code, moment, number, quality_code)
            first_positions[key] = position

    duplicate_count = 0
    for key, others in repeats.items():
        first = kept[key]
        if all(other[1:] == first[3:] for other in others):
            duplicate_count += len(others)
            continue
        del kept[key]
        for position in sorted([first_positions[key], *(other[0] for other in others)]):
            reject(position, "conflicting_duplicate", "the batch has this point, quantity and ts more than once with different values")
    rows = list(kept.values())
    rejections.sort(key=lambda rejection: rejection.position)
    return ValidatedBatch(rows=rows, rejections=rejections, duplicate_count=duplicate_count, received_count=len(batch))


def _number(value) -> float | None:
    kind = type(value)
    if kind is not float and kind is not int and kind is not str:
        return None  # bool, list, object …
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


@lru_cache(maxsize=65536)
def _parse_timestamp(text: str) -> datetime:
    """A batch carries few distinct timestamps (every point reports the same instants): parse each once."""
    return datetime.fromisoformat(text)


def _moment(ts) -> datetime | None:
    if type(ts) is str:
        try:
            return _parse_timestamp(ts)
        except ValueError:
            return None
    return ts if isinstance(ts, datetime) else None
