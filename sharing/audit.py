"""The access audit: an append-only, SHA-256 hash-chained log of every sharing decision and what it let out.

Each entry's `entry_hash` covers its content and the `previous_hash` of the entry before it, so a changed,
removed, inserted or reordered entry breaks the chain from that point on; `audit_verify` finds the first break.
The database refuses UPDATE and DELETE on the table (migration 0002); this module is its only writer.

The chain detects tampering by anyone who does not rewrite every later hash too: keep a copy of the latest
`entry_hash` outside the database to also detect a rewritten tail or a removed last entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from django.db import connection, transaction
from django.db.models import QuerySet
from django.http import QueryDict
from django.utils import timezone

from sharing.models import AuditEntry

GENESIS_HASH = "0" * 64
# What the digest covers, in the entry's own words: changing this list changes every digest, so it takes a new chain.
CONTENT_FIELDS = ("at", "participant_iri", "credential", "action", "resource", "purpose", "allowed", "rule", "agreement_uid",
                  "provider_iri", "method", "path", "query", "status_code", "records", "preview")
TEXT_LIMITS = {name: AuditEntry._meta.get_field(name).max_length for name in CONTENT_FIELDS
               if AuditEntry._meta.get_field(name).get_internal_type() == "CharField"}
MAX_RECORDS = 2**31 - 1  # PositiveIntegerField
MAX_STATUS_CODE = 2**15 - 1  # PositiveSmallIntegerField
# The query is kept as a bounded excerpt: a request cannot grow the (undeletable) audit without limit.
MAX_QUERY_KEYS = 50
MAX_QUERY_KEY_CHARS = 100
MAX_QUERY_VALUES = 10
MAX_QUERY_VALUE_CHARS = 500
VERIFY_CHUNK_SIZE = 2000
# Any fixed 64-bit key, the same in every process: it names "the audit chain" among PostgreSQL advisory locks.
CHAIN_LOCK_KEY = 0x6772_6964_6175_6474  # "gridaudt"
CHAIN_LOCK_SQL = {
    "postgresql": ("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY]),
    # A write matching no row takes SQLite's write lock at once, so the last entry is read while it is held and
    # concurrent writers wait (busy timeout) instead of failing with "database is locked" when they upgrade.
    "sqlite": ("UPDATE sharing_auditentry SET id = id WHERE 0", []),
}


@dataclass(frozen=True)
class AuditVerification:
    """What a walk of the chain found: `entries` verified intact, or the first broken entry and why."""

    ok: bool
    entries: int
    first_bad_id: int | None = None
    problem: str = ""


def entry_digest(fields: Mapping, previous_hash: str) -> str:
    """SHA-256 (hex) of the entry's content fields and `previous_hash`, serialised canonically.

    Canonical form: JSON with sorted keys (at every depth), `at` as ISO 8601 in UTC with microseconds. Keys of
    `fields` other than the content fields (such as `id` or `entry_hash`) are ignored.
    """
    content = {name: fields[name] for name in CONTENT_FIELDS}
    content["at"] = fields["at"].astimezone(UTC).isoformat(timespec="microseconds")
    content["previous_hash"] = previous_hash
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def audit_record(*, participant_iri: str, credential: str, action: str, resource: str, purpose: str, allowed: bool, rule: str,
                 agreement_uid: str, provider_iri: str, method: str, path: str, query: Mapping | None, status_code: int | None,
                 records: int, preview: bool = False, at: datetime | None = None) -> AuditEntry:
    """Append one decision to the audit, chained onto the last entry; `at` defaults to now, `records` counts records out.

    Strings lose NUL characters and unencodable surrogates and are cut to their column's length; `query` (parameter
    → value or list of values, or a QueryDict) is cut to a bounded excerpt. Writers are serialised by a lock held
    until the transaction commits, so no two entries chain onto the same one. Called inside an outer transaction,
    the entry shares its fate and the lock is held until that transaction ends: call it outside long transactions.
    """
    content = {
        "participant_iri": participant_iri, "credential": credential, "action": action, "resource": resource, "purpose": purpose,
        "rule": rule, "agreement_uid": agreement_uid, "provider_iri": provider_iri, "method": method, "path": path,
    }
    content = {name: _clean_text(value, TEXT_LIMITS[name]) for name, value in content.items()}
    content.update(allowed=bool(allowed), preview=bool(preview), query=_clean_query(query),
                   status_code=_bounded(status_code, "status_code", MAX_STATUS_CODE) if status_code is not None else None,
                   records=_bounded(records, "records", MAX_RECORDS))
    with transaction.atomic():
        _lock_chain()
        content["at"] = _aware(at) if at is not None else timezone.now()
        previous_hash = _last_hash()
        return AuditEntry.objects.create(**content, previous_hash=previous_hash, entry_hash=entry_digest(content, previous_hash))


def audit_verify(*, chunk_size: int = VERIFY_CHUNK_SIZE) -> AuditVerification:
    """Walk the chain in id order, `chunk_size` entries at a time, and report the first entry that breaks it.

    An entry breaks the chain when its `previous_hash` is not the hash of the entry before it (something before it
    was removed, inserted or reordered) or its `entry_hash` is not the digest of its content (it was changed).
    """
    expected_previous, previous_id, verified = GENESIS_HASH, None, 0
    for entry in _entries_in_order(chunk_size):
        if entry["previous_hash"] != expected_previous:
            before = f"the entry_hash of entry {previous_id}" if previous_id is not None else "the genesis hash"
            return AuditVerification(ok=False, entries=verified, first_bad_id=entry["id"],
                                     problem=f"previous_hash does not match {before}: an entry was removed, inserted or reordered")
        if entry["entry_hash"] != entry_digest(entry, entry["previous_hash"]):
            return AuditVerification(ok=False, entries=verified, first_bad_id=entry["id"],
                                     problem="entry_hash does not match the entry's content: the entry was changed")
        expected_previous, previous_id, verified = entry["entry_hash"], entry["id"], verified + 1
    return AuditVerification(ok=True, entries=verified)


def audit_for_provider(participant_iri: str) -> QuerySet[AuditEntry]:
    """The audit of a provider's data: entries whose `provider_iri` is that participant, newest first.

    An empty IRI selects nothing (entries with no known provider belong to no provider's audit).
    """
    if not participant_iri:
        return AuditEntry.objects.none()
    return AuditEntry.objects.filter(provider_iri=participant_iri).order_by("-at", "-id")


def _lock_chain() -> None:
    """Take the chain's write lock for the rest of the current transaction."""
    try:
        statement, params = CHAIN_LOCK_SQL[connection.vendor]
    except KeyError:
        raise NotImplementedError(f"the audit chain has no write lock for {connection.vendor}") from None
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def _last_hash() -> str:
    """The `entry_hash` of the last entry, or the genesis hash of an empty audit."""
    last = AuditEntry.objects.order_by("-id").values_list("entry_hash", flat=True)[:1]
    return next(iter(last), GENESIS_HASH)


def _entries_in_order(chunk_size: int) -> Iterator[dict]:
    """Every entry as a dict of its fields, in id order, read in chunks by keyset (never all in memory)."""
    after_id = 0
    while True:
        chunk = list(AuditEntry.objects.filter(id__gt=after_id).order_by("id")
                     .values("id", "entry_hash", "previous_hash", *CONTENT_FIELDS)[:chunk_size])
        yield from chunk
        if len(chunk) < chunk_size:
            return
        after_id = chunk[-1]["id"]


def _clean_text(value: object, max_length: int) -> str:
    """`value` (None: empty) as text the database accepts: no NUL (PostgreSQL refuses it), no lone surrogates, cut to `max_length`."""
    text = "" if value is None else str(value).replace("\x00", "")
    return text.encode("utf-8", "replace").decode("utf-8")[:max_length]


def _clean_query(query: Mapping | None) -> dict[str, str | list[str]]:
    """A bounded excerpt of the request's query parameters, each value text or a list of text."""
    if not query:
        return {}
    pairs = query.lists() if isinstance(query, QueryDict) else query.items()
    excerpt = {}
    for key, value in pairs:
        if len(excerpt) == MAX_QUERY_KEYS:
            break
        if isinstance(value, list | tuple):
            value = [_clean_text(item, MAX_QUERY_VALUE_CHARS) for item in value[:MAX_QUERY_VALUES]]
        else:
            value = _clean_text(value, MAX_QUERY_VALUE_CHARS)
        excerpt[_clean_text(key, MAX_QUERY_KEY_CHARS)] = value
    return excerpt


def _bounded(value: int, name: str, maximum: int) -> int:
    """`value` as an int in [0, maximum], the range of its column; anything else is a caller's bug."""
    number = int(value)
    if not 0 <= number <= maximum:
        raise ValueError(f"{name} must be between 0 and {maximum}, not {value!r}")
    return number


def _aware(at: datetime) -> datetime:
    """`at` with a time zone: a naive time is read as UTC, the project's time zone."""
    return at if timezone.is_aware(at) else at.replace(tzinfo=UTC)
