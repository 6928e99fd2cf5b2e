"""Load-flow engine: the twin's results equal pandapower's on the original SimBench nets; runs, results, violations, bad input.

Grids come from SimBench through the real import path; runs are executed by the same services the
Celery tasks call (`twin.tasks` only forwards ids).
"""

import copy
import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pandapower as pp
import pytest
from django.core.management import call_command

from ontology.converters.pandapower_net import net_to_graph
from tests.conftest import LV_CODE, MV_CODE
from twin import models
from twin.loadflow import selectors, services
from twin.loadflow.inputs import build_inputs
from twin.loadflow.profiles import simbench_reference
from twin.services import grid_import_graph

Run = models.LoadFlowRun
YEAR = datetime(2016, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=15)
NOON_IN_JUNE = YEAR + (96 * 172 + 48) * STEP  # step 16,560: PV high, load low


@pytest.fixture(scope="module")
def simbench_nets(lv_net, mv_net):
    """SimBench nets by code, loaded once per run (4–5 s each; conftest)."""
    return {LV_CODE: lv_net, MV_CODE: mv_net}


def import_simbench(net, code: str, owner: models.Participant) -> models.Grid:
    iri = f"https://gridtwin.example/id/simbench/{code}"
    graph = net_to_graph(net, grid_iri=iri, grid_name=code, owner_iri=owner.iri)
    return grid_import_graph(graph=graph, participant=owner, source=f"simbench:{code}").grid


def execute(run: Run) -> Run:
    """What the workers do: execute the run, then solve its chunks (if any)."""
    for index in services.loadflow_run_execute(run_id=run.pk):
        services.loadflow_chunk_solve(run_id=run.pk, index=index)
    run.refresh_from_db()
    return run


def original_results(net, step: int):
    """pandapower on the original SimBench net with the profile values of one step (taps applied, simbench issue #69)."""
    return simbench_reference(net, step)


@pytest.mark.parametrize("code", [LV_CODE, MV_CODE])
def test_snapshot_equals_pandapower_on_the_original_simbench_net(db, utility, simbench_nets, code):
    grid = import_simbench(simbench_nets[code], code, utility)
    run = execute(services.loadflow_run_create(grid=grid, at=NOON_IN_JUNE))
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.inputs["profile"] > 0 and run.inputs["measured"] == 0
    direct = original_results(simbench_nets[code], int((NOON_IN_JUNE - YEAR) / STEP))

    prefix = f"{grid.iri}/"
    vm = {row["bus__iri"]: row["vm_pu"] for row in selectors.bus_results(run)}
    twin_vm = np.array([vm[f"{prefix}bus/{i}"] for i in direct.bus.index])
    assert np.nanmax(np.abs(twin_vm - direct.res_bus.vm_pu.to_numpy())) < 1e-6
    for element, frame in (("line", direct.res_line), ("trafo", direct.res_trafo)):
        loading = {row["asset_iri"]: row["loading_percent"] for row in selectors.branch_results(run, element)}
        twin_loading = np.array([loading[f"{prefix}{element}/{i}"] for i in frame.index], dtype=float)
        assert np.nanmax(np.abs(twin_loading - frame.loading_percent.to_numpy())) < 1e-4
    assert run.summary["vm_max_pu"] == pytest.approx(direct.res_bus.vm_pu.max(), abs=1e-6)


@pytest.fixture
def lv_grid(db, utility, simbench_nets):
    return import_simbench(simbench_nets[LV_CODE], LV_CODE, utility)


def test_api_starts_a_snapshot_and_serves_filtered_results(lv_grid, operator, other_operator, anonymous):
    body = {"grid": lv_grid.pk, "at": NOON_IN_JUNE.isoformat()}
    assert anonymous.post("/api/v1/loadflow/runs", body, format="json").status_code == 401
    assert other_operator.post("/api/v1/loadflow/runs", body, format="json").status_code == 404
    answer = operator.post("/api/v1/loadflow/runs", body, format="json")
    assert answer.status_code == 202, answer.json()
    run_id = answer.json()["id"]
    assert answer.json()["status"] == "queued"
    assert operator.get(f"/api/v1/loadflow/runs/{run_id}/results").status_code == 409  # not solved yet: run_not_succeeded
    execute(Run.objects.get(pk=run_id))

    run = operator.get(f"/api/v1/loadflow/runs/{run_id}").json()
    assert run["status"] == "succeeded" and run["progress_percent"] == 100.0
    assert run["grid_version"] == lv_grid.version and "lightsim2grid" in run["versions"]
    buses = operator.get(f"/api/v1/loadflow/runs/{run_id}/results?element=bus&limit=500").json()
    assert buses["count"] == models.Bus.objects.filter(grid=lv_grid).count()
    lowest = min(r["vm_pu"] for r in buses["results"])
    below = operator.get(f"/api/v1/loadflow/runs/{run_id}/results?element=bus&vm_below={lowest + 1e-9}").json()
    assert below["count"] == sum(r["vm_pu"] <= lowest + 1e-9 for r in buses["results"]) < buses["count"]
    lines = operator.get(f"/api/v1/loadflow/runs/{run_id}/results?element=line&min_loading_percent=0").json()
    assert lines["count"] == models.Line.objects.filter(grid=lv_grid).count()
    assert operator.get(f"/api/v1/loadflow/runs/{run_id}/results?element=switch").status_code == 400
    assert other_operator.get(f"/api/v1/loadflow/runs/{run_id}/results").status_code == 404
    png = operator.get(f"/api/v1/loadflow/runs/{run_id}/plots/voltage-profile.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert operator.get(f"/api/v1/loadflow/runs/{run_id}/plots/grid.png").content.startswith(b"\x89PNG")


def test_a_narrow_band_becomes_violation_records(lv_grid):
    run = execute(services.loadflow_run_create(grid=lv_grid, at=NOON_IN_JUNE,
                                               parameters={"vm_min_pu": 0.999, "vm_max_pu": 1.001, "max_loading_percent": 1.0}))
    assert run.status == Run.Status.SUCCEEDED
    vm = dict(run.bus_results.values_list("bus__iri", "vm_pu"))
    outside = {iri for iri, value in vm.items() if value < 0.999 or value > 1.001}
    found = run.violations.filter(quantity="vm_pu")
    assert outside and set(found.values_list("asset_iri", flat=True)) == outside
    assert all(v.start == v.end == NOON_IN_JUNE and v.limit in (0.999, 1.001) for v in found)
    loaded = run.branch_results.filter(loading_percent__gt=1.0).count()
    assert run.violations.filter(quantity="loading_percent").count() == loaded > 0


def test_a_day_of_time_series_in_chunks_with_violations_and_en50160(lv_grid, settings):
    settings.GRIDTWIN_LOADFLOW_CHUNK_STEPS = 40  # 96 steps → 3 chunks, solved independently
    start = NOON_IN_JUNE.replace(hour=0)
    run = execute(services.loadflow_run_create(grid=lv_grid, kind="timeseries", start=start, end=start + timedelta(days=1),
                                               parameters={"vm_max_pu": 1.0}))
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert (run.chunks_total, run.chunks_done, run.steps_done) == (3, 3, 96)
    # every step equals a snapshot at the same time
    snapshot = execute(services.loadflow_run_create(grid=lv_grid, at=NOON_IN_JUNE))
    bus = snapshot.bus_results.order_by("vm_pu").first()
    found = selectors.series(run, "bus", [bus.bus.iri])
    noon = found["time"].index(NOON_IN_JUNE)
    assert found["values"][bus.bus.iri]["vm_pu"][noon] == pytest.approx(bus.vm_pu, abs=1e-6)  # float32 storage
    # violations above 1.0 pu are periods, merged across chunk borders
    periods = list(run.violations.filter(quantity="vm_pu").order_by("asset_iri", "start"))
    assert periods and all(p.steps == (p.end - p.start) / STEP + 1 for p in periods)
    for a, b in itertools.pairwise(periods):
        assert a.asset_iri != b.asset_iri or b.start - a.end > STEP
    weeks = selectors.en50160_weekly(run)
    assert {w["values"] for w in weeks} == {96} and all(w["compliant"] for w in weeks)
    assert run.input_records.filter(source="profile").count() == run.inputs["profile"] // 96


def test_run_loadflow_command_prints_the_run_and_results(lv_grid, capsys):
    call_command("run_loadflow", str(lv_grid.pk), "--at", NOON_IN_JUNE.isoformat(), "--json")
    out = capsys.readouterr().out
    assert out.startswith("run ")
    assert '"status": "succeeded"' in out and '"vm_pu"' in out


# --- bad input ------------------------------------------------------------------------------------


def test_bad_requests_are_4xx_and_store_nothing(lv_grid, operator):
    def post(**body):
        return operator.post("/api/v1/loadflow/runs", {"grid": lv_grid.pk, **body}, format="json")

    year = {"start": YEAR.isoformat(), "end": (YEAR + timedelta(days=367)).isoformat()}
    assert post(kind="timeseries", **year).json()["reason"] == "period_too_long"
    assert post(kind="timeseries", start=YEAR.isoformat(), end=YEAR.isoformat()).json()["reason"] == "invalid_period"
    assert post(kind="timeseries").status_code == 400
    assert post(parameters={"vm_min_pu": 1.2}).json()["reason"] == "invalid_band"
    ghost = {"changes": [{"action": "remove", "iri": "https://gridtwin.example/id/nothing"}]}
    answer = post(kind="whatif", parameters={"scenario": ghost})
    assert answer.status_code == 422 and answer.json()["reason"] == "invalid_scenario"
    assert post(step_minutes=7).status_code == 400
    models.ExternalGrid.objects.filter(grid=lv_grid).update(in_service=False)
    answer = post()
    assert answer.status_code == 422 and answer.json()["reason"] == "no_slack"
    assert not Run.objects.exists()


def test_islands_and_non_convergence_fail_the_run_with_nothing_written(lv_grid):
    loaded_bus = models.Load.objects.filter(grid=lv_grid).first().bus
    models.Line.objects.filter(grid=lv_grid).update(in_service=False)  # every consumer cut off from the transformer
    run = execute(services.loadflow_run_create(grid=lv_grid, at=NOON_IN_JUNE))
    assert run.status == Run.Status.FAILED and run.error.startswith("islands:")
    start = NOON_IN_JUNE.replace(hour=0)
    run = execute(services.loadflow_run_create(grid=lv_grid, kind="timeseries", start=start, end=start + STEP * 8))
    assert run.status == Run.Status.FAILED and run.error.startswith("islands:") and run.summary == {}
    assert not run.chunks.exclude(arrays=None).exists()
    models.Line.objects.filter(grid=lv_grid).update(in_service=True)

    # 200 MW on an LV feeder: no voltage solution exists
    heavy = {"changes": [{"action": "add", "element": "load", "buses": [loaded_bus.iri], "p_mw": 200.0}]}
    run = execute(services.loadflow_run_create(grid=lv_grid, kind="whatif", at=NOON_IN_JUNE, parameters={"scenario": heavy}))
    assert run.status == Run.Status.FAILED and run.error.startswith("not_converged:")
    assert not (run.bus_results.exists() or run.branch_results.exists() or run.violations.exists() or run.input_records.exists())


def test_whatif_reports_the_difference_to_the_twin_and_leaves_it_unchanged(lv_grid):
    buses = list(models.Bus.objects.filter(grid=lv_grid, loads__isnull=False).values_list("iri", flat=True)[:10])
    chargers = {"changes": [{"action": "add", "element": "load", "buses": buses, "p_mw": 0.011}]}
    loads_before = models.Load.objects.filter(grid=lv_grid).count()
    evening = NOON_IN_JUNE.replace(hour=19)
    run = execute(services.loadflow_run_create(grid=lv_grid, kind="whatif", at=evening, parameters={"scenario": chargers}))
    assert run.status == Run.Status.SUCCEEDED, run.error
    difference = run.summary["difference"]
    assert difference["vm_min_pu"] < difference["base_vm_min_pu"]
    assert difference["max_abs_dvm_pu"] > 1e-4
    assert run.input_records.filter(asset_iri__contains="#whatif-").count() == len(buses)
    assert models.Load.objects.filter(grid=lv_grid).count() == loads_before


def test_schedule_queues_a_snapshot_per_grid(lv_grid):
    runs = services.loadflow_schedule_snapshots(at=NOON_IN_JUNE)
    assert [(r.grid_id, r.trigger, r.status) for r in runs] == [(lv_grid.pk, "schedule", "queued")]


def violated(net, limits=(0.9, 1.1)) -> bool:
    """pandapower's own verdict: does the net break the band or a 100 % loading (or not converge at all)?"""
    try:
        pp.runpp(net, calculate_voltage_angles=True, lightsim2grid=False, init="dc", tolerance_mva=1e-8)
    except pp.LoadflowNotConverged:
        return True
    vm = net.res_bus.vm_pu.dropna()
    return bool((vm < limits[0]).any() or (vm > limits[1]).any() or (net.res_line.loading_percent > 100).any()
                or (net.res_trafo.loading_percent > 100).any())


def net_at(run: Run, at: datetime):
    """The twin's pandapower net with the run's injections at `at`, as a plain pandapower net."""
    model, layout = services.run_model(run)
    inputs = build_inputs(run.grid, model.injections, [at], STEP)
    net = copy.deepcopy(model.net)
    for j, (element, index) in enumerate(zip(model.injections.element, model.injections.net_index, strict=True)):
        net[element].at[index, "p_mw"] = inputs.p_mw[0, j]
        net[element].at[index, "q_mvar"] = inputs.q_mvar[0, j]
        net[element].at[index, "scaling"] = 1.0
    return net, layout


def test_hosting_capacity_is_the_edge_of_a_violation_in_pandapower(lv_grid, operator):
    start = NOON_IN_JUNE.replace(hour=0)
    body = {"grid": lv_grid.pk, "kind": "hosting_capacity", "start": start.isoformat(), "end": (start + timedelta(days=1)).isoformat(),
            "parameters": {"tolerance_kw": 0.5}}
    answer = operator.post("/api/v1/loadflow/runs", body, format="json")
    assert answer.status_code == 202, answer.json()
    run = execute(Run.objects.get(pk=answer.json()["id"]))
    assert run.status == Run.Status.SUCCEEDED, run.error
    rows = operator.get(f"/api/v1/loadflow/runs/{run.pk}/hosting-capacity?limit=500").json()
    # every bus but the slack bus and the one a closed switch fuses with it
    assert rows["count"] == run.summary["buses"] == models.Bus.objects.filter(grid=lv_grid).count() - 2
    assert all(0 < r["pv_kw"] < 10_000 and 0 < r["load_kw"] < 10_000 for r in rows["results"])
    assert {r["pv_limited_by"] for r in rows["results"]} <= {"vm_pu", "loading_percent", "not_converged"}
    assert operator.get(f"/api/v1/loadflow/runs/{run.pk}/plots/grid.png").json()["reason"] == "invalid_picture"
    # the weakest bus for PV and for load: pandapower itself finds no violation at the capacity, one just above it
    # (each bus at its own worst step; the summary names the weakest bus's)
    for kind, element in (("pv", "sgen"), ("load", "load")):
        weakest = min(rows["results"], key=lambda r: r[f"{kind}_kw"])
        assert weakest[f"{kind}_worst_at"] == run.summary[f"{kind}_worst_at"].replace("+00:00", "Z")
        net, layout = net_at(run, datetime.fromisoformat(weakest[f"{kind}_worst_at"]))
        bus = net.bus.index[layout["bus"].index(weakest["bus__iri"])]
        for kw, expected in ((weakest[f"{kind}_kw"], False), (weakest[f"{kind}_kw"] + 0.5, True)):
            trial = copy.deepcopy(net)
            getattr(pp, f"create_{element}")(trial, bus, p_mw=kw / 1000)
            assert violated(trial) is expected, (kind, kw)
    # a feeder restricts the buses; an unknown feeder is a 422
    feeder = models.Bus.objects.filter(grid=lv_grid, feeder__isnull=False).values_list("feeder__iri", flat=True).first()
    if feeder:
        run = execute(services.loadflow_run_create(grid=lv_grid, kind="hosting_capacity", start=start, end=start + STEP * 4,
                                                   parameters={"feeder": feeder, "tolerance_kw": 5}))
        assert run.status == Run.Status.SUCCEEDED, run.error
        assert run.hosting_results.exclude(bus__feeder__iri=feeder).count() == 0
    body["parameters"] = {"feeder": "https://gridtwin.example/id/nothing"}
    assert operator.post("/api/v1/loadflow/runs", body, format="json").json()["reason"] == "invalid_feeder"


def test_admin_shows_a_runs_pictures_and_links_its_results(lv_grid):
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(get_user_model().objects.create_superuser("lf-steward", password="pw-steward-1"))
    run = execute(services.loadflow_run_create(grid=lv_grid, at=NOON_IN_JUNE, parameters={"vm_max_pu": 1.0}))
    page = client.get(reverse("admin:twin_loadflowrun_change", args=[run.pk]))
    assert page.status_code == 200
    src = reverse("admin:twin_loadflowrun_plot", args=[run.pk, "voltage-profile"])
    assert f'<img src="{src}"' in page.content.decode()
    png = client.get(src)
    assert png.status_code == 200 and png["Content-Type"] == "image/png" and png.content.startswith(b"\x89PNG")
    assert client.get(reverse("admin:twin_loadflowrun_plot", args=[run.pk, "nothing"])).status_code == 400
    violations = client.get(reverse("admin:twin_violation_changelist") + f"?run__id__exact={run.pk}")
    assert violations.status_code == 200 and run.violations.first().asset_iri in violations.content.decode()
    assert client.get(reverse("admin:twin_loadflowrun_changelist")).status_code == 200
    assert Client().get(src).status_code == 302  # anonymous: to the login, no picture


def test_hosting_candidate_steps_cover_each_buses_own_worst_step():
    from twin.loadflow.hosting import candidate_steps

    # 6 steps × 3 buses: the grid back-feeds most at step 1, but bus 2 sees its highest voltage at step 4
    vm_pu = np.array([[1.00, 1.01, 1.02], [1.01, 1.04, 1.03], [1.00, 1.00, 1.00], [1.0, 1.0, 1.0], [1.0, 1.02, 1.05], [1.0, 1.0, 1.0]])
    p_ext_grid_mw = np.array([0.2, -0.5, 0.3, 0.9, -0.1, 0.4])
    pv = candidate_steps(vm_pu, p_ext_grid_mw, np.array([1, 2]), sign=-1.0, extreme_steps=1)
    assert pv.tolist() == [1, 4]
    load = candidate_steps(vm_pu, p_ext_grid_mw, np.array([1, 2]), sign=1.0, extreme_steps=1)
    assert load.tolist() == [2, 3]  # the grid draws most at step 3; both buses see their lowest voltage at step 2
    assert len(candidate_steps(vm_pu, p_ext_grid_mw, np.array([1, 2]), sign=-1.0, extreme_steps=1, most=1)) == 1


def test_newton_raphson_where_the_fixed_point_stops_gives_the_same_voltages(lv_grid, monkeypatch):
    from twin.loadflow import solver

    run = services.loadflow_run_create(grid=lv_grid, kind="timeseries", start=NOON_IN_JUNE, end=NOON_IN_JUNE + 8 * STEP)
    model, _ = services.run_model(run)
    sbus = -solver.bus_loads(model, services._inputs_for(run, model, [NOON_IN_JUNE + k * STEP for k in range(8)])) / model.base_mva
    batch, converged, rounds = solver.solve_rows(model, sbus, model.v0, solver.MAX_ITERATION)
    assert converged.all() and 0 < rounds < solver.FIXED_POINT_MAX_ROUNDS
    monkeypatch.setattr(solver, "FIXED_POINT_MAX_ROUNDS", 1)  # every row left open: all by Newton–Raphson
    newton, converged, _ = solver.solve_rows(model, sbus, model.v0, solver.MAX_ITERATION)
    assert converged.all()
    assert np.abs(newton - batch).max() < 1e-7
    # a load far beyond what the grid carries converges in neither and is reported, not solved
    sbus[3] *= 1e4
    _, converged, _ = solver.solve_rows(model, sbus, model.v0, solver.MAX_ITERATION)
    assert converged.tolist() == [True] * 3 + [False] + [True] * 4
