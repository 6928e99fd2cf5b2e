"""Batch bodies → reading fields: JSON, CSV and SenML+JSON (RFC 8428), one decoder per media type.

A decoder checks only what makes the whole body unreadable (syntax, shape, size) and raises PayloadError
for it; everything about single readings is judged later by `ingest.validation`. Each reading becomes a
tuple (point, quantity, ts, value, unit, quality), or None when it is not a reading at all.

JSON:  {"readings": [{"point": IRI or id, "quantity": "active_power", "ts": "2024-05-01T12:00:00Z",
        "value": 4.2, "unit": "kW", "quality": "good"}, ...]}   (a bare list is accepted too)
CSV:   header `point,quantity,ts,value,unit[,quality]`, then one reading per line.
SenML: records whose resolved name (bn + n) is `<point>/<quantity>`, time (bt + t) in seconds since
       the epoch, or relative to now below 2**28 as the RFC says; `u`/`bu` the unit, `v` the value.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, cached_property
from operator import itemgetter

import msgspec
import numpy as np
import orjson
from django.conf import settings

from ontology.errors import OntologyError

JSON = "application/json"
CSV = "text/csv"
SENML = "application/senml+json"
MEDIA_TYPES = (JSON, CSV, SENML)
CSV_COLUMNS = ("point", "quantity", "ts", "value", "unit", "quality")
SENML_RELATIVE_TIME_LIMIT_S = 2**28
JSON_WHITESPACE = np.frombuffer(b" \t\n\r", dtype=np.uint8)
JSON_INT_DIGITS = 4000  # longer integers stay text (Python refuses to convert beyond 4,300 digits): judged as values
MAX_ID_DIGITS = 19  # a bigint has at most 19 digits: a longer number names no meter

Fields = tuple  # (point, quantity, ts, value, unit, quality)


class JsonReading(msgspec.Struct):
    """A JSON reading of the usual shape, which the fast path decodes straight into (any other takes the general path)."""

    point: int | str
    quantity: str
    ts: str
    value: float
    unit: str
    quality: str | None = None


class JsonReadings(msgspec.Struct):
    readings: list[JsonReading]


class JsonOutline(msgspec.Struct):
    readings: list[msgspec.Raw]


# Both take {"readings": [...]} or a bare list. The outline checks syntax and shape and counts the readings
# without building them (~10× cheaper than decoding); the typed decoder builds no dicts.
JSON_READINGS = msgspec.json.Decoder(JsonReadings | list[JsonReading])
JSON_OUTLINE = msgspec.json.Decoder(JsonOutline | list[msgspec.Raw])


class PayloadError(OntologyError):
    """The body as a whole cannot be read as a batch; `reason` says why (nothing is stored)."""

    reason = "malformed_body"
    status = 400

    def __init__(self, reason: str, message: str, *, status: int = 400, line: int | None = None):
        super().__init__(message, line=line)
        self.reason = reason
        self.status = status


@dataclass
class DecodedBatch:
    """The readings of a body, as sent, with their field tuples built on first use (receiving a batch only counts)."""

    items: list
    to_fields: Callable[[list], list[Fields | None]]
    as_sent: Callable[[int], object]
    to_columns: Callable[[list], tuple[list, ...] | None] | None = None
    problems: dict[int, tuple[str, str]] = field(default_factory=dict)  # position → (reason, message) found while decoding

    def __len__(self) -> int:
        return len(self.items)

    @cached_property
    def fields(self) -> list[Fields | None]:
        return self.to_fields(self.items)

    @cached_property
    def columns(self) -> tuple[list, ...]:
        """The six fields as six lists (a reading that is not one has None in each), built without per-reading tuples
        where the format allows. Points named by meter id only come as one int64 array."""
        columns = self.to_columns(self.items) if self.to_columns is not None else None
        if columns is not None:
            return columns
        fields = self.fields
        complete = [f if f is not None else (None,) * 6 for f in fields] if None in fields else fields
        return tuple(list(map(itemgetter(i), complete)) for i in range(6))

    def point_keys(self) -> set[str]:
        """The distinct points the readings name, as text keys (meter ids and IRIs alike)."""
        points = self.columns[0]
        if isinstance(points, np.ndarray):
            return set(map(str, np.unique(points).tolist()))
        return {point for point in set(points) if isinstance(point, str) and _may_name_a_point(point)}

    def field_at(self, position: int) -> Fields | None:
        """The field tuple of one reading (for the per-reading judge), without building all of them when not built yet."""
        if self.to_columns is None or "fields" in self.__dict__:
            return self.fields[position]
        return self.to_fields([self.items[position]])[0]


def media_type_of(content_type: str) -> str:
    """The bare media type of a Content-Type header, or PayloadError 415 when no decoder takes it."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type not in MEDIA_TYPES:
        raise PayloadError("unsupported_media_type", f"send one of {', '.join(MEDIA_TYPES)}", status=415)
    return media_type


def decode_batch(body: bytes, content_type: str) -> DecodedBatch:
    """Decode a batch body by its media type; PayloadError when the body as a whole is unreadable."""
    decoder = {JSON: decode_json, CSV: decode_csv, SENML: decode_senml}[media_type_of(content_type)]
    if not body.strip():
        raise PayloadError("empty_body", "the body is empty")
    batch = decoder(body)
    _check_count(len(batch))
    return batch


def count_batch(body: bytes, content_type: str) -> int:
    """The number of readings of a body, checking what `decode_batch` checks: PayloadError when it is unreadable.

    A JSON body's outline (syntax, shape, count) is enough to know that; only a body the outline refuses is
    decoded in full, which names the reason (or accepts NaN and Infinity, as the general decoder does).
    """
    media_type = media_type_of(content_type)
    if media_type == JSON and (body.isascii() or _is_utf8(body)):
        try:
            outline = JSON_OUTLINE.decode(body)
        except (msgspec.DecodeError, ValueError, RecursionError):
            pass
        else:
            if not _may_repeat_readings(body, outline):
                count = len(outline.readings if isinstance(outline, JsonOutline) else outline)
                _check_count(count)
                return count
    return len(decode_batch(body, media_type))


def _may_repeat_readings(body: bytes, outline) -> bool:
    """Whether a {"readings": …} body might name `readings` twice (the outline reads it last-wins): when the key's text
    occurs more than once, or any escape could spell it. The full decoder then decides (duplicate_key, nothing stored)."""
    return isinstance(outline, JsonOutline) and (body.count(b'"readings"') > 1 or b"\\u" in body)


def _check_count(count: int) -> None:
    limit = settings.GRIDTWIN_TELEMETRY_MAX_READINGS
    if count > limit:
        raise PayloadError("too_many_readings", f"the batch has {count} readings; the limit is {limit}", status=413)
    if not count:
        raise PayloadError("empty_body", "the batch has no readings")


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _may_name_a_point(key: str) -> bool:
    """False for a key no meter can have, which must not reach the database: NUL or text that is not UTF-8 (PostgreSQL
    refuses both), or digits beyond a bigint (Python refuses to convert the longest). The reading is then unknown_point."""
    if "\x00" in key or (key.isdigit() and len(key) > MAX_ID_DIGITS):
        return False
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


class RepeatedKeys(dict):
    """A JSON object that names a key more than once: never read last-wins, its reading is rejected (`duplicate_key`)."""

    def __init__(self, pairs: list[tuple[str, object]]):
        super().__init__(pairs)
        self.repeated = sorted(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)

    @property
    def problem(self) -> tuple[str, str]:
        return "duplicate_key", f"the reading names {', '.join(map(repr, self.repeated))} more than once"


def _json_object(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    return obj if len(obj) == len(pairs) else RepeatedKeys(pairs)


def _json_int(text: str) -> int | str:
    return int(text) if len(text) <= JSON_INT_DIGITS else text


def _may_repeat_keys(body: bytes, keys: int) -> bool:
    """Whether the body might name a key twice in an object, given the number of distinct keys its objects were read
    with. Every key ends in `"` and `:`, so when the body holds no more `":` than that, no key was read twice; a `":`
    inside a string, or whitespace before a colon, only makes this say True (the exact parse then decides).
    On numpy: ~0.1 µs per reading, a fifth of what the exact parse adds."""
    raw = np.frombuffer(body, dtype=np.uint8)
    before_colon = raw[np.flatnonzero(raw[1:] == ord(":"))]
    return bool(np.isin(before_colon, JSON_WHITESPACE).any()) or int(np.count_nonzero(before_colon == ord('"'))) > keys


def _load_json(body: bytes, reason: str, *, exact: bool = False):
    """The body's JSON value; `exact` goes straight to the exact parse (the caller knows a key may repeat)."""
    if not exact:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            items = data.get("readings") if isinstance(data, dict) else data
            keys = len(data) if isinstance(data, dict) else 0
            if isinstance(items, list):
                keys += sum(len(item) for item in items if type(item) is dict)
            if not _may_repeat_keys(body, keys):
                return data
    # The exact parse, for bodies orjson refuses or that may repeat a key: the standard parser accepts NaN and
    # Infinity (as many JSON writers emit them) and keeps integers too long for a number as text, so one such value
    # rejects one reading instead of the whole batch; an object naming a key twice comes back as RepeatedKeys.
    try:
        return json.loads(body, object_pairs_hook=_json_object, parse_int=_json_int)
    except (ValueError, RecursionError) as exc:
        line = getattr(exc, "lineno", None)
        raise PayloadError(reason, f"not valid JSON: {exc}", line=line) from exc


def decode_json(body: bytes) -> DecodedBatch:
    try:
        decoded = JSON_READINGS.decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError):  # not every reading of the usual shape, or not JSON at all
        return _decode_json_items(body)
    readings = decoded.readings if isinstance(decoded, JsonReadings) else decoded
    keys = 5 * len(readings) + sum(r.quality is not None for r in readings) + isinstance(decoded, JsonReadings)
    if _may_repeat_keys(body, keys):
        return _decode_json_items(body, exact=True)
    as_sent = cache(lambda: _decode_json_items(body).items)  # the readings as sent, for the few a rejection keeps
    return DecodedBatch(readings, _reading_fields, lambda position: as_sent()[position], _reading_columns)


def _reading_fields(readings: list[JsonReading]) -> list[Fields]:
    return [(_point_key(r.point), r.quantity, r.ts, r.value, r.unit, r.quality) for r in readings]


def _reading_columns(readings: list[JsonReading]) -> tuple:
    points = [r.point for r in readings]
    kinds = set(map(type, points))
    try:
        points = np.array(points, dtype=np.int64) if kinds == {int} else list(map(_point_key, points))
    except OverflowError:  # an id no meter can have: judged as text, as the general path does
        points = list(map(_point_key, points))
    return (points, [r.quantity for r in readings], [r.ts for r in readings], [r.value for r in readings],
            [r.unit for r in readings], [r.quality for r in readings])


def _decode_json_items(body: bytes, *, exact: bool = False) -> DecodedBatch:
    data = _load_json(body, "malformed_json", exact=exact)
    if isinstance(data, RepeatedKeys):
        raise PayloadError("duplicate_key", f"the body names {', '.join(map(repr, data.repeated))} more than once")
    items = data.get("readings") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise PayloadError("malformed_json", 'expected {"readings": [...]} or a list of readings')
    return DecodedBatch(items, _json_fields, items.__getitem__, _json_columns, _problems(items))


def _problems(items: list) -> dict[int, tuple[str, str]]:
    return {position: item.problem for position, item in enumerate(items) if type(item) is RepeatedKeys}


def _json_columns(items: list) -> tuple[list, ...] | None:
    """Columns straight from the reading objects when every item is one (else None: build field tuples)."""
    if not all(type(item) is dict for item in items):
        return None
    raw_points = [item.get("point") for item in items]
    kinds = set(map(type, raw_points))
    if kinds == {int}:
        points = list(map(str, raw_points))
    elif kinds == {str}:
        points = raw_points
    else:
        points = list(map(_point_key, raw_points))
    return (points, *([item.get(name) for item in items] for name in ("quantity", "ts", "value", "unit", "quality")))


def _point_key(point) -> str | None:
    """Points are named by meter IRI or id; both become text keys (`17` and `"17"` are the same point), anything else None."""
    kind = type(point)
    return point if kind is str else str(point) if kind is int else None


def _json_fields(items: list) -> list[Fields | None]:
    return [(_point_key(item.get("point")), item.get("quantity"), item.get("ts"), item.get("value"), item.get("unit"), item.get("quality"))
            if type(item) is dict else None for item in items]


def decode_csv(body: bytes) -> DecodedBatch:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PayloadError("malformed_csv", f"not UTF-8 text: {exc}") from exc
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [name.strip().lower() for name in next(reader)]
        rows = list(reader)
    except csv.Error as exc:
        raise PayloadError("malformed_csv", f"unreadable CSV: {exc}", line=reader.line_num) from exc
    missing = [name for name in CSV_COLUMNS[:5] if name not in header]
    if missing:
        raise PayloadError("malformed_csv", f"the header lacks {', '.join(missing)}; expected {','.join(CSV_COLUMNS)}", line=1)
    index = [header.index(name) if name in header else None for name in CSV_COLUMNS]
    width = len(header)

    def to_fields(rows: list) -> list[Fields | None]:
        return [tuple(row[i] if i is not None else None for i in index) if len(row) == width else None for row in rows]

    return DecodedBatch(rows, to_fields, lambda position: dict(zip(header, rows[position], strict=False)) if len(rows[position]) == width
                        else {"row": rows[position]})


def decode_senml(body: bytes) -> DecodedBatch:
    records = _load_json(body, "malformed_senml")
    if not isinstance(records, list):
        raise PayloadError("malformed_senml", "a SenML pack is a JSON array of records")
    now_s = time.time()
    base_name, base_time, base_unit = "", 0.0, None
    fields, resolved = [], []
    for record in records:
        if not isinstance(record, dict) or type(record) is RepeatedKeys:
            fields.append(None)
            resolved.append(record)
            continue
        base_name = record.get("bn", base_name) if isinstance(record.get("bn", ""), str) else base_name
        base_time = record.get("bt", base_time) if _is_number(record.get("bt", 0)) else base_time
        base_unit = record.get("bu", base_unit)
        name = base_name + record.get("n", "") if isinstance(record.get("n", ""), str) else None
        point, _, quantity = name.rpartition("/") if name else ("", "", "")
        t = record.get("t", 0)
        ts = _senml_time(base_time + t, now_s) if _is_number(t) else None
        value = record["v"] if "v" in record else record.get("vs", record.get("vb", record.get("vd")))
        fields.append((point or None, quantity or None, ts, value, record.get("u", base_unit), record.get("quality")))
        resolved.append({"n": name, "t": ts.isoformat() if ts else t, "v": value, "u": record.get("u", base_unit)})
    return DecodedBatch(records, lambda _: fields, resolved.__getitem__, problems=_problems(records))


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _senml_time(seconds: float, now_s: float) -> datetime | None:
    """RFC 8428 §4.5.3: times below 2**28 are relative to now."""
    try:
        return datetime.fromtimestamp(seconds + now_s if seconds < SENML_RELATIVE_TIME_LIMIT_S else seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def json_safe(value):
    """A reading as sent, storable as JSON: NaN and Infinity (not JSON, refused by PostgreSQL's jsonb) become text, and
    so do NUL and unpaired surrogates inside text (refused by PostgreSQL too), as escapes."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return _storable_text(value)
    if isinstance(value, dict):
        return {_storable_text(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def _storable_text(text: str) -> str:
    if text.isascii() and "\x00" not in text:
        return text
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")
