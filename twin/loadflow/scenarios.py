"""What-if scenarios: changes applied to the twin's pandapower net of one run, never to the twin itself.

`parameters.scenario` = `{"changes": [...]}`, each change one of:

* `{"action": "add", "element": "sgen" | "load" | "storage", "buses": [bus IRI, …], "p_mw": 0.011,
  "q_mvar": 0.0, "profile": "H0-A"}` — one new asset per bus (e.g. "11 kW charger at these 40 buses"
  is element `load` with p_mw 0.011; "PV of X kWp at bus Y" is element `sgen`, p_mw X/1000, profile
  e.g. `PV3`); new assets are named `{bus IRI}#whatif-{n}`;
* `{"action": "remove", "iri": asset IRI}` — take it out of service;
* `{"action": "set", "iri": asset IRI, "p_mw": …, "q_mvar": …, "in_service": …}` — change values.
"""

from __future__ import annotations

import pandapower as pp

from ontology.errors import OntologyError
from twin import models

ADDABLE = {"sgen": pp.create_sgen, "load": pp.create_load, "storage": pp.create_storage}
SETTABLE = ("p_mw", "q_mvar", "in_service")
ASSET_TABLES = {"load": models.Load, "sgen": models.StaticGenerator, "storage": models.Storage, "ev": models.EVCharger,
                "line": models.Line, "trafo": models.Transformer, "switch": models.Switch, "ext_grid": models.ExternalGrid}


class ScenarioError(OntologyError):
    """A scenario that names something that does not exist or asks for something impossible (422)."""

    reason = "invalid_scenario"
    status = 422


def _changes(scenario) -> list[dict]:
    if scenario is None:
        return []
    if not isinstance(scenario, dict) or not isinstance(scenario.get("changes"), list) or not scenario["changes"]:
        raise ScenarioError('a scenario is {"changes": [...]} with at least one change')
    for change in scenario["changes"]:
        if not isinstance(change, dict) or change.get("action") not in ("add", "remove", "set"):
            raise ScenarioError("each change needs an action: add, remove or set")
    return scenario["changes"]


def check(grid: models.Grid, scenario) -> None:
    """Refuse a scenario naming buses or assets the grid does not have, or values that are not numbers."""
    for change in _changes(scenario):
        if change["action"] == "add":
            if change.get("element") not in ADDABLE:
                raise ScenarioError(f"add needs element one of {', '.join(ADDABLE)}")
            buses = change.get("buses") or ([change["bus"]] if change.get("bus") else [])
            if not buses or not all(isinstance(b, str) for b in buses):
                raise ScenarioError("add needs buses: a list of bus IRIs")
            known = set(models.Bus.objects.filter(grid=grid, iri__in=buses).values_list("iri", flat=True))
            missing = [b for b in buses if b not in known]
            if missing:
                raise ScenarioError(f"{len(missing)} bus(es) of the scenario are not in the grid", node=missing[0])
            if not isinstance(change.get("p_mw"), int | float):
                raise ScenarioError("add needs p_mw, a number in MW")
        else:
            iri = change.get("iri")
            if not any(model.objects.filter(grid=grid, iri=iri).exists() for model in ASSET_TABLES.values()):
                raise ScenarioError("the scenario names an asset that does not exist in the grid", node=str(iri))
            for key in SETTABLE:
                if key in change and not isinstance(change[key], int | float | bool):
                    raise ScenarioError(f"{key} must be a number (or true/false for in_service)")


def apply(net, iri_of: dict[str, dict[int, str]], index, scenario) -> None:
    """Apply a checked scenario to `net` in place, registering new assets in `iri_of` (table → index → IRI)."""
    for number, change in enumerate(_changes(scenario)):
        if change["action"] == "add":
            buses = change.get("buses") or [change["bus"]]
            for bus_iri in buses:
                element = change["element"]
                extra = {"max_e_mwh": float(change.get("max_e_mwh", 1.0))} if element == "storage" else {}
                created = ADDABLE[element](net, index.bus[bus_iri], p_mw=float(change["p_mw"]), q_mvar=float(change.get("q_mvar", 0.0)),
                                           name=f"what-if {number}", **extra)
                net[element].at[created, "profile"] = str(change.get("profile", ""))
                iri_of.setdefault(element, {})[created] = f"{bus_iri}#whatif-{number}"
            continue
        found = index.element(change["iri"])
        if found is None:
            raise ScenarioError("the scenario names an asset that has no element in the load flow", node=change["iri"])
        table, row = found
        if change["action"] == "remove":
            net[table].at[row, "in_service"] = False
        else:
            for key in SETTABLE:
                if key in change:
                    net[table].at[row, key] = change[key]
