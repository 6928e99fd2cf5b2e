"""Elements beyond LV/MV feeders through every layer: pandapower → RDF (shapes) → twin → pandapower, and the load flow.

Shunt compensators (linear and non-linear), voltage-controlling synchronous machines with reactive limits, storage of
unknown energy rating, three-winding transformers, motors, network equivalents (impedance, ward, xward) and series
compensators: the round trip gives pandapower's own parameters back (to rounding), the load flow agrees with pandapower's
on the original net, the shapes refuse broken instances naming the node, and the twin's own solver (snapshot, time
series, what-if, hosting capacity) treats generators as PV buses within their reactive limits. Issue 11 adds tabular
ratio tap changers, asymmetrical, symmetrical and tabular phase shifters and static VAR compensators, through pandapower,
RDF, the database, the solver and CGMES (both ways).
"""

import copy
from datetime import UTC, datetime, timedelta

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pandas as pd
import pytest
from rdflib import Literal, URIRef
from rdflib.compare import isomorphic
from rdflib.namespace import RDF, XSD

from ontology.converters.pandapower_net import net_to_graph
from ontology.errors import ConversionError
from ontology.namespaces import CIM
from ontology.validation import validate_graph
from tests.test_loadflow import execute
from twin import models
from twin.loadflow import selectors, services, solver
from twin.loadflow.inputs import Injections, StepInputs
from twin.pandapower_adapter import rows_to_net
from twin.rdf_codec import graph_to_rows
from twin.selectors import grid_graph
from twin.services import ShapeViolation, _check, grid_import_graph

GRID = "https://gridtwin.example/id/test/elements"
SOLVER = {"lightsim2grid": False, "algorithm": "nr", "init": "dc", "calculate_voltage_angles": True, "tolerance_mva": 1e-9,
          "max_iteration": 30}
AT = datetime(2026, 6, 1, 12, tzinfo=UTC)
Run = models.LoadFlowRun


@pytest.fixture
def elements_net():
    """pandapower's `example_multivoltage` (trafo3w with a tap, impedance, two xwards, a shunt, a generator, switches) plus a
    non-linear shunt, a ward, a motor, a battery of unknown energy, reactive limits and a series capacitor."""
    net = pn.example_multivoltage()
    net.gen.loc[0, ["min_q_mvar", "max_q_mvar"]] = [-40.0, 60.0]
    net.trafo3w.loc[0, "tap_pos"] = 2
    pp.create_shunt(net, 38, q_mvar=-0.3, step=2, max_step=3, step_dependency_table=True, id_characteristic_table=0, name="bank")
    net["shunt_characteristic_table"] = pd.DataFrame({"id_characteristic": [0, 0, 0], "step": [1, 2, 3],
                                                      "q_mvar": [-0.3, -0.65, -1.05], "p_mw": [0.001, 0.0021, 0.0033]})
    pp.create_ward(net, 36, ps_mw=1.5, qs_mvar=0.4, pz_mw=0.2, qz_mvar=-0.1, name="neighbour")
    pp.create_motor(net, 40, pn_mech_mw=0.4, cos_phi=0.9, efficiency_percent=95.0, loading_percent=80.0, cos_phi_n=0.88,
                    efficiency_n_percent=95.0, lrc_pu=6.0, rx=0.4, vn_kv=20.0, scaling=1.1, name="pump")
    pp.create_storage(net, 41, p_mw=0.2, max_e_mwh=np.nan, name="battery of unknown size")
    line = net.line.index[net.line.from_bus.isin(net.bus.index[net.bus.vn_kv == 110])][0]
    ends = net.line.loc[line, ["from_bus", "to_bus"]].tolist()
    pp.create_line_from_parameters(net, *ends, length_km=1.0, r_ohm_per_km=0.0, x_ohm_per_km=-2.0, c_nf_per_km=0.0, max_i_ka=1.0,
                                   name="series capacitor")
    return net


def solved(net, **options):
    net = copy.deepcopy(net)
    pp.runpp(net, **{**SOLVER, **options})
    return net


def twin_of(net, grid_iri: str = GRID):
    """The twin's net of `net` through RDF without a database: (net, NetIndex)."""
    return rows_to_net(graph_to_rows(net_to_graph(net, grid_iri=grid_iri, grid_name="elements")))


def bus_differences(original, twin, index, grid_iri: str = GRID) -> tuple[float, float]:
    buses = [index["bus"][f"{grid_iri}/bus/{i}"] for i in original.bus.index]
    return (float(np.nanmax(np.abs(original.res_bus.vm_pu.to_numpy() - twin.res_bus.vm_pu.loc[buses].to_numpy()))),
            float(np.nanmax(np.abs(original.res_bus.va_degree.to_numpy() - twin.res_bus.va_degree.loc[buses].to_numpy()))))


def rows_of(twin, index, table: str, source_index, columns, grid_iri: str = GRID) -> pd.DataFrame:
    return twin[table].loc[[index[table][f"{grid_iri}/{table}/{i}"] for i in source_index], columns]


def assert_same(original: pd.DataFrame, twin: pd.DataFrame) -> None:
    np.testing.assert_allclose(twin.to_numpy(float), original.to_numpy(float), rtol=1e-12, atol=1e-12)


# --- the form: conversion, shapes, round trip --------------------------------------------------------------------


def test_the_rdf_form_conforms_to_the_shapes_with_cim_classes(elements_net):
    graph = net_to_graph(elements_net, grid_iri=GRID, grid_name="elements")

    assert validate_graph(graph).conforms
    typed = {str(o).removeprefix(str(CIM)) for o in graph.objects(None, RDF.type)}
    assert {"LinearShuntCompensator", "NonlinearShuntCompensator", "NonlinearShuntCompensatorPoint", "SynchronousMachine",
            "AsynchronousMachine", "EquivalentBranch", "EquivalentInjection", "EquivalentShunt", "SeriesCompensator"} <= typed
    three_ends = {e for e in graph.subjects(CIM["PowerTransformerEnd.PowerTransformer"], URIRef(f"{GRID}/trafo3w/0"))}
    assert len(three_ends) == 3
    machine = URIRef(f"{GRID}/gen/0")
    assert graph.value(machine, CIM["RotatingMachine.p"]) == Literal(-100.0, datatype=XSD.double)  # load sign convention
    control = graph.value(machine, CIM["RegulatingCondEq.RegulatingControl"])
    assert graph.value(control, CIM["RegulatingControl.targetValue"]).toPython() == pytest.approx(1.03 * 110)


def test_each_element_comes_back_with_pandapower_parameters(elements_net):
    net = elements_net
    twin, index = twin_of(net)

    assert_same(net.shunt.loc[[0], ["q_mvar", "p_mw", "vn_kv", "step", "max_step"]],
                rows_of(twin, index, "shunt", [0], ["q_mvar", "p_mw", "vn_kv", "step", "max_step"]))
    table = twin.shunt_characteristic_table
    bank = twin.shunt.at[index["shunt"][f"{GRID}/shunt/1"], "id_characteristic_table"]
    assert_same(net.shunt_characteristic_table[["step", "q_mvar", "p_mw"]],
                table[table.id_characteristic == bank][["step", "q_mvar", "p_mw"]])
    assert_same(net.gen[["p_mw", "vm_pu", "min_q_mvar", "max_q_mvar"]], rows_of(twin, index, "gen", [0], ["p_mw", "vm_pu", "min_q_mvar",
                                                                                                           "max_q_mvar"]))
    columns = [f"{q}_{s}_{u}" for s in ("hv", "mv", "lv") for q, u in (("sn", "mva"), ("vn", "kv"), ("vk", "percent"), ("vkr", "percent"))]
    columns += ["pfe_kw", "i0_percent", "shift_mv_degree", "shift_lv_degree", "tap_pos", "tap_neutral", "tap_min", "tap_max",
                "tap_step_percent"]
    assert_same(net.trafo3w[columns], rows_of(twin, index, "trafo3w", [0], columns))
    assert twin.trafo3w.tap_side.tolist() == net.trafo3w.tap_side.tolist()
    per_unit = ["rft_pu", "xft_pu", "rtf_pu", "xtf_pu"]
    assert_same(net.impedance[per_unit].div(net.impedance.sn_mva, axis=0),
                rows_of(twin, index, "impedance", [0], per_unit).div(twin.impedance.sn_mva.iloc[0]))
    assert np.isnan(rows_of(twin, index, "storage", [0], ["max_e_mwh"]).iloc[0, 0])


def test_each_element_solves_as_in_pandapower(elements_net):
    twin, index = twin_of(elements_net)

    dvm, dva = bus_differences(solved(elements_net), solved(twin), index)

    assert dvm < 1e-9 and dva < 1e-7


@pytest.mark.parametrize(("change", "node", "words"), [
    (lambda g: g.set((URIRef(f"{GRID}/gen/0"), CIM["SynchronousMachine.minQ"], Literal(99.0))), f"{GRID}/gen/0", "wrong way round"),
    (lambda g: g.set((URIRef(f"{GRID}/shunt/0"), CIM["ShuntCompensator.sections"], Literal(7.0))), f"{GRID}/shunt/0", "exceed"),
    (lambda g: g.remove((URIRef(f"{GRID}/shunt/1#Point2"), None, None)), f"{GRID}/shunt/1", "point per section"),
    (lambda g: g.set((URIRef(f"{GRID}/motor/0"), CIM["RotatingMachine.p"], Literal(-0.2))), f"{GRID}/motor/0", "consumes"),
    (lambda g: g.set((URIRef(f"{GRID}/gen/0#RegulatingControl"), CIM["RegulatingControl.Terminal"], URIRef(f"{GRID}/nowhere"))),
     f"{GRID}/gen/0", "not in the model"),
    (lambda g: g.remove((URIRef(f"{GRID}/trafo3w/0#T3"), None, None)), f"{GRID}/trafo3w/0#End3", "exactly one cim:Terminal"),
    (lambda g: g.remove((URIRef(f"{GRID}/trafo3w/0#End3"), None, None)), f"{GRID}/trafo3w/0", "belongs to none of its ends"),
    (lambda g: g.remove((URIRef(f"{GRID}/xward/0/source"), CIM["EquivalentInjection.regulationTarget"], None)),
     f"{GRID}/xward/0/source", "regulationTarget"),
])
def test_a_broken_instance_is_refused_naming_its_node(elements_net, change, node, words):
    graph = net_to_graph(elements_net, grid_iri=GRID, grid_name="elements")
    change(graph)

    with pytest.raises(ShapeViolation) as raised:  # from the shapes, or the codec's refusal through the same report
        _check(graph)
    violations = raised.value.report.violations
    assert any(v.focus_node == node and words in v.message for v in violations), [(v.focus_node, v.message) for v in violations]


def _q_curve(net):
    net.gen["reactive_capability_curve"] = True


def _star_point_tap(net):
    net.trafo3w.loc[0, "tap_at_star_point"] = True


def _step_beyond_maximum(net):
    net.shunt.loc[0, "step"] = 5


def _impedance_with_shunt(net):
    net.impedance.loc[0, "bf_pu"] = 0.01


def _missing_step_table(net):
    net.shunt_characteristic_table = net.shunt_characteristic_table.iloc[:2]


@pytest.mark.parametrize(("change", "node"), [
    (_q_curve, f"{GRID}/gen/0"), (_star_point_tap, f"{GRID}/trafo3w/0"), (_step_beyond_maximum, f"{GRID}/shunt/0"),
    (_impedance_with_shunt, f"{GRID}/impedance/0"), (_missing_step_table, f"{GRID}/shunt/1"),
])
def test_what_the_form_still_cannot_hold_is_refused_naming_the_element(elements_net, change, node):
    change(elements_net)

    with pytest.raises(ConversionError) as raised:
        net_to_graph(elements_net, grid_iri=GRID, grid_name="elements")
    assert raised.value.node == node


@pytest.mark.parametrize("tap_side", ["hv", "lv"])
def test_phase_shifts_off_the_clock_and_ideal_phase_shifters_arrive_as_linear_phase_tap_changers(tap_side):
    net = pn.example_multivoltage()
    net.trafo.loc[0, "shift_degree"] = 150 + 4.5  # a clock number and a fixed shift (as MATPOWER's phase shifters)
    net.trafo.loc[1, ["tap_side", "tap_changer_type", "tap_step_degree", "tap_step_percent", "tap_pos", "tap_neutral", "tap_min",
                      "tap_max"]] = [tap_side, "Ideal", 1.5, 0.0, 3, 0, -9, 9]
    graph = net_to_graph(net, grid_iri=GRID, grid_name="shifters")
    assert validate_graph(graph).conforms
    assert len(set(graph.subjects(RDF.type, CIM.PhaseTapChangerLinear))) == 2

    twin, index = rows_to_net(graph_to_rows(graph))

    shifted = solved(net)
    direction = 1 if tap_side == "hv" else -1
    expected_shift = [154.5, net.trafo.shift_degree[1] + direction * 3 * 1.5]
    np.testing.assert_allclose(rows_of(twin, index, "trafo", [0, 1], ["shift_degree"]).shift_degree, expected_shift, atol=1e-12)
    dvm, dva = bus_differences(shifted, solved(twin), index)
    assert dvm < 1e-9 and dva < 1e-7
    assert np.abs(shifted.res_bus.va_degree - solved(pn.example_multivoltage()).res_bus.va_degree).max() > 1  # the shift matters


# --- the twin's own solver: PV buses with reactive limits ---------------------------------------------------------


def solver_voltages(net, grid_iri: str = GRID) -> tuple[np.ndarray, object]:
    """vm_pu per original bus from the twin's solver (build_model + solve, the path of every run kind)."""
    twin, index = twin_of(net, grid_iri)
    iri_of = {table: {i: iri for iri, i in indices.items()} for table, indices in index.elements.items()}
    injections = Injections.of_net(twin, iri_of)
    model = solver.build_model(twin, injections)
    inputs = StepInputs([AT], injections.p_mw[None, :].copy(), injections.q_mvar[None, :].copy(), np.zeros((1, len(injections)), np.uint8))
    results = solver.solve(model, inputs)
    positions = [twin.bus.index.get_loc(index["bus"][f"{grid_iri}/bus/{i}"]) for i in net.bus.index]
    return results.vm_pu[0, positions], model


def test_the_solver_holds_generators_within_their_reactive_limits_as_pandapower():
    net = pn.case118()  # six generators exceed their limits when the limits are ignored
    unlimited = solved(net)
    assert ((unlimited.res_gen.q_mvar > net.gen.max_q_mvar + 1e-6) | (unlimited.res_gen.q_mvar < net.gen.min_q_mvar - 1e-6)).any()

    vm_pu, model = solver_voltages(net)

    assert len(model.pv) == len(net.gen)
    assert np.abs(vm_pu - solved(net, enforce_q_lims=True).res_bus.vm_pu.to_numpy()).max() < 1e-6
    assert np.abs(vm_pu - unlimited.res_bus.vm_pu.to_numpy()).max() > 1e-3  # the limits bind


def test_the_solver_agrees_on_every_element(elements_net):
    vm_pu, model = solver_voltages(elements_net)

    assert len(model.pv) == 3  # the generator and the two xwards' internal sources
    assert np.abs(vm_pu - solved(elements_net, enforce_q_lims=True).res_bus.vm_pu.to_numpy()).max() < 1e-6


# --- through the database and the run services ---------------------------------------------------------------------


def import_net(net, participant, name: str = "elements") -> models.Grid:
    graph = net_to_graph(net, grid_iri=f"https://gridtwin.example/id/test/{name}", grid_name=name, owner_iri=participant.iri)
    return grid_import_graph(graph=graph, participant=participant, source=f"test:{name}").grid


@pytest.mark.django_db
def test_stored_elements_export_the_graph_they_came_as(utility, elements_net):
    iri = "https://gridtwin.example/id/test/elements"
    graph = net_to_graph(elements_net, grid_iri=iri, grid_name="elements", owner_iri=utility.iri)
    grid = grid_import_graph(graph=graph, participant=utility, source="test:elements").grid

    assert models.ThreeWindingTransformer.objects.filter(grid=grid).count() == 1
    assert models.ShuntCompensator.objects.filter(grid=grid, kind="nonlinear").get().points[1]["section"] == 2
    assert models.Storage.objects.get(grid=grid).max_e_mwh is None
    assert isomorphic(grid_graph(grid), graph)
    again = grid_import_graph(graph=graph, participant=utility, source="test:elements")
    assert not again.changed


@pytest.mark.django_db
def test_every_run_kind_solves_a_grid_with_pv_buses(utility):
    net = pn.case9()
    grid = import_net(net, utility, "case9")
    expected = solved(net, enforce_q_lims=True).res_bus.vm_pu

    snapshot = execute(services.loadflow_run_create(grid=grid, at=AT))
    assert snapshot.status == Run.Status.SUCCEEDED, snapshot.error
    vm = {row["bus__iri"]: row["vm_pu"] for row in selectors.bus_results(snapshot)}
    assert max(abs(vm[f"{grid.iri}/bus/{i}"] - expected[i]) for i in net.bus.index) < 1e-6

    # a time series: the chunk solver's steps at once (here the generator's p varies, as readings or profiles would vary it)
    model, layout = services.run_model(snapshot)
    factors = np.array([0.6, 0.8, 1.0, 1.2])
    p_mw = np.tile(model.injections.p_mw, (len(factors), 1))
    p_mw[:, model.injections.element == "gen"] *= factors[:, None]
    inputs = StepInputs([AT + k * timedelta(minutes=15) for k in range(len(factors))], p_mw, np.tile(model.injections.q_mvar, (4, 1)),
                        np.zeros(p_mw.shape, np.uint8))
    results = solver.solve(model, inputs)
    for k, factor in enumerate(factors):
        step = copy.deepcopy(net)
        step.gen["p_mw"] *= factor
        expected_step = solved(step, enforce_q_lims=True).res_bus.vm_pu
        positions = [layout["bus"].index(f"{grid.iri}/bus/{i}") for i in net.bus.index]
        assert np.abs(results.vm_pu[k, positions] - expected_step.to_numpy()).max() < 1e-6

    less = {"changes": [{"action": "set", "iri": f"{grid.iri}/gen/0", "p_mw": 60.0}]}
    whatif = execute(services.loadflow_run_create(grid=grid, kind="whatif", at=AT, parameters={"scenario": less}))
    assert whatif.status == Run.Status.SUCCEEDED, whatif.error
    changed = copy.deepcopy(net)
    changed.gen.loc[0, "p_mw"] = 60.0
    vm = {row["bus__iri"]: row["vm_pu"] for row in selectors.bus_results(whatif)}
    assert max(abs(vm[f"{grid.iri}/bus/{i}"] - solved(changed, enforce_q_lims=True).res_bus.vm_pu[i]) for i in net.bus.index) < 1e-6

    hosting = execute(services.loadflow_run_create(grid=grid, kind="hosting_capacity", start=AT, end=AT + timedelta(minutes=30),
                                                   parameters={"tolerance_kw": 500, "vm_max_pu": 1.2, "vm_min_pu": 0.8}))
    assert hosting.status == Run.Status.SUCCEEDED, hosting.error
    assert hosting.hosting_results.count() > 0


@pytest.mark.django_db
def test_a_grid_whose_slack_is_a_machine_solves_as_in_pandapower(utility):
    """No external grid: the reference machine (pandapower `gen.slack`, cim:SynchronousMachine.referencePriority) holds the
    slack bus; a grid with neither is refused before a run is stored."""
    net = pn.case9()
    slack_bus, vm_pu = int(net.ext_grid.bus.iloc[0]), float(net.ext_grid.vm_pu.iloc[0])
    net.ext_grid.drop(net.ext_grid.index, inplace=True)
    pp.create_gen(net, bus=slack_bus, p_mw=0.0, vm_pu=vm_pu, slack=True, min_q_mvar=-300.0, max_q_mvar=300.0, name="slack machine")
    grid = import_net(net, utility, "case9-machine-slack")
    assert not models.ExternalGrid.objects.filter(grid=grid).exists()
    expected = solved(net, enforce_q_lims=True).res_bus.vm_pu

    run = execute(services.loadflow_run_create(grid=grid, at=AT))
    assert run.status == Run.Status.SUCCEEDED, run.error
    vm = {row["bus__iri"]: row["vm_pu"] for row in selectors.bus_results(run)}
    assert max(abs(vm[f"{grid.iri}/bus/{i}"] - expected[i]) for i in net.bus.index) < 1e-6
    assert run.summary["p_ext_grid_max_mw"] == pytest.approx(solved(net, enforce_q_lims=True).res_gen.p_mw.iloc[-1], abs=1e-4)

    models.SynchronousMachine.objects.filter(grid=grid).update(reference_priority=0)
    with pytest.raises(services.LoadFlowRequestError) as refused:
        services.loadflow_run_create(grid=grid, at=AT)
    assert refused.value.reason == "no_slack"


# --- point 4: pandapower's own example networks --------------------------------------------------------------------


REPRESENTATIVE = {
    "case9": pn.case9, "case118": pn.case118, "iceland": pn.iceland, "example_multivoltage": pn.example_multivoltage,
    "cigre_mv_all_der": lambda: pn.create_cigre_network_mv(with_der="all"), "mv_oberrhein": pn.mv_oberrhein,
    "lv_schutterwald": pn.lv_schutterwald,
}


@pytest.mark.parametrize("name", sorted(REPRESENTATIVE))
def test_pandapower_example_networks_import_and_agree(name):
    net = REPRESENTATIVE[name]()
    grid_iri = f"https://gridtwin.example/id/test/{name}"
    graph = net_to_graph(net, grid_iri=grid_iri, grid_name=name)
    assert validate_graph(graph).conforms

    twin, index = rows_to_net(graph_to_rows(graph))

    dvm, _ = bus_differences(solved(net), solved(twin), index, grid_iri)
    assert dvm < 1e-6


# --- issue 11: tap tables, phase shifters beyond linear, static VAR compensators -----------------------------------


def _ratio_table(net, trafo: int = 0, angles=(0.0, 0.0, 0.0, 0.0, 0.0), changer_type: str = "Ratio"):
    """A tabular tap changer on `trafo` (hv side, steps −2 … 2, standing at 1): ratio, vk and vkr per step."""
    vk, vkr = net.trafo.vk_percent[trafo], net.trafo.vkr_percent[trafo]
    net.trafo.loc[trafo, ["tap_side", "tap_min", "tap_max", "tap_neutral", "tap_pos", "tap_step_percent", "tap_changer_type"]] = [
        "hv", -2, 2, 0, 1, 2.5, changer_type]
    net.trafo.loc[trafo, ["tap_dependency_table", "id_characteristic_table"]] = [True, 0]
    net["trafo_characteristic_table"] = pd.DataFrame({
        "id_characteristic": 0, "step": range(-2, 3), "voltage_ratio": [0.95, 0.975, 1.0, 1.03, 1.06], "angle_deg": list(angles),
        "vk_percent": [vk * 0.97, vk * 0.99, vk, vk * 1.02, vk * 1.05], "vkr_percent": [vkr * 0.98, vkr, vkr, vkr * 1.01, vkr * 1.04]})
    return net


def _phase_shifter(net, trafo: int, changer_type: str, step_percent: float, step_degree: float, side: str = "hv"):
    net.trafo.loc[trafo, ["tap_side", "tap_changer_type", "tap_step_degree", "tap_step_percent", "tap_pos", "tap_neutral", "tap_min",
                          "tap_max"]] = [side, changer_type, step_degree, step_percent, 3, 0, -9, 9]
    return net


def _svc(net, bus: int = 38):
    """A compensator that holds its 10 kV bus at 1.01 pu well inside its ratings (about 2 Mvar of its 3.4 capacitive)."""
    pp.create_svc(net, bus, x_l_ohm=20.0, x_cvar_ohm=-30.0, set_vm_pu=1.01, thyristor_firing_angle_degree=140.0, name="svc")
    return net


NEW_ELEMENTS = {
    "ratio table": (lambda: _ratio_table(pn.example_multivoltage()), "RatioTapChangerTablePoint"),
    "phase table": (lambda: _ratio_table(pn.example_multivoltage(), angles=(-6.0, -3.0, 0.0, 3.0, 6.0), changer_type="Tabular"),
                    "PhaseTapChangerTablePoint"),
    "asymmetrical": (lambda: _phase_shifter(pn.example_multivoltage(), 1, "Ratio", 1.5, 60.0), "PhaseTapChangerAsymmetrical"),
    "quadrature booster (pandapower Symmetrical)": (lambda: _phase_shifter(pn.example_multivoltage(), 1, "Symmetrical", 1.5, 90.0, "lv"),
                                                    "PhaseTapChangerAsymmetrical"),
    "ideal by percent": (lambda: _phase_shifter(pn.example_multivoltage(), 1, "Ideal", 1.5, np.nan, "lv"), "PhaseTapChangerTabular"),
    "static var compensator": (lambda: _svc(pn.example_multivoltage()), "StaticVarCompensator"),
}


@pytest.mark.parametrize("name", sorted(NEW_ELEMENTS))
def test_each_new_element_conforms_and_solves_as_in_pandapower(name):
    build, cim_class = NEW_ELEMENTS[name]
    net = build()
    graph = net_to_graph(net, grid_iri=GRID, grid_name="elements")
    assert validate_graph(graph).conforms
    assert set(graph.subjects(RDF.type, CIM[cim_class]))

    twin, index = rows_to_net(graph_to_rows(graph))

    reference = solved(net)
    dvm, dva = bus_differences(reference, solved(twin), index)
    assert dvm < 1e-6 and dva < 1e-5
    vm_pu, _ = solver_voltages(net)  # the twin's own solver, the path of every run kind
    assert np.abs(vm_pu - reference.res_bus.vm_pu.to_numpy()).max() < 1e-6
    plain = solved(pn.example_multivoltage()).res_bus  # the element matters: without it the grid solves otherwise
    bus = reference.res_bus
    changed = np.abs(bus.vm_pu - plain.vm_pu).max() > 1e-4 or np.abs(bus.va_degree - plain.va_degree).max() > 0.1
    assert changed


def test_a_symmetrical_phase_shifter_shifts_as_iec_61970_301_says():
    """pandapower has no CIM symmetrical changer (its "Ideal" by percent shifts 2·asin(n·du/2)): the twin folds CIM's
    2·atan(n·du/2) at its step into the shift; checked against a plain pandapower shift of that angle."""
    graph = net_to_graph(NEW_ELEMENTS["asymmetrical"][0](), grid_iri=GRID, grid_name="elements")
    changer = URIRef(f"{GRID}/trafo/1#PhaseTapChanger")
    graph.remove((changer, RDF.type, CIM.PhaseTapChangerAsymmetrical))
    graph.remove((changer, CIM["PhaseTapChangerAsymmetrical.windingConnectionAngle"], None))
    graph.add((changer, RDF.type, CIM.PhaseTapChangerSymmetrical))
    assert validate_graph(graph).conforms

    twin, index = rows_to_net(graph_to_rows(graph))

    expected = pn.example_multivoltage()
    expected.trafo.loc[1, "shift_degree"] += np.degrees(2 * np.arctan(3 * 1.5 / 200))
    dvm, dva = bus_differences(solved(expected), solved(twin), index)
    assert dvm < 1e-9 and dva < 1e-7


def _graph_of(name: str):
    return net_to_graph(NEW_ELEMENTS[name][0](), grid_iri=GRID, grid_name="elements")


@pytest.mark.parametrize(("name", "change", "node", "words"), [
    ("ratio table", lambda g: (g.remove((URIRef(f"{GRID}/trafo/0#RatioPoint1"), None, None))), f"{GRID}/trafo/0#RatioTapChanger",
     "no step of its table"),
    ("ratio table", lambda g: g.set((URIRef(f"{GRID}/trafo/0#RatioPoint2"), CIM["TapChangerTablePoint.ratio"], Literal(-0.5))),
     f"{GRID}/trafo/0#RatioPoint2", "voltage ratio greater than 0"),
    ("phase table", lambda g: g.set((URIRef(f"{GRID}/trafo/0#PhasePoint2"), CIM["PhaseTapChangerTablePoint.angle"], Literal(200.0))),
     f"{GRID}/trafo/0#PhasePoint2", "-180 to 180"),
    ("asymmetrical", lambda g: g.set((URIRef(f"{GRID}/trafo/1#PhaseTapChanger"), CIM["PhaseTapChangerAsymmetrical.windingConnectionAngle"],
                                      Literal(190.0))), f"{GRID}/trafo/1#PhaseTapChanger", "winding connection angle"),
    ("static var compensator", lambda g: g.set((URIRef(f"{GRID}/svc/0"), CIM["StaticVarCompensator.inductiveRating"], Literal(5.0))),
     f"{GRID}/svc/0", "less than 0"),
    ("static var compensator", lambda g: g.add((URIRef(f"{GRID}/svc/0"), CIM["StaticVarCompensator.slope"], Literal(0.01))),
     f"{GRID}/svc/0", "droop"),
    ("static var compensator", lambda g: g.remove((URIRef(f"{GRID}/svc/0"), CIM["StaticVarCompensator.voltageSetPoint"], None)),
     f"{GRID}/svc/0", "voltageSetPoint"),
])
def test_a_broken_new_element_is_refused_naming_its_node(name, change, node, words):
    graph = _graph_of(name)
    change(graph)

    with pytest.raises(ShapeViolation) as raised:
        _check(graph)
    violations = raised.value.report.violations
    assert any(v.focus_node == node and words in v.message for v in violations), [(v.focus_node, v.message) for v in violations]


def _step_off_the_table(net):
    net.trafo.loc[0, "tap_pos"] = -1
    net.trafo_characteristic_table = net.trafo_characteristic_table[net.trafo_characteristic_table.step != -1]


def _fixed_angle_svc(net):
    net.svc.loc[0, "controllable"] = False


@pytest.mark.parametrize(("name", "change", "node", "words"), [
    ("ratio table", _step_off_the_table, f"{GRID}/trafo/0", "no step of its trafo_characteristic_table"),
    ("static var compensator", _fixed_angle_svc, f"{GRID}/svc/0", "fixed shunt"),
])
def test_what_pandapower_holds_and_the_form_cannot_is_refused_naming_the_element(name, change, node, words):
    net = NEW_ELEMENTS[name][0]()
    change(net)

    with pytest.raises(ConversionError) as raised:
        net_to_graph(net, grid_iri=GRID, grid_name="elements")
    assert raised.value.node == node and words in str(raised.value)


def combined_net(names: tuple[str, ...]):
    """The net of NEW_ELEMENTS[names[0]] with the SVC or the second transformer of each further name put in."""
    net = NEW_ELEMENTS[names[0]][0]()
    for name in names[1:]:
        changed = NEW_ELEMENTS[name][0]()
        if name == "static var compensator":
            net.svc = changed.svc
        else:
            net.trafo.loc[1] = changed.trafo.loc[1]
    return net


@pytest.mark.django_db
@pytest.mark.parametrize("names", [("ratio table", "asymmetrical", "static var compensator"), ("phase table", "ideal by percent")])
def test_stored_new_elements_export_the_graph_they_came_as_and_solve(utility, names):
    net = combined_net(names)
    iri = "https://gridtwin.example/id/test/new-elements"
    graph = net_to_graph(net, grid_iri=iri, grid_name="elements", owner_iri=utility.iri)
    grid = grid_import_graph(graph=graph, participant=utility, source="test:new-elements").grid

    assert isomorphic(grid_graph(grid), graph)
    assert not grid_import_graph(graph=graph, participant=utility, source="test:new-elements").changed
    snapshot = execute(services.loadflow_run_create(grid=grid, at=AT))
    assert snapshot.status == Run.Status.SUCCEEDED, snapshot.error
    vm = {row["bus__iri"]: row["vm_pu"] for row in selectors.bus_results(snapshot)}
    expected = solved(net, enforce_q_lims=True).res_bus.vm_pu
    assert max(abs(vm[f"{iri}/bus/{i}"] - expected[i]) for i in net.bus.index) < 1e-6


def test_the_cgmes_reader_keeps_ratio_tables_and_static_var_compensators(tmp_path):
    from ontology.converters.cgmes import cgmes_to_graph
    from tests.test_cgmes import cgmes3_equipment, cgmes3_files, element, terminal

    table = element("RatioTapChangerTable", "RTCT") + "".join(
        element("RatioTapChangerTablePoint", f"RTCP{step}", RatioTapChangerTablePoint__RatioTapChangerTable="#RTCT",
                TapChangerTablePoint__step=step, TapChangerTablePoint__ratio=ratio, TapChangerTablePoint__r=r, TapChangerTablePoint__x=x)
        for step, ratio, r, x in [(11, 1.0, 0.0, 0.0), (12, 1.012, 0.5, 1.0), (13, 1.025, 1.0, 2.5)])
    svc = element("StaticVarCompensator", "SVC", IdentifiedObject__name="SVC 1", StaticVarCompensator__capacitiveRating=40.0,
                  StaticVarCompensator__inductiveRating=-80.0, StaticVarCompensator__slope=0.0, StaticVarCompensator__voltageSetPoint=20.2,
                  StaticVarCompensator__sVCControlMode="cim:SVCControlMode.voltage") + terminal("T_SVC", "SVC", "CN_MV2", 1)
    equipment = cgmes3_equipment(extra=table + svc).replace(
        "<cim:RatioTapChanger.stepVoltageIncrement>", '<cim:RatioTapChanger.RatioTapChangerTable rdf:resource="#_RTCT"/>'
        "<cim:RatioTapChanger.stepVoltageIncrement>")

    graph = cgmes_to_graph(cgmes3_files(tmp_path, equipment))

    report = validate_graph(graph)
    assert report.conforms, [v.as_dict() for v in report.violations]
    rows = graph_to_rows(graph).rows
    (trafo,) = rows["Transformer"]
    assert [(p["step"], p["ratio"], p["x_percent"]) for p in trafo["tap_table"]] == [(11, 1.0, 0.0), (12, 1.012, 1.0), (13, 1.025, 2.5)]
    (compensator,) = rows["StaticVarCompensator"]
    assert (compensator["capacitive_rating_ohm"], compensator["inductive_rating_ohm"], compensator["vm_target_kv"]) == (40.0, -80.0, 20.2)
    twin, index = rows_to_net(graph_to_rows(graph))
    result = solved(twin)
    assert result.res_bus.vm_pu[index["bus"][compensator["bus"]]] == pytest.approx(20.2 / 20)  # the compensator holds its bus
    plain = copy.deepcopy(twin)
    plain.trafo.loc[:, "tap_dependency_table"] = False
    assert np.abs(solved(plain).res_bus.vm_pu - result.res_bus.vm_pu).max() > 1e-4  # the table's ratio at step 13 is 1.025, not 1.03


@pytest.mark.parametrize("version", ["2.4.15", "3.0"])
@pytest.mark.parametrize("names", [("ratio table", "asymmetrical", "static var compensator"), ("phase table", "ideal by percent")])
def test_new_elements_go_through_cgmes_and_back_keeping_their_class_and_load_flow(names, version, tmp_path):
    from ontology.converters.cgmes import cgmes_to_graph
    from ontology.converters.cgmes_export import graph_to_cgmes, mrid
    from tests.test_cgmes_export import write_profiles

    net = combined_net(names)
    graph = net_to_graph(net, grid_iri=GRID, grid_name="elements")

    again = cgmes_to_graph(write_profiles(graph_to_cgmes(graph, version=version), tmp_path))

    report = validate_graph(again)
    assert report.conforms, [v.as_dict() for v in report.violations]
    classes = {o for o in graph.objects(None, RDF.type) if "TapChanger" in str(o) or "VarCompensator" in str(o)}
    assert classes <= set(again.objects(None, RDF.type))
    twin, index = rows_to_net(graph_to_rows(again))
    result, reference = solved(twin), solved(net)
    buses = [index["bus"][f"urn:uuid:{mrid(f'{GRID}/bus/{i}')}"] for i in net.bus.index]
    assert np.abs(result.res_bus.vm_pu.loc[buses].to_numpy() - reference.res_bus.vm_pu.to_numpy()).max() < 1e-6


def test_a_ratio_tap_beside_a_tabular_phase_shifter_is_pandapowers_second_tap_changer():
    """pandapower reads one characteristic per transformer on tap 1: the phase table takes it, the ratio changer (lv, step 2
    of ±5 at 1 %) moves to tap 2 — the same load flow as pandapower's own net with both."""
    net = NEW_ELEMENTS["phase table"][0]()
    graph = net_to_graph(net, grid_iri=GRID, grid_name="elements")
    changer = URIRef(f"{GRID}/trafo/0#RatioTapChanger")
    graph.add((changer, RDF.type, CIM.RatioTapChanger))
    graph.add((changer, CIM["RatioTapChanger.TransformerEnd"], URIRef(f"{GRID}/trafo/0#End2")))
    for name, value in {"lowStep": -5, "highStep": 5, "neutralStep": 0, "normalStep": 0, "step": 2.0, "stepVoltageIncrement": 1.0}.items():
        graph.add((changer, CIM[f"{'RatioTapChanger' if name == 'stepVoltageIncrement' else 'TapChanger'}.{name}"], Literal(value)))
    assert validate_graph(graph).conforms

    twin, index = rows_to_net(graph_to_rows(graph))

    expected = copy.deepcopy(net)
    expected.trafo.loc[0, ["tap2_side", "tap2_pos", "tap2_neutral", "tap2_min", "tap2_max", "tap2_step_percent", "tap2_step_degree",
                           "tap2_changer_type"]] = ["lv", 2, 0, -5, 5, 1.0, 0.0, "Ratio"]
    dvm, dva = bus_differences(solved(expected), solved(twin), index)
    assert dvm < 1e-9 and dva < 1e-7
    assert bus_differences(solved(net), solved(twin), index)[0] > 1e-3  # the ratio changer matters
