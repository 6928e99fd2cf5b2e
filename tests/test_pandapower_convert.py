"""pandapower net → RDF → twin → pandapower net: the load flow on the twin must be pandapower's own.

Fast tests go net → graph → rows (`graph_to_rows`) → net without a database; the database tests
import a hand-built net and SimBench LV / MV grids through `grid_import_graph` and solve what
`grid_to_net` builds from PostgreSQL.
Originals are solved with `tap_changer_type = "Ratio"`: pandapower 3 ignores SimBench's taps
otherwise (simbench issue #69), the twin does not.
"""

import copy

import numpy as np
import pandapower as pp
import pytest

from ontology.converters.pandapower_net import net_to_document, net_to_graph, simbench_graph
from ontology.document import RdfDocument
from ontology.errors import ConversionError
from twin.pandapower_adapter import grid_to_net, rows_to_net
from twin.rdf_codec import graph_to_rows

GRID = "https://gridtwin.example/id/test/grid"
SOLVER = {"lightsim2grid": False, "algorithm": "nr", "init": "dc", "calculate_voltage_angles": True, "tolerance_mva": 1e-9}


@pytest.fixture
def small_net():
    """A 60 Hz net with every convention the converter folds: parallel, df, scaling, taps off neutral, Dyn11, switches."""
    net = pp.create_empty_network(name="small", f_hz=60.0)
    mv = [pp.create_bus(net, 20.0, name=f"MV {i}", geodata=(8.1 + i / 100, 50.1)) for i in range(2)]
    lv = [pp.create_bus(net, 0.4, name=f"LV {i}", geodata=(8.2, 50.1 + i / 100)) for i in range(5)]
    pp.create_ext_grid(net, mv[0], vm_pu=1.03, va_degree=10.0, name="grid")
    pp.create_line_from_parameters(net, mv[0], mv[1], 2.5, 0.2, 0.35, 250.0, 0.3, name="cable", parallel=2, df=0.8,
                                   g_us_per_km=0.5)
    pp.create_transformer_from_parameters(net, mv[1], lv[0], sn_mva=0.4, vn_hv_kv=20.0, vn_lv_kv=0.41, vkr_percent=1.2,
                                          vk_percent=6.0, pfe_kw=0.9, i0_percent=0.35, shift_degree=330.0, tap_side="lv",
                                          tap_neutral=0, tap_min=-2, tap_max=2, tap_step_percent=2.5, tap_pos=1,
                                          tap_changer_type="Ratio", parallel=2, df=0.9, name="substation")
    lines = [pp.create_line_from_parameters(net, lv[i], lv[i + 1], 0.15, 0.206, 0.08, 260.0, 0.27, name=f"LV line {i}")
             for i in range(4)]
    pp.create_line_from_parameters(net, lv[0], lv[4], 0.3, 0.206, 0.08, 260.0, 0.27, name="out of service", in_service=False)
    pp.create_switch(net, lv[1], lines[1], et="l", closed=True, type="LBS", name="closed at line end")
    pp.create_switch(net, lv[3], lines[3], et="l", closed=False, type="LS", name="open at line end")
    pp.create_switch(net, lv[0], 0, et="t", closed=True, type="CB", name="transformer breaker")
    pp.create_switch(net, lv[4], lv[2], et="b", closed=False, type="DS", name="open tie")
    pp.create_load(net, lv[2], p_mw=0.06, q_mvar=0.02, scaling=0.5, name="house")
    pp.create_load(net, lv[4], p_mw=0.04, q_mvar=0.01, name="shop")
    pp.create_sgen(net, lv[3], p_mw=0.03, q_mvar=-0.005, sn_mva=0.035, scaling=0.8, type="PV", name="roof")
    pp.create_sgen(net, mv[1], p_mw=0.5, type="WP", name="turbine")
    pp.create_storage(net, lv[1], p_mw=0.01, max_e_mwh=0.1, soc_percent=40.0, name="battery")
    return net


def solve(net):
    net = copy.deepcopy(net)
    pp.runpp(net, **SOLVER)
    return net


def max_abs_difference(a, b) -> float:
    """Largest |a − b|, counting both-NaN (isolated in both) as agreement and one-sided NaN as infinite."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    difference = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
    return float(np.nan_to_num(difference, nan=np.inf).max(initial=0.0))


def compare(original, twin, index, grid_iri: str) -> dict[str, float]:
    """Solve both nets; max |Δ| of vm_pu on every original bus and of line / transformer loading_percent."""
    original, twin = solve(original), solve(twin)

    def twin_values(table: str, column: str, source_index):
        rows = [index[table][f"{grid_iri}/{table}/{i}"] for i in source_index]
        return twin[f"res_{table}"][column].loc[rows]

    return {
        "vm_pu": max_abs_difference(original.res_bus.vm_pu, twin_values("bus", "vm_pu", original.bus.index)),
        "line_loading_percent": max_abs_difference(original.res_line.loading_percent,
                                                   twin_values("line", "loading_percent", original.line.index)),
        "trafo_loading_percent": max_abs_difference(original.res_trafo.loading_percent,
                                                    twin_values("trafo", "loading_percent", original.trafo.index)),
    }


def assert_same_load_flow(differences: dict[str, float]) -> None:
    assert differences["vm_pu"] < 1e-6, differences
    assert differences["line_loading_percent"] < 1e-4, differences
    assert differences["trafo_loading_percent"] < 1e-4, differences


def with_ratio_taps(net):
    net = copy.deepcopy(net)
    net.trafo["tap_changer_type"] = "Ratio"
    return net


def rows_of(net, grid_iri: str = GRID):
    return graph_to_rows(net_to_graph(net, grid_iri=grid_iri, grid_name=net.name or "grid"))


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {row["name"]: row for row in rows}


# --- conversion, no database ------------------------------------------------------------------------


def test_small_net_solves_the_same_through_the_rdf_form(small_net):
    twin, index = rows_to_net(rows_of(small_net))

    assert_same_load_flow(compare(small_net, twin, index, GRID))


def test_line_totals_fold_length_parallel_and_derating(small_net):
    line = by_name(rows_of(small_net).rows["Line"])["cable"]

    assert line["r_ohm"] == pytest.approx(0.2 * 2.5 / 2)
    assert line["x_ohm"] == pytest.approx(0.35 * 2.5 / 2)
    assert line["b_s"] == pytest.approx(2 * np.pi * 60.0 * 250e-9 * 2.5 * 2)
    assert line["g_s"] == pytest.approx(0.5e-6 * 2.5 * 2)
    assert line["max_i_ka"] == pytest.approx(0.3 * 0.8 * 2)


def test_transformer_is_referred_to_the_hv_side_with_its_clock_and_ratio_tap(small_net):
    trafo = by_name(rows_of(small_net).rows["Transformer"])["substation"]

    z_base_ohm = 20.0**2 / (0.4 * 2)
    assert trafo["r_ohm"] == pytest.approx(0.012 * z_base_ohm)
    assert np.hypot(trafo["r_ohm"], trafo["x_ohm"]) == pytest.approx(0.06 * z_base_ohm)
    assert (trafo["r2_ohm"], trafo["x2_ohm"], trafo["g2_s"], trafo["b2_s"]) == (0.0, 0.0, 0.0, 0.0)
    assert trafo["g_s"] == pytest.approx(0.9e-3 / 20.0**2 * 2)
    assert trafo["b_s"] > 0
    assert trafo["sn_mva"] == pytest.approx(0.4 * 2 * 0.9)
    assert trafo["phase_angle_clock"] == 11
    assert (trafo["tap_side"], trafo["tap_low"], trafo["tap_high"], trafo["tap_neutral"], trafo["tap_pos"]) == ("lv", -2, 2, 0, 1.0)


def test_branch_end_switches_get_an_auxiliary_node_next_to_their_bus(small_net):
    rows = rows_of(small_net)
    buses = {row["iri"]: row for row in rows.rows["Bus"]}
    switches = by_name(rows.rows["Switch"])
    line = by_name(rows.rows["Line"])["LV line 3"]

    switch = switches["open at line end"]
    assert (switch["bus"], switch["open"], switch["kind"]) == (f"{GRID}/bus/5", True, "switch")
    assert line["from_bus"] == switch["other_bus"] == f"{GRID}/bus/switch-1"
    assert buses[switch["other_bus"]]["base_voltage"] == buses[switch["bus"]]["base_voltage"]
    assert (buses[switch["other_bus"]]["lon_degree"], buses[switch["other_bus"]]["lat_degree"]) == (8.2, 50.13)
    assert switches["open tie"]["other_bus"] == f"{GRID}/bus/4"
    assert switches["transformer breaker"]["kind"] == "breaker"
    assert by_name(rows.rows["Transformer"])["substation"]["lv_bus"] == switches["transformer breaker"]["other_bus"]
    assert len(rows.rows["Bus"]) == len(small_net.bus) + 3


def test_injections_fold_scaling_and_keep_their_kind(small_net):
    rows = rows_of(small_net).rows
    loads, generators = by_name(rows["Load"]), by_name(rows["StaticGenerator"])

    assert (loads["house"]["p_mw"], loads["house"]["q_mvar"]) == (pytest.approx(0.03), pytest.approx(0.01))
    assert (generators["roof"]["kind"], generators["roof"]["p_mw"], generators["roof"]["q_mvar"]) == (
        "pv", pytest.approx(0.024), pytest.approx(-0.004))
    assert generators["turbine"]["kind"] == "wind"
    battery = by_name(rows["Storage"])["battery"]
    assert (battery["max_e_mwh"], battery["stored_e_mwh"]) == (0.1, pytest.approx(0.04))
    external = rows["ExternalGrid"][0]
    assert (external["vm_target_kv"], external["va_degree"]) == (pytest.approx(1.03 * 20.0), 10.0)


def test_conversion_is_deterministic_so_reimports_change_nothing(lv_net):
    first = net_to_graph(lv_net, grid_iri=GRID, grid_name="LV")
    second = net_to_graph(copy.deepcopy(lv_net), grid_iri=GRID, grid_name="LV")

    assert set(first) == set(second)


def test_document_and_graph_hold_the_same_triples(small_net):
    graph = net_to_graph(small_net, grid_iri=GRID, grid_name="small")
    document = net_to_document(small_net, grid_iri=GRID, grid_name="small")

    assert set(map(str, document.quads)) == set(map(str, RdfDocument.from_graph(graph).quads))


def test_simbench_names_profiles_feeders_and_coordinates_arrive(lv_net):
    rows = rows_of(lv_net)

    assert {r["name"] for r in rows.rows["Load"]} == set(lv_net.load.name)
    assert {r["profile"] for r in rows.rows["Load"]} == set(lv_net.load.profile)
    subnets = set().union(*(lv_net[table].subnet for table in ("bus", "line", "trafo", "switch", "load", "sgen", "ext_grid")))
    assert {r["name"] for r in rows.rows["Feeder"]} == subnets
    bus0 = next(r for r in rows.rows["Bus"] if r["iri"] == f"{GRID}/bus/0")
    assert bus0["name"] == lv_net.bus.name[0]
    assert bus0["lon_degree"] is not None and bus0["lat_degree"] is not None
    assert len(rows.rows["Bus"]) == len(lv_net.bus) + int(lv_net.switch.et.isin(["l", "t"]).sum())


def test_twin_applies_the_taps_that_raw_simbench_nets_ignore(mv_net):
    twin, index = rows_to_net(rows_of(mv_net))

    assert set(twin.trafo.tap_changer_type) == {"Ratio"}
    assert compare(mv_net, twin, index, GRID)["vm_pu"] > 1e-3
    assert_same_load_flow(compare(with_ratio_taps(mv_net), twin, index, GRID))


def test_simbench_graph_mints_the_grid_iri_from_the_code(monkeypatch, lv_net):
    import simbench

    monkeypatch.setattr(simbench, "get_simbench_net", lambda code: copy.deepcopy(lv_net))
    rows = graph_to_rows(simbench_graph("1-LV-rural1--0-sw", base_iri="https://gridtwin.example/id/", owner_iri=GRID + "/owner"))

    assert rows.grid == {"iri": "https://gridtwin.example/id/simbench/1-LV-rural1--0-sw", "name": "SimBench 1-LV-rural1--0-sw",
                         "owner": GRID + "/owner"}


def test_unknown_simbench_code_is_a_conversion_error():
    with pytest.raises(ConversionError, match="nowhere"):
        simbench_graph("1-LV-nowhere--0-sw", base_iri="https://gridtwin.example/id/")


def test_a_line_with_negative_charging_keeps_its_pi_model_as_two_end_shunts():
    """GBnetwork's reduced 132 kV branches have c < 0: the line keeps r, x, each end gets an EquivalentShunt of half its
    b and g (the same π model), and the bus voltages are pandapower's own."""
    import pandapower.networks as pn

    net = pn.case9()
    net.line.loc[2, "c_nf_per_km"] = -0.5 * net.line.at[2, "c_nf_per_km"]
    rows = rows_of(net)
    line = next(row for row in rows.rows["Line"] if row["iri"] == f"{GRID}/line/2")
    shunts = [row for row in rows.rows["EquivalentShunt"] if row["iri"].startswith(f"{GRID}/line/2/")]
    b_s = 2 * np.pi * net.f_hz * net.line.at[2, "c_nf_per_km"] * 1e-9 * net.line.at[2, "length_km"]
    assert line["b_s"] == 0.0 and line["r_ohm"] > 0
    assert sorted(row["b_s"] for row in shunts) == pytest.approx([b_s / 2, b_s / 2])
    twin, index = rows_to_net(rows)
    original, solved_twin = solve(net), solve(twin)
    buses = [index["bus"][f"{GRID}/bus/{i}"] for i in net.bus.index]
    assert max_abs_difference(original.res_bus.vm_pu, solved_twin.res_bus.vm_pu.loc[buses]) < 1e-9
    assert max_abs_difference(original.res_bus.va_degree, solved_twin.res_bus.va_degree.loc[buses]) < 1e-7


def _add_dc_line(net):
    pp.create_dcline(net, 0, 1, p_mw=0.1, loss_percent=1.0, loss_mw=0.0, vm_from_pu=1.0, vm_to_pu=1.0, name="link")


def _add_asymmetric_load(net):
    pp.create_asymmetric_load(net, 2, p_a_mw=0.01, name="one phase")


def _ideal_shifter_off_the_clock(net):
    net.trafo.loc[0, ["shift_degree", "tap_changer_type", "tap_step_degree", "tap_step_percent"]] = [45.0, "Ideal", 1.0, 0.0]


def _phase_shifter(net):
    net.trafo.loc[0, ["tap_changer_type", "tap_step_degree"]] = ["Ideal", 1.5]


def _voltage_dependent_load(net):
    net.load.loc[1, "const_z_p_percent"] = 30.0


def _switch_off_its_line(net):
    net.switch.loc[0, "bus"] = 0


@pytest.mark.parametrize(("change", "node"), [
    (_add_dc_line, "dcline[0]"),
    (_add_asymmetric_load, "asymmetric_load[0]"),
    (_ideal_shifter_off_the_clock, f"{GRID}/trafo/0"),
    (_phase_shifter, f"{GRID}/trafo/0"),
    (_voltage_dependent_load, f"{GRID}/load/1"),
    (_switch_off_its_line, f"{GRID}/switch/0"),
])
def test_what_the_form_cannot_hold_is_refused_naming_table_and_row(small_net, change, node):
    change(small_net)

    with pytest.raises(ConversionError) as raised:
        net_to_graph(small_net, grid_iri=GRID, grid_name="small")
    assert raised.value.node == node
    assert raised.value.as_dict()["reason"] == "conversion_error"


# --- through the database -----------------------------------------------------------------------------


def import_net(net, code: str, participant):
    from twin.services import grid_import_graph

    document = net_to_document(net, grid_iri=f"https://gridtwin.example/id/test/{code}", grid_name=code, owner_iri=participant.iri)
    return grid_import_graph(graph=document, participant=participant, source=f"test:{code}")


@pytest.mark.django_db
@pytest.mark.parametrize("net_fixture", ["small_net", "lv_net", "mv_net"])
def test_grid_stored_in_the_twin_solves_like_pandapower(request, utility, net_fixture):
    net = request.getfixturevalue(net_fixture)
    code = net_fixture.replace("_", "-")
    result = import_net(net, code, utility)

    twin, index = grid_to_net(result.grid)

    assert len(index.elements["line"]) == len(net.line)
    assert_same_load_flow(compare(with_ratio_taps(net), twin, index, result.grid.iri))


@pytest.mark.django_db
def test_reimporting_the_same_simbench_net_changes_nothing(utility, lv_net):
    import_net(lv_net, "lv", utility)

    again = import_net(copy.deepcopy(lv_net), "lv", utility)

    assert not again.changed
    assert again.grid.version == 1
