"""Reading fields → rows in canonical units, or rejections with a machine-readable reason.

Reasons: malformed_reading, missing_field, unknown_point, unknown_quantity, unit_mismatch, not_a_number,
out_of_range, timestamp_invalid, timestamp_without_zone, timestamp_in_future, timestamp_too_old,
invalid_quality, duplicate_key (a reading object naming a field twice: read neither way, see `ingest.payloads`),
conflicting_duplicate (one key twice in a batch with different values: the batch
contradicts itself, so every copy is rejected — this keeps the outcome independent of the order).
Identical repeats of a key inside a batch collapse into one row and count as duplicates.

This is the hot path of ingest, so it works on columns: every check runs once per distinct point,
(quantity, unit) pair, timestamp and quality label, and on numpy arrays for values and keys. A reading
that fails any check goes through `_judge`, the plain per-reading rules, which names the first reason;
both paths apply the same rules, in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import numpy as np
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
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # PostgreSQL's binary timestamps count microseconds from here
MICROSECOND = timedelta(microseconds=1)
UNIT_KEYS = list(UNIT_TABLE)
UNIT_INDEX = {key: i for i, key in enumerate(UNIT_KEYS)}
UNIT_CODES = np.array([UNIT_TABLE[key][0] for key in UNIT_KEYS] + [0], dtype=np.int16)
UNIT_MULTIPLIERS = np.array([UNIT_TABLE[key][1] for key in UNIT_KEYS] + [1.0])
UNIT_DIVISORS = np.array([UNIT_TABLE[key][2] for key in UNIT_KEYS] + [1.0])
UNIT_MIN = np.array([UNIT_TABLE[key][3] for key in UNIT_KEYS] + [np.inf])
UNIT_MAX = np.array([UNIT_TABLE[key][4] for key in UNIT_KEYS] + [-np.inf])
NO_UNIT = len(UNIT_KEYS)  # index of the sentinel entry: every value is out of its range


def ts_micros(moment: datetime) -> int:
    """Microseconds since 2000-01-01 UTC (exact integer arithmetic, as PostgreSQL stores timestamptz)."""
    return (moment - PG_EPOCH) // MICROSECOND


def ts_datetime(micros: int) -> datetime:
    return PG_EPOCH + timedelta(microseconds=int(micros))


@dataclass
class Rejection:
    position: int
    reason: str
    message: str
    reading: object


@dataclass
class ValidatedBatch:
    """Rows to store, one per natural key, as columns sorted by key (point, quantity, ts); and the rest.

    `ts` holds microseconds since 2000-01-01 UTC, ready for binary COPY.
    """

    point_id: np.ndarray
    quantity: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    quality: np.ndarray
    rejections: list[Rejection] = field(default_factory=list)
    duplicate_count: int = 0
    received_count: int = 0

    def __len__(self) -> int:
        return len(self.point_id)

    @property
    def rows(self) -> list[Row]:
        """The rows as tuples (point_id, quantity, ts as datetime, value, quality), in key order."""
        moments = {micros: ts_datetime(micros) for micros in np.unique(self.ts).tolist()}
        return list(zip(self.point_id.tolist(), self.quantity.tolist(), [moments[t] for t in self.ts.tolist()],
                        self.value.tolist(), self.quality.tolist(), strict=True))

    def latest(self) -> ValidatedBatch:
        """The newest row per (point, quantity), in key order (concurrent upserts then lock rows in one order)."""
        if not len(self):
            return self
        last = np.ones(len(self), dtype=bool)
        last[:-1] = (self.point_id[1:] != self.point_id[:-1]) | (self.quantity[1:] != self.quantity[:-1])
        return self.take(last)

    def take(self, selector) -> ValidatedBatch:
        return ValidatedBatch(self.point_id[selector], self.quantity[selector], self.ts[selector], self.value[selector],
                              self.quality[selector])

    def ts_range(self) -> tuple[datetime, datetime] | None:
        return (ts_datetime(self.ts.min()), ts_datetime(self.ts.max())) if len(self) else None


class _Rules:
    """The limits of one validation run and the per-reading judge that names the first failing rule."""

    def __init__(self, point_ids: Mapping[str, int], now: datetime):
        self.point_ids = point_ids
        self.latest_allowed = now + timedelta(seconds=settings.GRIDTWIN_TELEMETRY_FUTURE_TOLERANCE_S)
        self.oldest = datetime.fromisoformat(settings.GRIDTWIN_TELEMETRY_OLDEST)

    def moment_problem(self, ts) -> tuple[str, str] | datetime:
        """The timestamp as an aware datetime within the allowed window, or (reason, message)."""
        moment = _moment(ts)
        if moment is None:
            return "timestamp_invalid", f"ts {ts!r} is not an ISO 8601 date and time"
        if moment.tzinfo is None:
            return "timestamp_without_zone", f"ts {ts!r} has no time zone (add Z or an offset)"
        if moment > self.latest_allowed:
            return "timestamp_in_future", f"ts {ts} is later than now + {settings.GRIDTWIN_TELEMETRY_FUTURE_TOLERANCE_S} s"
        if moment < self.oldest:
            return "timestamp_too_old", f"ts {ts} is before {settings.GRIDTWIN_TELEMETRY_OLDEST}"
        return moment

    def judge(self, fields) -> tuple[str, str] | Row:
        """One reading: its row (point_id, code, moment, number, quality code), or (reason, message)."""
        if fields is None:
            return "malformed_reading", "not a reading (expected an object / a row with every column)"
        point, quantity, ts, value, unit, quality = fields
        if point is None or quantity is None or ts is None or value is None or unit is None:
            missing = [name for name, given in zip(FIELD_NAMES, fields, strict=False) if given is None]
            return "missing_field", f"missing: {', '.join(missing)}"
        point_id = self.point_ids.get(point)
        if point_id is None:
            return "unknown_point", f"no measurement point {point!r} that this source may write"
        unit_entry = UNIT_TABLE.get((quantity, unit)) if isinstance(quantity, str) and isinstance(unit, str) else None
        if unit_entry is None:
            if not isinstance(quantity, str) or quantity not in QUANTITIES:
                return "unknown_quantity", f"unknown quantity {quantity!r}; known: {', '.join(QUANTITIES)}"
            accepted = ", ".join(u for u in QUANTITIES[quantity].factors if ":" not in u)
            return "unit_mismatch", f"{unit!r} is not a unit of {quantity}; use one of {accepted}"
        code, multiplier, divisor, min_value, max_value = unit_entry
        number = _number(value)
        if number is None:
            return "not_a_number", f"value {value!r} is not a finite number"
        number = number * multiplier / divisor
        if not min_value <= number <= max_value:
            return "out_of_range", f"{quantity} {number:g} {QUANTITIES[quantity].unit} is outside [{min_value:g}, {max_value:g}]"
        moment = self.moment_problem(ts)
        if isinstance(moment, tuple):
            return moment
        quality_code = QUALITY_CODES.get(quality) if isinstance(quality, str | None) else None
        if quality_code is None:
            return "invalid_quality", f"quality {quality!r} is not one of {', '.join(label for _, label in Quality.choices)}"
        return point_id, code, moment, number, quality_code


def readings_validate(batch: DecodedBatch, *, point_ids: Mapping[str, int], now: datetime) -> ValidatedBatch:
    """Judge every reading of a decoded batch; `point_ids` maps the point keys the source may write to meter ids, `now`
    is when the batch was received (a reading valid then stays valid however late a worker gets to it)."""
    rules = _Rules(point_ids, now)
    n = len(batch)
    rejections: list[Rejection] = []
    try:
        columns = _columns(batch.columns, rules) if n else None
    except TypeError:  # an unhashable field (a list or object where a name belongs): judge reading by reading
        columns = None
    if columns is None:
        good = np.zeros(n, dtype=bool)
        pid = np.zeros(n, dtype=np.int64)
        code, quality = np.zeros(n, dtype=np.int16), np.zeros(n, dtype=np.int16)
        micros, number = np.zeros(n, dtype=np.int64), np.zeros(n)
    else:
        good, pid, code, micros, number, quality = columns
    if batch.problems:
        good[list(batch.problems)] = False
    late: list[tuple] = []  # readings the columns could not take but the judge accepts (none in practice)
    for position in np.flatnonzero(~good).tolist():
        verdict = batch.problems.get(position) or rules.judge(batch.field_at(position))
        if len(verdict) == 2:
            rejections.append(Rejection(position, verdict[0], verdict[1], json_safe(batch.as_sent(position))))
        else:
            late.append((position, *verdict))
    positions = np.flatnonzero(good)
    pid, code, micros, number, quality = pid[good], code[good], micros[good], number[good], quality[good]
    if late:
        positions = np.concatenate([positions, np.array([r[0] for r in late], dtype=np.int64)])
        pid = np.concatenate([pid, np.array([r[1] for r in late], dtype=np.int64)])
        code = np.concatenate([code, np.array([r[2] for r in late], dtype=np.int16)])
        micros = np.concatenate([micros, np.array([ts_micros(r[3]) for r in late], dtype=np.int64)])
        number = np.concatenate([number, np.array([r[4] for r in late], dtype=np.float64)])
        quality = np.concatenate([quality, np.array([r[5] for r in late], dtype=np.int16)])
    order = np.lexsort((positions, micros, code, pid))  # by key, then by position within a key
    validated = ValidatedBatch(pid[order], code[order], micros[order], number[order], quality[order], received_count=n)
    positions = positions[order]
    repeat = (validated.point_id[1:] == validated.point_id[:-1]) & (validated.quantity[1:] == validated.quantity[:-1]) \
        & (validated.ts[1:] == validated.ts[:-1])
    if repeat.any():
        validated, conflicting = _collapse_repeats(validated, positions, repeat)
        for position in conflicting:
            rejections.append(Rejection(position, "conflicting_duplicate",
                                        "the batch has this point, quantity and ts more than once with different values",
                                        json_safe(batch.as_sent(position))))
    rejections.sort(key=lambda rejection: rejection.position)
    validated.rejections = rejections
    return validated


def _collapse_repeats(validated: ValidatedBatch, positions: np.ndarray, repeat: np.ndarray) -> tuple[ValidatedBatch, list[int]]:
    """Keep one row per key: identical repeats count as duplicates, a key with differing copies loses every copy."""
    group = np.concatenate([[0], np.cumsum(~repeat)])  # group number of each sorted row
    first = np.concatenate([[True], ~repeat])
    same = (validated.value == validated.value[first][group]) & (validated.quality == validated.quality[first][group])
    conflicted_groups = np.unique(group[~same])
    conflicted = np.isin(group, conflicted_groups)
    keep = first & ~conflicted
    duplicate_count = int((~first & ~conflicted).sum())
    collapsed = validated.take(keep)
    collapsed.received_count = validated.received_count
    collapsed.duplicate_count = duplicate_count
    return collapsed, positions[conflicted].tolist()


def _columns(columns: tuple[list, ...], rules: _Rules):
    """Every check on columns: (mask of readings that pass them all, point ids, codes, ts, values, quality codes).

    Raises TypeError on an unhashable field; readings outside the mask go to the per-reading judge.
    """
    points, quantities, stamps, values, units, qualities = columns
    if isinstance(points, np.ndarray):  # every point named by its meter id: keep the ids this source may write
        allowed = np.fromiter((pk for key, pk in rules.point_ids.items() if key == str(pk)), dtype=np.int64)
        pid = np.where(np.isin(points, allowed), points, -1)
    else:
        found = np.array(list(map(rules.point_ids.get, points)), dtype=np.float64)  # None (unknown) → NaN
        pid = np.where(np.isnan(found), -1, found).astype(np.int64)
    quantity_kinds, quantity_of = _categories(quantities)
    unit_kinds, unit_of = _categories(units)
    pair_index = np.array([[UNIT_INDEX.get((q, u), NO_UNIT) for u in unit_kinds] for q in quantity_kinds], dtype=np.intp)
    unit_index = pair_index[quantity_of, unit_of]
    value_types = set(map(type, values))
    number = None
    if value_types <= {float, int}:
        try:
            number = np.array(values, dtype=np.float64)
        except OverflowError:
            number = None
    if number is None:
        number = np.array([math.nan if (x := _number(v)) is None else x for v in values], dtype=np.float64)
    number = number * UNIT_MULTIPLIERS[unit_index] / UNIT_DIVISORS[unit_index]
    stamp_kinds, stamp_of = _categories(stamps)
    moments = [rules.moment_problem(stamp) if stamp is not None else None for stamp in stamp_kinds]
    ts_ok = np.array([isinstance(m, datetime) for m in moments], dtype=bool)[stamp_of]
    micros = np.array([ts_micros(m) if isinstance(m, datetime) else 0 for m in moments], dtype=np.int64)[stamp_of]
    quality_kinds, quality_of = _categories(qualities)
    quality = np.array([QUALITY_CODES.get(q, -1) if isinstance(q, str | None) else -1 for q in quality_kinds], dtype=np.int16)[quality_of]
    with np.errstate(invalid="ignore"):
        good = (pid >= 0) & (unit_index != NO_UNIT) & np.isfinite(number) & (UNIT_MIN[unit_index] <= number) \
            & (number <= UNIT_MAX[unit_index]) & ts_ok & (quality >= 0)
    return good, pid, UNIT_CODES[unit_index], micros, number, quality


def _categories(column: list) -> tuple[list, np.ndarray]:
    """The distinct values of a column (first seen first) and each entry's index among them: the checks then run once
    per distinct value. Raises TypeError on an unhashable value."""
    kinds = dict.fromkeys(column)
    if len(kinds) == 1:
        return list(kinds), np.zeros(len(column), dtype=np.intp)
    for index, kind in enumerate(kinds):
        kinds[kind] = index
    return list(kinds), np.array(list(map(kinds.__getitem__, column)), dtype=np.intp)


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
    """The time a ts names, or None; text with NUL or another control character names none (fromisoformat reads a
    timestamp followed by NUL as the timestamp)."""
    if type(ts) is str and ts.isprintable():
        try:
            return _parse_timestamp(ts)
        except ValueError:
            return None
    return ts if isinstance(ts, datetime) else None
