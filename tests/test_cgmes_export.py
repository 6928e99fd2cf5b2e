"""CGMES export: a stored grid written as EQ, TP, SSH (and SV) reads back in the twin's importer and in pandapower's
`from_cim`, and solves to the same voltages as the twin's own model of the original grid (max |Δvm| < 1e-6 pu).

Buses are matched by mRID: the export gives every bus the mRID of its twin IRI (`cgmes_export.mrid`), the twin's
importer stores it as ``urn:uuid:<mRID>`` and pandapower keeps it as the bus ``origin_id``.
"""

import logging
import warnings

import pandapower as pp
import pandapower.networks as pn
import pytest
from django.core.management import CommandError, call_command

from ontology.converters.cgmes import cgmes_to_graph
from ontology.converters.cgmes_export import graph_to_cgmes, mrid
from ontology.converters.pandapower_net import net_to_document, simbench_document
from twin.pandapower_adapter import grid_to_net
from twin.selectors import grid_graph
from twin.services import grid_import_graph

MAX_DVM_PU = 1e-6


@pytest.fixture
def owner(db):
    from twin.models import Participant

    return Participant.objects.create(iri="https://gridtwin.example/id/participant/export", name="Export DSO")


def solved_vm_pu(grid) -> dict[str, float]:
    """Bus mRID → vm_pu of the twin's pandapower model of a stored grid."""
    net, index = grid_to_net(grid)
    pp.runpp(net, calculate_voltage_angles=True, lightsim2grid=False)
    return {mrid(iri): float(net.res_bus.vm_pu.at[row]) for iri, row in index["bus"].items()}


def write_profiles(profiles: dict[str, bytes], folder) -> list:
    paths = []
    for profile, body in profiles.items():
        path = folder / f"grid_{profile}.xml"
        path.write_bytes(body)
        paths.append(path)
    return paths


def pandapower_vm_pu(paths, version: str) -> dict[str, float]:
    from pandapower.converter.cim.cim2pp.from_cim import from_cim

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            net = from_cim(file_list=[str(p) for p in paths], cgmes_version=version)
        finally:
            logging.disable(logging.NOTSET)
    pp.runpp(net, calculate_voltage_angles=True, lightsim2grid=False)
    return {origin.lstrip("_"): float(vm) for origin, vm in zip(net.bus.origin_id, net.res_bus.vm_pu, strict=True)}


def max_dvm_pu(reference: dict[str, float], other: dict[str, float]) -> float:
    assert set(reference) == set(other)
    return max(abs(reference[k] - other[k]) for k in reference)


def multivoltage(*, with_xwards: bool):
    """pandapower's example_multivoltage: three-winding transformer, impedance, wards, shunt, gen, switches, phase shift.

    pandapower's `from_cim` reads a regulating EquivalentInjection (the twin's form of an xward's voltage source) as an
    xward behind a guessed 0.1 Ω, not as the node voltage CIM states: with xwards it agrees only to ~1e-3 pu, so the
    pandapower read-back is compared on the network without them.
    """
    net = pn.example_multivoltage()
    if not with_xwards:
        net.xward = net.xward.iloc[0:0]
    name = "multivoltage" if with_xwards else "multivoltage-no-xward"
    return lambda owner: net_to_document(
        net, grid_iri=f"https://gridtwin.example/id/pandapower/{name}", grid_name=name, owner_iri=owner.iri
    )


GRIDS = {
    "simbench-lv": lambda owner: simbench_document("1-LV-rural1--0-sw", base_iri="https://gridtwin.example/id/", owner_iri=owner.iri),
    "case9": lambda owner: net_to_document(
        pn.case9(), grid_iri="https://gridtwin.example/id/pandapower/case9", grid_name="case9", owner_iri=owner.iri
    ),
    "multivoltage": multivoltage(with_xwards=True),
    "multivoltage-no-xward": multivoltage(with_xwards=False),
}
PANDAPOWER_READS_EXACTLY = {"simbench-lv", "case9", "multivoltage-no-xward"}


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(GRIDS))
def test_export_reads_back_in_the_twin_and_in_pandapower(name, owner, tmp_path):
    original = grid_import_graph(graph=GRIDS[name](owner), participant=owner, source=f"test:{name}").grid
    reference = solved_vm_pu(original)
    for version in ("2.4.15", "3.0"):
        folder = tmp_path / version
        folder.mkdir()
        paths = write_profiles(graph_to_cgmes(grid_graph(original), version=version), folder)
        again = grid_import_graph(graph=cgmes_to_graph(paths, owner_iri=owner.iri), participant=owner, source=f"cgmes:{name}").grid
        assert again.pk != original.pk
        assert max_dvm_pu(reference, solved_vm_pu(again)) < MAX_DVM_PU
        # pandapower 3.5.6's CGMES 3.0 reader fails on any ACLineSegment (it looks for inService outside SSH; the
        # ENTSO-E MiniGrid fails the same way), so pandapower reads back the 2.4.15 export only
        if version == "2.4.15" and name in PANDAPOWER_READS_EXACTLY:
            assert max_dvm_pu(reference, pandapower_vm_pu(paths, version)) < MAX_DVM_PU
        again.delete()  # the next version's read-back holds the same mRIDs, so the same IRIs


@pytest.mark.django_db
def test_export_import_export_gives_the_same_files(owner, tmp_path):
    original = grid_import_graph(graph=GRIDS["case9"](owner), participant=owner, source="test:case9").grid
    first = graph_to_cgmes(grid_graph(original), version="2.4.15")
    again = grid_import_graph(
        graph=cgmes_to_graph(write_profiles(first, tmp_path), owner_iri=owner.iri), participant=owner, source="cgmes:case9"
    ).grid
    second = graph_to_cgmes(grid_graph(again), version="2.4.15")

    def body(xml: bytes) -> list[str]:
        return [line for line in xml.decode().splitlines() if "md:" not in line]

    assert {p: body(b) for p, b in first.items()} == {p: body(b) for p, b in second.items()}


@pytest.mark.django_db
def test_command_writes_the_profiles_and_refuses_bad_input(owner, tmp_path):
    grid = grid_import_graph(graph=GRIDS["case9"](owner), participant=owner, source="test:case9").grid
    call_command("export_cgmes", str(grid.pk), "--version", "2.4.15", "-o", str(tmp_path))
    assert sorted(p.name.split("_")[-1] for p in tmp_path.glob("*.xml")) == ["EQ.xml", "SSH.xml", "TP.xml"]
    with pytest.raises(CommandError, match="no grid"):
        call_command("export_cgmes", "999999", "-o", str(tmp_path))
    with pytest.raises(CommandError, match="run_not_exportable: run 999999"):
        call_command("export_cgmes", str(grid.pk), "--run", "999999", "-o", str(tmp_path))


@pytest.mark.django_db
def test_sv_profile_carries_the_runs_voltages_and_reads_back_to_the_same_load_flow(owner, tmp_path):
    from twin.loadflow import services
    from twin.models import Bus, BusResult

    grid = grid_import_graph(graph=GRIDS["case9"](owner), participant=owner, source="test:case9").grid
    run = services.loadflow_run_create(grid=grid, kind="snapshot")
    for index in services.loadflow_run_execute(run_id=run.pk):
        services.loadflow_chunk_solve(run_id=run.pk, index=index)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    solved = {mrid(iri): vm for iri, vm in BusResult.objects.filter(run=run).values_list("bus__iri", "vm_pu")}

    call_command("export_cgmes", grid.iri, "--version", "2.4.15", "--run", str(run.pk), "-o", str(tmp_path))
    paths = sorted(tmp_path.glob("*.xml"))
    assert [p.name.rsplit("_", 1)[-1] for p in paths] == ["EQ.xml", "SSH.xml", "SV.xml", "TP.xml"]
    again = grid_import_graph(graph=cgmes_to_graph(paths, owner_iri=owner.iri), participant=owner, source="cgmes:case9").grid
    sv_vm_pu = {b.iri.removeprefix("urn:uuid:"): b.sv_v_kv / b.vn_kv for b in Bus.objects.filter(grid=again).select_related("base_voltage")}
    assert max_dvm_pu(solved, sv_vm_pu) < 1e-12
    assert max_dvm_pu(solved, solved_vm_pu(again)) < MAX_DVM_PU
    assert max_dvm_pu(solved, pandapower_vm_pu(paths, "2.4.15")) < MAX_DVM_PU


@pytest.mark.django_db
def test_api_serves_the_profiles_as_a_zip_to_the_owner_only(utility, operator, other_operator, tmp_path):
    import io
    import zipfile

    grid = grid_import_graph(graph=GRIDS["case9"](utility), participant=utility, source="test:case9").grid
    response = operator.get(f"/api/v1/grids/{grid.pk}/cgmes", {"cgmes_version": "2.4.15"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(n.rsplit("_", 1)[-1] for n in archive.namelist()) == ["EQ.xml", "SSH.xml", "TP.xml"]
    assert archive.read(f"grid{grid.pk}_2.4.15_EQ.xml").startswith(b"<?xml")

    assert other_operator.get(f"/api/v1/grids/{grid.pk}/cgmes").status_code == 404
    refused = operator.get(f"/api/v1/grids/{grid.pk}/cgmes", {"run": 999999})
    assert (refused.status_code, refused.json()["reason"]) == (422, "run_not_exportable")
    assert operator.get(f"/api/v1/grids/{grid.pk}/cgmes", {"cgmes_version": "9"}).json()["reason"] == "invalid_filter"
