"""Elements beyond LV/MV feeders through every layer: pandapower → RDF (shapes) → twin → pandapower, and the load flow.

Shunt compensators (linear and non-linear), voltage-controlling synchronous machines with reactive limits, storage of
unknown energy rating, three-winding transformers, motors, network equivalents (impedance, ward, xward) and series
compensators: the round trip gives pandapower's own parameters back (to rounding), the load flow agrees with pandapower's
on the original net, the shapes refuse broken instances naming the node, and the twin's own solver (snapshot, time
series, what-if, hosting capacity) treats generators as PV buses within their reactive limits.
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
