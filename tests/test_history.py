"""The history of a grid: every write that changes it records a version; the past (versions, finished runs, their results
and pictures) never changes; assets that readings or results refer to are retired, never deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from rdflib import Literal
from rdflib.namespace import XSD

from ontology.namespaces import CIM
from ontology.parsing import parse_rdf
from ontology.serialization import serialize
from tests.test_admin import change_form_data
from tests.test_ingest_replay import replay  # noqa: F401  (the fixture: replay as the embedded default runs it)
from twin import history, models, plots, selectors, services
from twin.loadflow import services as loadflow

pytestmark = pytest.mark.django_db
Run = models.LoadFlowRun
NOON = datetime(2016, 6, 21, 12, tzinfo=UTC)


@pytest.fixture
def grid(utility, lv_turtle) -> models.Grid:
    document = parse_rdf(lv_turtle, "text/turtle", max_bytes=10**8, max_literal_chars=10**5)
    return services.grid_import_graph(graph=document, participant=utility, source="upload").grid


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("historian", password="pw-historian-1"))
    return client


def versions(client, grid) -> list[dict]:
    response = client.get(reverse("grid-version-list", kwargs={"grid_pk": grid.pk}))
    assert response.status_code == 200, response.content
    return response.json()["results"]


def rdf(client, grid, **query) -> bytes:
    response = client.get(reverse("grid-rdf", kwargs={"pk": grid.pk}), {"format": "nt", **query})
    assert response.status_code == 200, response.content
    return response.content


def execute(run: Run) -> Run:
    for index in loadflow.loadflow_run_execute(run_id=run.pk):
        loadflow.loadflow_chunk_solve(run_id=run.pk, index=index)
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, run.error
    return run


def changed_line_graph(grid: models.Grid, length_km: float):
    """The grid as it is now with the first line's length set, as an upload of the whole grid."""
    graph = selectors.grid_graph(grid)
    line = sorted(graph.subjects(CIM["Conductor.length"], None))[0]
    graph.set((line, CIM["Conductor.length"], Literal(length_km, datatype=XSD.double)))
    return graph, str(line)


def test_every_write_path_records_a_version_only_when_the_content_changes(grid, utility, operator, admin_client, lv_turtle):
    assert [(v["number"], v["via"], v["counts"]["added"] > 100) for v in versions(operator, grid)] == [(1, "upload", True)]
    document = parse_rdf(lv_turtle, "text/turtle", max_bytes=10**8, max_literal_chars=10**5)
    assert services.grid_import_graph(graph=document, participant=utility).changed is False  # the same content: no version

    graph, line_iri = changed_line_graph(grid, 0.123)
    response = operator.post(reverse("model-list"), serialize(graph, "turtle"), content_type="text/turtle")
    assert response.status_code == 200 and response.json()["version"] == 2

    line = models.Line.objects.get(iri=line_iri)
    data = change_form_data(line) | {"length_km": "0.456"}
    assert admin_client.post(reverse("admin:twin_line_change", args=[line.pk]), data).status_code == 302
    assert admin_client.post(reverse("admin:twin_line_change", args=[line.pk]), data).status_code == 302  # unchanged: no version

    listed = versions(operator, grid)
    assert [(v["number"], v["via"], v["counts"]) for v in listed[1:]] == [
        (2, "upload", {"added": 0, "changed": 1, "retired": 0}), (3, "admin", {"added": 0, "changed": 1, "retired": 0})]
    assert listed[1]["created_by"]["participant"] == utility.iri and listed[1]["created_by"]["user"] == "operator"
    assert listed[1]["created_by"]["credential"].startswith("token:")
    assert listed[2]["created_by"]["user"] == "historian"
    assert len({v["hash"] for v in listed}) == 3
    grid.refresh_from_db()
    assert grid.version == 3


def test_a_version_diff_names_assets_added_changed_with_their_fields_and_retired(grid, operator):
    graph, line_iri = changed_line_graph(grid, 0.5)
    load = sorted(graph.subjects(CIM["EnergyConsumer.p"], None))[0]
    for terminal in list(graph.subjects(CIM["Terminal.ConductingEquipment"], load)):
        graph.remove((terminal, None, None))
    graph.remove((load, None, None))
    assert operator.post(reverse("model-list"), serialize(graph, "turtle"), content_type="text/turtle").status_code == 200

    detail = operator.get(reverse("grid-version-detail", kwargs={"grid_pk": grid.pk, "number": 2})).json()
    diff = detail["diff"]
    assert (diff["from_version"], diff["to_version"], diff["counts"]) == (1, 2, {"added": 0, "changed": 1, "retired": 1})
    assert diff["changed"] == [{"type": "Line", "iri": line_iri, "fields": ["length_km"]}]
    assert diff["retired"] == [{"type": "Load", "iri": str(load)}]
    back = operator.get(reverse("grid-version-diff", kwargs={"grid_pk": grid.pk}), {"from": 2, "to": 1}).json()
    assert back["added"] == [{"type": "Load", "iri": str(load)}] and back["retired"] == []
    first = operator.get(reverse("grid-version-detail", kwargs={"grid_pk": grid.pk, "number": 1})).json()["diff"]
    live_rows = sum(len(rows) for rows in selectors.grid_rows(grid)[1].values())
    assert first["from_version"] is None and first["counts"]["added"] == live_rows + 1  # version 1 had the load too

    diff_url = reverse("grid-version-diff", kwargs={"grid_pk": grid.pk})
    for query, status, reason in (({"from": 1}, 400, "invalid_filter"), ({"from": "x", "to": 2}, 400, "invalid_filter"),
                                  ({"from": 1, "to": 9}, 404, None)):
        response = operator.get(diff_url, query)
        assert response.status_code == status and (reason is None or response.json()["reason"] == reason)
    assert operator.get(reverse("grid-version-detail", kwargs={"grid_pk": grid.pk, "number": 99999999999})).status_code == 404


def test_a_past_version_exports_byte_for_byte_as_it_was(grid, operator, tmp_path):
    before = {fmt: rdf(operator, grid, format=fmt) for fmt in ("nt", "turtle")}
    graph, _ = changed_line_graph(grid, 0.777)
    services.grid_apply_changes(grid=grid, graph=graph)

    assert rdf(operator, grid, version=1) == before["nt"]
    call_command("export_rdf", str(grid.pk), format="nt", grid_version=1, output=str(tmp_path / "v1.nt"))
    assert (tmp_path / "v1.nt").read_bytes() == before["nt"]
    assert rdf(operator, grid, version=1, format="turtle") == before["turtle"]
    assert rdf(operator, grid, version=2) == rdf(operator, grid) != before["nt"]
    assert operator.get(reverse("grid-rdf", kwargs={"pk": grid.pk}), {"version": 3}).status_code == 404
    assert operator.get(reverse("grid-rdf", kwargs={"pk": grid.pk}), {"version": "latest"}).json()["reason"] == "invalid_filter"


def test_versions_of_a_grid_out_of_scope_are_404_like_an_absent_one(grid, operator, other_operator, anonymous):
    for name, kwargs in (("grid-version-list", {}), ("grid-version-detail", {"number": 1}), ("grid-version-diff", {})):
        query = {"from": 1, "to": 1} if name == "grid-version-diff" else {}
        assert operator.get(reverse(name, kwargs={"grid_pk": grid.pk, **kwargs}), query).status_code == 200
        assert other_operator.get(reverse(name, kwargs={"grid_pk": grid.pk, **kwargs}), query).status_code == 404
        assert other_operator.get(reverse(name, kwargs={"grid_pk": 2**31 - 7, **kwargs}), query).status_code == 404
        assert anonymous.get(reverse(name, kwargs={"grid_pk": grid.pk, **kwargs}), query).status_code == 401
    assert other_operator.get(reverse("grid-rdf", kwargs={"pk": grid.pk}), {"version": 1}).status_code == 404


def test_a_finished_run_keeps_its_version_results_and_pictures_after_its_assets_go(grid, admin_client):
    run = execute(loadflow.loadflow_run_create(grid=grid, at=NOON))
    pictures = {name: plots.run_picture(run, name) for name in ("grid", "voltage-profile")}
    results = sorted(run.bus_results.values_list("bus_id", "vm_pu"))
    bus = models.Bus.objects.filter(grid=grid, loads__isnull=False).order_by("id").first()
    load = models.Load.objects.filter(bus=bus).first()

    response = admin_client.post(reverse("admin:twin_bus_delete", args=[bus.pk]), {"post": "yes"})

    assert response.status_code == 302
    bus.refresh_from_db()
    load.refresh_from_db()
    assert bus.retired_at is not None and load.retired_at is not None  # results name both: retired, not deleted
    assert sorted(run.bus_results.values_list("bus_id", "vm_pu")) == results
    run.refresh_from_db()
    assert run.grid_version == 1 and run.version.number == 1
    assert {name: plots.run_picture(run, name) for name in pictures} == pictures  # drawn on version 1, not on today's grid
    grid.refresh_from_db()
    assert grid.version == 2
    latest = history.version_content(grid.versions.get(number=2))
    assert bus.iri not in {row["iri"] for row in latest["rows"]["Bus"]} and bus.iri not in str(selectors.grid_graph(grid).serialize())
    assert not models.Bus.objects.filter(grid=grid, retired_at__isnull=True, pk=bus.pk).exists()

    document = history.content_graph(history.version_content(grid.versions.get(number=1)))
    assert services.grid_import_graph(graph=document, participant=grid.owner).counts["Bus"]["updated"] == 1  # back: same row
    bus.refresh_from_db()
    assert bus.retired_at is None and grid.versions.latest("number").content_hash == grid.versions.get(number=1).content_hash
    models.Grid.objects.filter(pk=grid.pk).delete()  # a grid goes with its runs, results and versions at once
    assert not models.GridVersion.objects.filter(grid_id=grid.pk).exists() and not models.BusResult.objects.exists()


def test_an_admin_edit_changes_the_next_runs_result_and_recorded_version(grid, admin_client):
    first = execute(loadflow.loadflow_run_create(grid=grid, at=NOON))
    load = models.Load.objects.filter(grid=grid).order_by("-p_mw").first()
    data = change_form_data(load) | {"p_mw": str(load.p_mw + 0.05)}

    assert admin_client.post(reverse("admin:twin_load_change", args=[load.pk]), data).status_code == 302

    second = execute(loadflow.loadflow_run_create(grid=grid, at=NOON))
    assert (first.grid_version, second.grid_version) == (1, 2)
    assert second.version.via == "admin" and second.version.content_hash != first.version.content_hash
    assert second.summary["vm_min_pu"] < first.summary["vm_min_pu"] - 1e-4
    loadflow._MODELS.clear()  # a cold model of the same version gives the same result
    fresh = execute(loadflow.loadflow_run_create(grid=grid, at=NOON))
    assert fresh.grid_version == 2 and fresh.summary["vm_min_pu"] == pytest.approx(second.summary["vm_min_pu"], abs=1e-12)


def test_a_write_outside_every_recording_path_is_recorded_by_the_next_run(grid, django_assert_max_num_queries):
    """Run creation pins the version without reading the grid's content while nothing was written since (PostgreSQL: the
    grid's write stamp, a few queries); a raw UPDATE, a raw DELETE, and a value written back are each found and recorded."""
    first = execute(loadflow.loadflow_run_create(grid=grid, at=NOON))
    load = models.Load.objects.filter(grid=grid).order_by("-p_mw").first()
    if connection.vendor == "postgresql":
        with django_assert_max_num_queries(3):  # the latest version and the stamp: no content read, no hash in Python
            assert history.grid_version_current(grid).number == 1

    models.Load.objects.filter(pk=load.pk).update(p_mw=load.p_mw + 0.05)  # no version recorded by this write
    second = execute(loadflow.loadflow_run_create(grid=grid, at=NOON))
    assert (first.grid_version, second.grid_version, second.version.via) == (1, 2, "unrecorded")
    assert second.version.summary["changed"] == [{"type": "Load", "iri": load.iri, "fields": ["p_mw"]}]
    assert second.summary["vm_min_pu"] < first.summary["vm_min_pu"] - 1e-4
    assert loadflow.loadflow_run_create(grid=grid, at=NOON).grid_version == 2  # nothing written since: the same version

    models.Load.objects.filter(pk=load.pk).update(p_mw=load.p_mw)  # back to version 1's content: a new version all the same
    assert loadflow.loadflow_run_create(grid=grid, at=NOON).grid_version == 3
    switch = models.Switch.objects.filter(grid=grid).order_by("id").first() or models.Meter.objects.filter(grid=grid).first()
    type(switch).objects.filter(pk=switch.pk).delete()
    fourth = loadflow.loadflow_run_create(grid=grid, at=NOON)
    assert fourth.grid_version == 4 and fourth.version.summary["retired"] == [{"type": type(switch).__name__, "iri": switch.iri}]


@pytest.mark.slow
def test_rerunning_the_demo_keeps_every_reading_attached_to_a_live_meter(replay):  # noqa: F811
    from tests.conftest import LV_CODE

    start = datetime(2024, 1, 2, tzinfo=UTC)
    for _ in range(2):  # what `make demo` does to the grid, twice: publish the SimBench grid, replay a day of its profiles
        call_command("import_grid", simbench=LV_CODE)
        grid = models.Grid.objects.get(source=f"simbench:{LV_CODE}")
        replay(grid=grid.pk, start=start.isoformat(), days=1, batch_size=100_000)
        start += timedelta(days=1)

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM twin_reading r WHERE NOT EXISTS (SELECT 1 FROM twin_meter m WHERE m.id = r.point_id)")
        assert cursor.fetchone()[0] == 0
    batches = list(models.TelemetryBatch.objects.filter(channel="replay").order_by("id"))
    assert len(batches) == 2 and [b.rejected_count for b in batches] == [0, 0] and batches[1].accepted_count == batches[0].accepted_count
    meters = models.Meter.objects.filter(grid=grid)
    assert meters.count() == meters.filter(retired_at__isnull=True).count() > 0  # the replay brought the same meters back
    assert [v.via for v in grid.versions.order_by("number")] == ["simbench", "replay", "simbench", "replay"]


@pytest.mark.django_db(transaction=True)
def test_the_embedded_default_answers_a_run_it_solved_in_the_request_with_the_finished_run(grid, operator):
    """Without a broker, Celery runs the task inside the request: the answer is the run as it is then, 201 and succeeded,
    never `queued`; with a broker (the tests' own settings) the same request is really queued and says so with 202."""
    from config.celery_app import app as celery_app

    body = {"grid": grid.pk, "kind": "snapshot", "at": NOON.isoformat()}
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    try:
        solved = operator.post(reverse("loadflow-run-list"), body, format="json")
    finally:
        celery_app.conf.task_always_eager = eager
    assert solved.status_code == 201, solved.content
    run = Run.objects.get(pk=solved.json()["id"])
    assert solved.json()["status"] == run.status == Run.Status.SUCCEEDED and solved.json()["summary"] == run.summary != {}

    queued = operator.post(reverse("loadflow-run-list"), body, format="json")
    assert queued.status_code == 202 and queued.json()["status"] == "queued"
