"""The access audit: hash-chained, refused UPDATE and DELETE by the database, tampering found by `verify_audit`."""

import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.http import QueryDict

from sharing.audit import (
    CONTENT_FIELDS,
    GENESIS_HASH,
    MAX_QUERY_KEYS,
    MAX_QUERY_VALUE_CHARS,
    MAX_QUERY_VALUES,
    audit_for_provider,
    audit_record,
    audit_verify,
)
from sharing.audit import entry_digest as digest
from sharing.models import AuditEntry

CONSUMER = "https://gridtwin.example/id/participant/aggregator"
PROVIDER = "https://gridtwin.example/id/participant/utility"


def record(**overrides) -> AuditEntry:
    """One audited read of telemetry by the aggregator from the utility, with `overrides`."""
    decision = {
        "participant_iri": CONSUMER, "credential": "token:7", "action": "read", "resource": "telemetry", "purpose": "network_planning",
        "allowed": True, "rule": "agreement", "agreement_uid": "https://gridtwin.example/id/agreement/1", "provider_iri": PROVIDER,
        "method": "GET", "path": "/api/telemetry/", "query": {"from": "2024-01-01", "meter": ["m1", "m2"]}, "status_code": 200,
        "records": 96,
    }
    return audit_record(**{**decision, **overrides})


def chain(count: int) -> list[int]:
    """Append `count` entries; their ids in chain order."""
    return [record(records=n).id for n in range(count)]


def fields_of(entry_id: int) -> dict:
    """The stored fields of one entry, as the database returns them."""
    return AuditEntry.objects.values().get(id=entry_id)


@contextmanager
def append_only_lifted():
    """Tamper as the superuser: the append-only trigger is off inside the block."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE sharing_auditentry DISABLE TRIGGER sharing_auditentry_append_only")
        try:
            yield cursor
        finally:
            cursor.execute("ALTER TABLE sharing_auditentry ENABLE TRIGGER sharing_auditentry_append_only")


@pytest.mark.django_db
def test_each_entry_chains_onto_the_one_before():
    ids = chain(4)

    stored = [fields_of(entry_id) for entry_id in ids]
    assert stored[0]["previous_hash"] == GENESIS_HASH
    assert [entry["previous_hash"] for entry in stored[1:]] == [entry["entry_hash"] for entry in stored[:-1]]
    assert all(entry["entry_hash"] == digest(entry, entry["previous_hash"]) for entry in stored)
    assert len({entry["entry_hash"] for entry in stored}) == 4


def test_the_digest_covers_every_field_but_id_and_the_hashes():
    model_fields = {field.name for field in AuditEntry._meta.concrete_fields}

    assert set(CONTENT_FIELDS) == model_fields - {"id", "previous_hash", "entry_hash"}


CHANGES = {"at": datetime(2024, 1, 1, 12, 0, 0, 1, tzinfo=UTC), "participant_iri": "x", "credential": "x", "action": "x",
           "resource": "x", "purpose": "x", "allowed": False, "rule": "x", "agreement_uid": "x", "provider_iri": "x", "method": "x",
           "path": "x", "query": {"a": "c"}, "status_code": 404, "records": 1, "preview": True}


@pytest.mark.parametrize("name", CONTENT_FIELDS)
def test_changing_any_content_field_changes_the_digest(name):
    fields = {"at": datetime(2024, 1, 1, 12, tzinfo=UTC), "participant_iri": "", "credential": "", "action": "", "resource": "",
              "purpose": "", "allowed": True, "rule": "", "agreement_uid": "", "provider_iri": "", "method": "", "path": "",
              "query": {"a": "b"}, "status_code": None, "records": 0, "preview": False}

    assert digest({**fields, name: CHANGES[name]}, GENESIS_HASH) != digest(fields, GENESIS_HASH)
    assert digest(fields, "1" * 64) != digest(fields, GENESIS_HASH)


def test_the_digest_does_not_depend_on_time_zone_or_key_order():
    base = {name: CHANGES[name] for name in CONTENT_FIELDS}
    elsewhere = {**base, "at": base["at"].astimezone(timezone(timedelta(hours=2))), "query": {"b": ["1", "2"], "a": "c"}}
    reordered = {**dict(reversed(list(base.items()))), "query": {"a": "c", "b": ["1", "2"]}}

    assert digest(elsewhere, GENESIS_HASH) == digest(reordered, GENESIS_HASH)


def update_through_orm(entry):
    AuditEntry.objects.filter(id=entry.id).update(records=0)


def save_through_orm(entry):
    entry.records = 0
    entry.save()


def delete_through_orm(entry):
    entry.delete()


def delete_queryset_through_orm(entry):
    AuditEntry.objects.filter(id=entry.id).delete()


def update_through_sql(entry):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE sharing_auditentry SET records = 0 WHERE id = %s", [entry.id])


def delete_through_sql(entry):
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM sharing_auditentry WHERE id = %s", [entry.id])


@pytest.mark.django_db
@pytest.mark.parametrize("change", [update_through_orm, save_through_orm, delete_through_orm, delete_queryset_through_orm,
                                    update_through_sql, delete_through_sql])
def test_the_database_refuses_to_change_or_remove_an_entry(change):
    entry = record()
    before = fields_of(entry.id)

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        change(entry)

    assert fields_of(entry.id) == before
    assert audit_verify().ok


@pytest.mark.django_db
def test_an_intact_chain_verifies_with_its_count():
    chain(5)
    out = StringIO()

    call_command("verify_audit", stdout=out)

    assert out.getvalue().strip() == "audit chain intact: 5 entries"


@pytest.mark.django_db
def test_an_empty_audit_is_an_intact_chain():
    out = StringIO()

    call_command("verify_audit", stdout=out)

    assert out.getvalue().strip() == "audit chain intact: 0 entries"


def change_records(cursor, ids) -> int:
    cursor.execute("UPDATE sharing_auditentry SET records = records + 1 WHERE id = %s", [ids[2]])
    return ids[2]


def change_and_rehash(cursor, ids) -> int:
    cursor.execute("UPDATE sharing_auditentry SET records = records + 1 WHERE id = %s", [ids[2]])
    changed = fields_of(ids[2])
    cursor.execute("UPDATE sharing_auditentry SET entry_hash = %s WHERE id = %s", [digest(changed, changed["previous_hash"]), ids[2]])
    return ids[3]


def remove_a_middle_entry(cursor, ids) -> int:
    cursor.execute("DELETE FROM sharing_auditentry WHERE id = %s", [ids[2]])
    return ids[3]


def remove_the_first_entry(cursor, ids) -> int:
    cursor.execute("DELETE FROM sharing_auditentry WHERE id = %s", [ids[0]])
    return ids[1]


def swap_two_entries(cursor, ids) -> int:
    for source, target in ((ids[2], -1), (ids[3], ids[2]), (-1, ids[3])):
        cursor.execute("UPDATE sharing_auditentry SET id = %s WHERE id = %s", [target, source])
    return ids[2]


def insert_a_forged_entry(cursor, ids) -> int:
    forged = {**fields_of(ids[2]), "id": ids[2] + 1000, "records": 0, "previous_hash": fields_of(ids[2])["entry_hash"]}
    forged["entry_hash"] = digest(forged, forged["previous_hash"])
    cursor.execute("UPDATE sharing_auditentry SET id = id + 2000 WHERE id > %s", [ids[2]])
    AuditEntry.objects.bulk_create([AuditEntry(**forged)])
    return ids[3] + 2000


PROBLEMS = {change_records: "was changed", change_and_rehash: "removed, inserted or reordered",
            remove_a_middle_entry: "removed, inserted or reordered", remove_the_first_entry: "genesis",
            swap_two_entries: "removed, inserted or reordered", insert_a_forged_entry: "removed, inserted or reordered"}


@pytest.mark.django_db
@pytest.mark.parametrize("tamper", list(PROBLEMS), ids=lambda tamper: tamper.__name__)
def test_tampering_is_found_at_the_first_broken_entry(tamper):
    ids = chain(6)
    with append_only_lifted() as cursor:
        first_bad_id = tamper(cursor, ids)

    for verification in (audit_verify(), audit_verify(chunk_size=2)):
        assert (verification.ok, verification.first_bad_id) == (False, first_bad_id)
        assert PROBLEMS[tamper] in verification.problem
    with pytest.raises(CommandError, match=f"audit chain broken at entry {first_bad_id}: ") as failure:
        call_command("verify_audit")
    assert failure.value.returncode == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_make_one_unbroken_chain():
    writers, per_writer = 2, 50
    start, failures = threading.Barrier(writers), []

    def write(writer: int) -> None:
        try:
            start.wait()
            for n in range(per_writer):
                record(credential=f"token:{writer}", records=n)
        except Exception as error:  # reported to the test thread below
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert audit_verify() == audit_verify(chunk_size=7)
    assert audit_verify().ok, audit_verify().problem
    assert audit_verify().entries == writers * per_writer
    assert AuditEntry.objects.values("previous_hash").distinct().count() == writers * per_writer


@pytest.mark.django_db
def test_nul_surrogates_and_overlong_text_are_stored_safely():
    query = {f"key{n}\x00": f"v\x00{n}" for n in range(MAX_QUERY_KEYS + 10)}
    query["key0\x00"] = ["a\x00b", "c" * 2000, *["d"] * 40]

    entry = record(participant_iri="https://x.example/\x00" + "p" * 1000, credential="token:\ud800", rule="deny\x00", path="/api/" * 300,
                   query=query)

    stored = fields_of(entry.id)
    assert stored["participant_iri"] == ("https://x.example/" + "p" * 1000)[:500]
    assert stored["credential"] == "token:?"
    assert stored["rule"] == "deny"
    assert len(stored["path"]) == 500
    assert len(stored["query"]) == MAX_QUERY_KEYS
    assert stored["query"]["key0"] == ["ab", "c" * MAX_QUERY_VALUE_CHARS, *["d"] * (MAX_QUERY_VALUES - 2)]
    assert stored["query"]["key1"] == "v1"
    assert audit_verify().ok


@pytest.mark.django_db
def test_a_query_dict_keeps_every_value_of_a_parameter():
    entry = record(query=QueryDict("meter=m1&meter=m2&from=2024-01-01"))

    assert fields_of(entry.id)["query"] == {"meter": ["m1", "m2"], "from": ["2024-01-01"]}


@pytest.mark.django_db
@pytest.mark.parametrize("overrides", [{"records": -1}, {"records": 2**31}, {"status_code": 2**15}])
def test_counts_out_of_their_column_range_are_refused_before_the_database(overrides):
    with pytest.raises(ValueError, match="must be between"):
        record(**overrides)

    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_a_provider_reads_the_audit_of_its_data_only(utility, other_utility):
    own = [record(provider_iri=utility.iri).id, record(provider_iri=utility.iri, allowed=False, rule="deny").id]
    record(provider_iri=other_utility.iri)
    record(provider_iri="")

    assert list(audit_for_provider(utility.iri).values_list("id", flat=True)) == own[::-1]
    assert not audit_for_provider("").exists()
