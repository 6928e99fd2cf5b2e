"""Ownership is provenance, not a writable field: each step of the meter take-over attack, at the service level.

The attack (measured on main before the fix): the utility adds a meter to its own grid naming a charge-point
operator as `gt:owner`; the operator's gateway sends readings to it; the utility then re-posts the meter without
`gt:owner` and reads (or writes) those readings, or re-publishes its grid without the meter so that the readings
point at a deleted meter; and its load flows take the operator's measured values as inputs.
"""

from datetime import UTC, datetime, timedelta

import pytest
from rdflib import Graph

from ingest import selectors, services
from ingest.testing import readings_json
from ontology.namespaces import GT
from twin import models
from twin.loadflow import services as loadflow
from twin.rdf_codec import TripleWriter, write_meters
from twin.selectors import grid_graph, points_of
from twin.services import OWNER_REFUSED, ShapeViolation, grid_apply_changes, grid_import_graph, twin_object_check

pytestmark = pytest.mark.django_db

NOON = datetime(2024, 6, 20, 12, tzinfo=UTC)
NOBODY = "https://gridtwin.example/id/participant/nobody"


@pytest.fixture
def cpo(db) -> models.Participant:
    """A charge-point operator whose chargers sit in the utility's grid."""
    return models.Participant.objects.create(iri="https://gridtwin.example/id/participant/cpo", name="Charge-point operator",
                                             roles=["cpo"])


@pytest.fixture
def lv_graph(lv_turtle) -> Graph:
    return Graph().parse(data=lv_turtle, format="turtle")


@pytest.fixture
def grid(utility, lv_graph) -> models.Grid:
    """The utility's LV grid, published without meters."""
    return grid_import_graph(graph=lv_graph, participant=utility).grid


@pytest.fixture
def loads(grid) -> list[str]:
    return list(models.Load.objects.filter(grid=grid).order_by("id").values_list("iri", flat=True))


@pytest.fixture
def consent(cpo, grid) -> models.OwnerConsent:
    return models.OwnerConsent.objects.create(owner=cpo, grid_iri=grid.iri)


def meter_graph(iri: str, measured_iri: str, owner_iri: str | None = None) -> Graph:
    """One meter as the twin writes it (with `gt:owner` when `owner_iri` is given)."""
    writer = TripleWriter()
    row = {"iri": iri, "name": "charger meter", "kind": "ev_charger", "measured_iri": measured_iri, "feeder_id": None,
           "owner_id": 1 if owner_iri else None, "in_service": True}
    write_meters(writer, [row], {"Feeder": {}, "Participant": {1: owner_iri} if owner_iri else {}})
    return writer.graph


def with_meter(lv_graph: Graph, *meters: Graph) -> Graph:
    graph = Graph()
    graph += lv_graph
    for meter in meters:
        graph += meter
    return graph


def send(participant: models.Participant, readings: list[dict], name: str | None = None) -> models.TelemetryBatch:
    """A batch from a gateway of `participant`, received and processed as the worker does."""
    name = name or f"gw-{participant.pk}"
    source = models.TelemetrySource.objects.filter(name=name).first() or services.telemetry_source_issue(participant=participant,
                                                                                                          name=name)[0]
    receipt = services.telemetry_batch_receive(source=source, body=readings_json(readings), content_type="application/json")
    services.telemetry_batch_process(batch_id=receipt.batch.pk)
    return models.TelemetryBatch.objects.defer("body").get(pk=receipt.batch.pk)


def power(point, ts: datetime = NOON, kw: float = 7.0) -> dict:
    return {"point": point, "quantity": "active_power", "ts": ts.isoformat(), "value": kw, "unit": "kW"}


def rejected_reasons(batch: models.TelemetryBatch) -> list[str]:
    return list(batch.rejected_readings.values_list("reason", flat=True))


@pytest.fixture
def charger_meter(grid, loads, cpo, consent) -> models.Meter:
    """A meter of the operator's in the utility's grid, named with the operator's consent."""
    grid_apply_changes(grid=grid, graph=meter_graph(f"{grid.iri}/meter/charger", loads[0], cpo.iri))
    return models.Meter.objects.get(iri=f"{grid.iri}/meter/charger")


# (a) naming another participant as owner ------------------------------------------------------------------------


def test_naming_another_participant_as_owner_without_its_consent_is_refused_and_writes_nothing(grid, loads, cpo, lv_graph):
    models.OwnerConsent.objects.create(owner=cpo, grid_iri="https://gridtwin.example/id/some-other-grid")  # not this grid
    meter = f"{grid.iri}/meter/charger"
    version = grid.version

    answers = []
    for owner_iri in (cpo.iri, NOBODY):
        with pytest.raises(ShapeViolation) as refused:
            grid_apply_changes(grid=grid, graph=meter_graph(meter, loads[0], owner_iri))
        answers.append(refused.value)
    with pytest.raises(ShapeViolation) as whole:
        grid_import_graph(graph=with_meter(lv_graph, meter_graph(meter, loads[0], cpo.iri)), participant=grid.owner)

    for error in [*answers, whole.value]:
        assert error.status == 422
        [violation] = error.report.violations
        assert (violation.focus_node, violation.path, violation.message) == (meter, str(GT.owner), OWNER_REFUSED)
    # a registered participant without consent and an IRI nobody has get the same answer
    consented, unknown = (error.as_dict() for error in answers)
    assert {**consented, "violations": None} == {**unknown, "violations": None}
    assert [{k: v for k, v in d.items() if k != "value"} for d in consented["violations"]] == \
        [{k: v for k, v in d.items() if k != "value"} for d in unknown["violations"]]
    assert not models.Meter.objects.filter(iri=meter).exists()
    grid.refresh_from_db()
    assert grid.version == version


def test_with_consent_another_participant_may_be_named_owner(grid, loads, cpo, consent, lv_graph):
    meter = f"{grid.iri}/meter/charger"
    result = grid_apply_changes(grid=grid, graph=meter_graph(meter, loads[0], cpo.iri))
    assert result.counts["Meter"]["created"] == 1
    assert models.Meter.objects.get(iri=meter).owner == cpo

    again = grid_import_graph(graph=with_meter(lv_graph, meter_graph(meter, loads[0], cpo.iri)), participant=grid.owner)
    assert again.changed is False  # the whole grid with the same meter: consent holds there too


def test_an_admin_save_naming_an_owner_without_consent_is_refused(grid, loads, cpo, utility):
    grid_apply_changes(grid=grid, graph=meter_graph(f"{grid.iri}/meter/own", loads[0]))
    meter = models.Meter.objects.get(iri=f"{grid.iri}/meter/own")
    meter.owner = cpo
    assert OWNER_REFUSED in [v.message for v in twin_object_check(meter).violations]
    models.OwnerConsent.objects.create(owner=cpo, grid_iri=grid.iri)
    assert twin_object_check(meter).conforms
    meter.owner = utility  # the grid's owner needs no consent
    assert twin_object_check(meter).conforms


# (b) readings belong to the gateway's participant ------------------------------------------------------------------


def test_readings_belong_to_the_sending_gateway_not_to_the_owner_field(grid, loads, utility, cpo, charger_meter):
    assert rejected_reasons(send(utility, [power(charger_meter.pk)])) == ["unknown_point"]  # the meter is the operator's

    batch = send(cpo, [power(charger_meter.pk), power(charger_meter.iri, NOON + timedelta(minutes=15))])
    assert (batch.status, batch.accepted_count, batch.rejected_count) == ("succeeded", 2, 0)
    charger_meter.refresh_from_db()
    assert charger_meter.telemetry_owner == cpo

    # The utility re-posts the meter without gt:owner: the field changes, the readings' owner does not.
    grid_apply_changes(grid=grid, graph=meter_graph(charger_meter.iri, loads[0]))
    charger_meter.refresh_from_db()
    assert charger_meter.owner is None and charger_meter.telemetry_owner == cpo
    later = NOON + timedelta(hours=1)
    assert rejected_reasons(send(utility, [power(charger_meter.pk, later), power(charger_meter.iri, later)])) == \
        ["unknown_point", "unknown_point"]
    assert charger_meter.pk not in selectors.point_ids_for([utility.pk], {str(charger_meter.pk), charger_meter.iri}).values()
    assert not points_of([utility.pk]).filter(pk=charger_meter.pk).exists()  # nor may it read them
    assert send(cpo, [power(charger_meter.pk, later)]).accepted_count == 1  # the operator still writes its meter
    assert points_of([cpo.pk]).filter(pk=charger_meter.pk).exists()
    assert models.Reading.objects.filter(point=charger_meter).count() == 3
    assert set(models.Reading.objects.filter(point=charger_meter).values_list("batch__participant", flat=True)) == {cpo.pk}


def test_telemetry_owner_is_fixed_once_by_the_first_batch(grid, loads, utility, cpo):
    grid_apply_changes(grid=grid, graph=meter_graph(f"{grid.iri}/meter/own", loads[1]))
    meter = models.Meter.objects.get(iri=f"{grid.iri}/meter/own")
    assert meter.telemetry_owner is None
    assert send(utility, [power(meter.pk)]).accepted_count == 1
    meter.refresh_from_db()
    assert meter.telemetry_owner == utility

    # Naming the operator as owner now (with its consent) hands it neither the readings nor the right to write.
    models.OwnerConsent.objects.create(owner=cpo, grid_iri=grid.iri)
    grid_apply_changes(grid=grid, graph=meter_graph(meter.iri, loads[1], cpo.iri))
    meter.refresh_from_db()
    assert meter.owner == cpo and meter.telemetry_owner == utility
    assert rejected_reasons(send(cpo, [power(meter.pk, NOON + timedelta(hours=1))])) == ["unknown_point"]
    assert send(utility, [power(meter.pk, NOON + timedelta(hours=1))]).accepted_count == 1


# (c) retire, never delete, a meter with readings --------------------------------------------------------------------


def test_republishing_without_a_meter_that_has_readings_retires_it(grid, loads, utility, cpo, charger_meter, lv_graph):
    grid_apply_changes(grid=grid, graph=meter_graph(f"{grid.iri}/meter/spare", loads[1]))  # no readings: deleted
    spare = models.Meter.objects.get(iri=f"{grid.iri}/meter/spare").pk
    send(cpo, [power(charger_meter.pk), power(charger_meter.pk, NOON + timedelta(minutes=15))])
    version = models.Grid.objects.get(pk=grid.pk).version

    result = grid_import_graph(graph=lv_graph, participant=utility)

    assert result.counts["Meter"] == {"created": 0, "updated": 0, "deleted": 1, "retired": 1}
    assert result.grid.version == version + 1
    assert not models.Meter.objects.filter(pk=spare).exists()
    charger_meter.refresh_from_db()
    assert charger_meter.retired_at is not None and charger_meter.in_service is False
    assert charger_meter.telemetry_owner == cpo
    assert models.Reading.objects.filter(point=charger_meter).count() == 2
    assert set(models.Reading.objects.values_list("point_id", flat=True)) <= set(models.Meter.objects.values_list("id", flat=True))
    assert charger_meter.iri not in {str(s) for s in grid_graph(result.grid).subjects()}  # not in the export
    assert rejected_reasons(send(cpo, [power(charger_meter.pk, NOON + timedelta(hours=1))])) == ["unknown_point"]
    assert points_of([cpo.pk]).filter(pk=charger_meter.pk).exists()  # its sender still reads its readings

    again = grid_import_graph(graph=lv_graph, participant=utility)
    assert again.changed is False and again.grid.version == version + 1
    assert again.counts["Meter"] == {"created": 0, "updated": 0, "deleted": 0, "retired": 0}

    back = grid_import_graph(graph=with_meter(lv_graph, meter_graph(charger_meter.iri, loads[0], cpo.iri)), participant=utility)
    assert back.counts["Meter"] == {"created": 0, "updated": 1, "deleted": 0, "retired": 0}
    charger_meter.refresh_from_db()
    assert charger_meter.retired_at is None and charger_meter.in_service is True and charger_meter.telemetry_owner == cpo
    assert send(cpo, [power(charger_meter.pk, NOON + timedelta(hours=2))]).accepted_count == 1
    assert grid_import_graph(graph=with_meter(lv_graph, meter_graph(charger_meter.iri, loads[0], cpo.iri)),
                             participant=utility).changed is False


def test_a_change_describing_a_retired_meter_again_unretires_it(grid, loads, utility, cpo, charger_meter, lv_graph):
    send(cpo, [power(charger_meter.pk)])
    grid_import_graph(graph=lv_graph, participant=utility)
    result = grid_apply_changes(grid=grid, graph=meter_graph(charger_meter.iri, loads[0], cpo.iri))
    assert result.counts["Meter"]["updated"] == 1
    charger_meter.refresh_from_db()
    assert charger_meter.retired_at is None and charger_meter.in_service is True


@pytest.mark.parametrize("move", ["deleted", "re-owned"])
def test_a_point_that_moves_between_resolving_and_writing_gets_no_readings(grid, loads, utility, cpo, consent, lv_graph, monkeypatch,
                                                                            move):
    """Regression: a re-publish that deletes a meter (or gives it another owner) after a worker resolved the batch's
    points must not leave readings pointing at a deleted meter id, or at a meter that is no longer the sender's."""
    owner = cpo if move == "re-owned" else None
    sender = cpo if move == "re-owned" else utility
    grid_apply_changes(grid=grid, graph=meter_graph(f"{grid.iri}/meter/racy", loads[2], owner.iri if owner else None))
    meter = models.Meter.objects.get(iri=f"{grid.iri}/meter/racy")
    resolve = selectors.point_ids_for
    calls = []

    def resolve_then_republish(*args, **kwargs):
        found = resolve(*args, **kwargs)
        if not calls:  # what a concurrent re-publish does right after the worker resolved the points
            graph = lv_graph if move == "deleted" else with_meter(lv_graph, meter_graph(meter.iri, loads[2]))
            grid_import_graph(graph=graph, participant=utility)
        calls.append(found)
        return found

    monkeypatch.setattr(services.selectors, "point_ids_for", resolve_then_republish)
    batch = send(sender, [power(meter.pk)])

    assert meter.pk in calls[0].values() and len(calls) == 2
    assert (batch.status, batch.accepted_count, rejected_reasons(batch)) == ("succeeded", 0, ["unknown_point"])
    assert not models.Reading.objects.filter(point_id=meter.pk).exists()
    assert not models.LatestReading.objects.filter(point_id=meter.pk).exists()
    assert models.Meter.objects.filter(pk=meter.pk).exists() is (move == "re-owned")
    if move == "re-owned":
        meter.refresh_from_db()
        assert meter.telemetry_owner is None


# (d) load flows use only the grid owner's own telemetry ------------------------------------------------------------


def execute(run: models.LoadFlowRun) -> models.LoadFlowRun:
    for index in loadflow.loadflow_run_execute(run_id=run.pk):
        loadflow.loadflow_chunk_solve(run_id=run.pk, index=index)
    run.refresh_from_db()
    return run


def test_a_load_flow_takes_measured_values_only_from_the_grid_owners_telemetry(grid, loads, utility, cpo, charger_meter, lv_graph):
    grid_apply_changes(grid=grid, graph=meter_graph(f"{grid.iri}/meter/own", loads[1]))
    own = models.Meter.objects.get(iri=f"{grid.iri}/meter/own")
    assert send(cpo, [power(charger_meter.pk, kw=50.0)]).accepted_count == 1
    assert send(utility, [power(own.pk, kw=3.0)]).accepted_count == 1

    run = execute(loadflow.loadflow_run_create(grid=grid, at=NOON))
    assert run.status == models.LoadFlowRun.Status.SUCCEEDED, run.error
    assert run.inputs["measured"] == 1  # the utility's meter; the operator's readings are not the utility's to use

    # Not even after the utility re-posts the operator's meter as its own.
    grid_apply_changes(grid=grid, graph=meter_graph(charger_meter.iri, loads[0]))
    run = execute(loadflow.loadflow_run_create(grid=grid, at=NOON))
    assert run.inputs["measured"] == 1

    # A retired meter of the utility's own feeds no run either.
    grid_import_graph(graph=with_meter(lv_graph, meter_graph(charger_meter.iri, loads[0])), participant=utility)
    assert models.Meter.objects.get(pk=own.pk).retired_at is not None
    run = execute(loadflow.loadflow_run_create(grid=grid, at=NOON))
    assert run.inputs["measured"] == 0
