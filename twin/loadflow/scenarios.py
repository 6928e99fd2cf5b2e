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

import importlib

from ontology.errors import OntologyError
from twin import models

ADDABLE = {"sgen": "create_sgen", "load": "create_load", "storage": "create_storage"}  # pandapower's creators (imported where used)
SETTABLE = ("p_mw", "q_mvar", "in_service")
ASSET_TABLES = {"load": models.Load, "sgen": models.StaticGenerator, "storage": models.Storage, "ev": models.EVCharger,
                "line": models.Line, "trafo": models.Transformer, "switch": models.Switch, "ext_grid": models.ExternalGrid,
                "machine": models.SynchronousMachine, "motor": models.AsynchronousMachine, "shunt": models.ShuntCompensator,
                "trafo3w": models.ThreeWindingTransformer, "equivalent_branch": models.EquivalentBranch,
                "equivalent_injection": models.EquivalentInjection, "equivalent_shunt": models.EquivalentShunt}
# What `set` may change per kind of asset: injections have power, branches and slacks are only switched in or out.
SETTABLE_BY_TABLE = {"load": SETTABLE, "sgen": SETTABLE, "storage": SETTABLE, "ev": SETTABLE, "line": ("in_service",),
                     "trafo": ("in_service",), "ext_grid": ("in_service",), "switch": (),
                     # a voltage-controlling machine's q is the load flow's result: only its p is set
                     "machine": ("p_mw", "in_service"), "motor": ("in_service",), "shunt": ("in_service",), "trafo3w": ("in_service",),
                     "equivalent_branch": ("in_service",), "equivalent_injection": ("in_service",), "equivalent_shunt": ("in_service",)}
# The keys each action takes: anything else is refused, so a typo never silently does nothing.
CHANGE_KEYS = {"add": {"action", "element", "buses", "bus", "p_mw", "q_mvar", "profile", "max_e_mwh"},
               "remove": {"action", "iri"}, "set": {"action", "iri", *SETTABLE}}
MAX_CHANGES = 100  # changes in one scenario
MAX_NAMED = 1000  # buses and assets named by one scenario in all (a what-if costs a few ms per asset it adds)
MAX_IRI_CHARS = 500
MAX_ABS_MW = 1e4  # |p_mw|, |q_mvar|, max_e_mwh: beyond any asset of a distribution grid


class ScenarioError(OntologyError):
    """A scenario that names something that does not exist or asks for something impossible (422), or is malformed (400)."""

    reason = "invalid_scenario"
    status = 422

    def __init__(self, message: str, *, node: str | None = None, status: int | None = None):
        super().__init__(message, node=node)
        self.status = status or self.status


def _malformed(message: str) -> ScenarioError:
    return ScenarioError(message, status=400)


def _iri(value, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_IRI_CHARS or "\x00" in value:
        raise _malformed(f"{what} must be an IRI of 1 to {MAX_IRI_CHARS} characters without NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _malformed(f"{what} must be valid Unicode (no lone surrogates)") from exc
    return value


def _number(change: dict, key: str, *, required: bool = False, positive: bool = False) -> None:
    if key not in change:
        if required:
            raise _malformed(f"{change['action']} needs {key}, a number")
        return
    value = change[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not abs(value) <= MAX_ABS_MW or (positive and value <= 0):
        raise _malformed(f"{key} must be a{' positive' if positive else ''} number of at most {MAX_ABS_MW:g} in absolute value")


def validate(scenario) -> list[dict]:
    """The changes of a well-formed scenario: known keys of the right types, within the size caps; raises ScenarioError (400).

    Needs no database, so it runs at the edge, before anything is stored or queued."""
    if not isinstance(scenario, dict) or set(scenario) != {"changes"} or not isinstance(scenario["changes"], list) \
            or not scenario["changes"]:
        raise _malformed('a scenario is {"changes": [...]} with at least one change')
    changes = scenario["changes"]
    if len(changes) > MAX_CHANGES:
        raise _malformed(f"a scenario has at most {MAX_CHANGES} changes, not {len(changes)}")
    named = 0
    for change in changes:
        if not isinstance(change, dict) or change.get("action") not in CHANGE_KEYS:
            raise _malformed("each change needs an action: add, remove or set")
        action = change["action"]
        unknown = sorted(str(key) for key in set(change) - CHANGE_KEYS[action])
        if unknown:
            raise _malformed(f"{action} takes {', '.join(sorted(CHANGE_KEYS[action]))}, not {unknown[0]!r}")
        if action == "add":
            if change.get("element") not in ADDABLE:
                raise _malformed(f"add needs element one of {', '.join(ADDABLE)}")
            if ("buses" in change) == ("bus" in change):
                raise _malformed("add needs buses: a list of bus IRIs (or bus: one IRI)")
            buses = change["buses"] if "buses" in change else [change["bus"]]
            if not isinstance(buses, list) or not buses:
                raise _malformed("add needs buses: a list of bus IRIs")
            for bus in buses:
                _iri(bus, "each bus")
            named += len(buses)
            _number(change, "p_mw", required=True)
            _number(change, "q_mvar")
            if "max_e_mwh" in change and change["element"] != "storage":
                raise _malformed("max_e_mwh is for element storage only")
            _number(change, "max_e_mwh", positive=True)
            profile = change.get("profile", "")
            if not isinstance(profile, str) or len(profile) > 100 or "\x00" in profile:
                raise _malformed("profile must be the name of a profile (at most 100 characters)")
        else:
            _iri(change.get("iri"), "iri")
            named += 1
            if action == "set":
                if not any(key in change for key in SETTABLE):
                    raise _malformed(f"set needs at least one of {', '.join(SETTABLE)}")
                _number(change, "p_mw")
                _number(change, "q_mvar")
                if "in_service" in change and not isinstance(change["in_service"], bool):
                    raise _malformed("in_service must be true or false")
        if named > MAX_NAMED:
            raise _malformed(f"a scenario names at most {MAX_NAMED} buses and assets in all")
    return changes


def _changes(scenario) -> list[dict]:
    return [] if scenario is None else validate(scenario)


def check(grid: models.Grid, scenario) -> None:
    """Refuse a malformed scenario (400), or one naming buses or assets the grid does not have or values they cannot take (422)."""
    for change in _changes(scenario):
        if change["action"] == "add":
            buses = change.get("buses") or [change["bus"]]
            known = set(models.Bus.objects.filter(grid=grid, iri__in=buses).values_list("iri", flat=True))
            missing = [b for b in buses if b not in known]
            if missing:
                raise ScenarioError(f"{len(missing)} bus(es) of the scenario are not in the grid", node=missing[0])
        else:
            iri = change["iri"]
            table = next((name for name, model in ASSET_TABLES.items() if model.objects.filter(grid=grid, iri=iri).exists()), None)
            if table is None:
                raise ScenarioError("the scenario names an asset that does not exist in the grid", node=iri)
            wrong = [key for key in SETTABLE if key in change and key not in SETTABLE_BY_TABLE[table]]
            if wrong:
                raise ScenarioError(f"a {table} has no {wrong[0]} to set (it takes {', '.join(SETTABLE_BY_TABLE[table]) or 'nothing'})",
                                    node=iri)


def apply(net, iri_of: dict[str, dict[int, str]], index, scenario) -> None:
    """Apply a checked scenario to `net` in place, registering new assets in `iri_of` (table → index → IRI)."""
    for number, change in enumerate(_changes(scenario)):
        if change["action"] == "add":
            buses = change.get("buses") or [change["bus"]]
            for bus_iri in buses:
                element = change["element"]
                extra = {"max_e_mwh": float(change.get("max_e_mwh", 1.0))} if element == "storage" else {}
                create = getattr(importlib.import_module("pandapower"), ADDABLE[element])
                created = create(net, index.bus[bus_iri], p_mw=float(change["p_mw"]), q_mvar=float(change.get("q_mvar", 0.0)),
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
