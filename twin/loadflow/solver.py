"""The solver: pandapower's own admittance matrices, all steps of a chunk solved at once.

Why this and not `runpp` per step, `run_timeseries`, or lightsim2grid's `TimeSeriesCPP`:

* `runpp` spends over 99 % of its 45–80 ms in pandas bookkeeping (FIELD-NOTES); `run_timeseries`
  is 150–364 s for a year of an MV grid.
* `TimeSeriesCPP` (2.3 s for that year) solves lightsim2grid's own model of the grid, built by its
  pandapower converter, which differs from pandapower by up to ~2e-5 pu on MV grids and needs
  workarounds for switches, empty columns and tap positions.
* Here the network structure is built once by pandapower (`runpp` on the net with zero injections):
  Ybus, Yf, Yt, bus types and lookups come from pandapower's internal ppci. Sbus of every step is one
  sparse product of the injections with an incidence matrix. Distribution grids without voltage-
  controlled (PV) buses are then solved for all steps together by the fixed-point iteration on the PQ
  buses (`_fixed_point`: Y_qq factorised once, each round one triangular solve with every step as a
  right-hand side, 4–6 rounds on SimBench grids), stopping on pandapower's own test (largest P or Q
  mismatch below 1e-8 MVA), so results equal `runpp`'s to ~1e-9 pu. On a chunk of 2,688 steps of
  SimBench 1-MV-urban that is 0.12 s where lightsim2grid's C++ Newton–Raphson (`NRSing_KLU`, step
  after step, warm-started) needs 0.42 s. Steps the iteration leaves open (near voltage collapse) and
  grids with PV buses go to that Newton–Raphson. Branch flows, currents and loadings are computed
  afterwards for all steps at once with pandapower's formulas (`results_branch._get_branch_flows`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

from twin.loadflow.inputs import Injections, StepInputs

if TYPE_CHECKING:  # pandapower costs seconds to import: only `build_model` needs it, and a model from the disk cache does not
    import pandapower as pp

TOLERANCE_MVA = 1e-8
MAX_ITERATION = 10
FIXED_POINT_MAX_ROUNDS = 40  # beyond this, the rows left over go to Newton–Raphson
SQRT3 = math.sqrt(3)
# sign of an injection's p in the load convention of the bus balance
LOAD_SIGN = {"load": 1.0, "sgen": -1.0, "storage": 1.0, "gen": -1.0, "motor": 1.0}
Q_LIMIT_ROUNDS = 10  # rounds of PV → PQ switching per step (pandapower's enforce_q_lims switches all violators each round)


class LoadFlowError(Exception):
    """A load flow that cannot be solved; `reason` is a machine-readable code, the message says why."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class GridModel:
    """A net's structure ready for repeated solves: admittances, bus types, element ↔ internal index maps.

    `net` is the pandapower net it was built from (nothing here solves it: a model from the disk cache comes without it,
    and builds it again through `_net_source` when asked).
    """

    injections: Injections
    ybus: sparse.csc_matrix
    yf: sparse.csr_matrix
    yt: sparse.csr_matrix
    ref: np.ndarray  # int32, as lightsim2grid takes them (no conversion per step)
    pv: np.ndarray
    pq: np.ndarray
    base_mva: float
    v0: np.ndarray
    bus_ppci: np.ndarray  # per net bus (row order): internal bus, or -1 when isolated
    incidence: sparse.csr_matrix  # injections × internal buses, load-convention signs
    base_kv: np.ndarray
    f_bus: np.ndarray
    t_bus: np.ndarray
    line_rows: np.ndarray  # per net line: internal branch row, or -1 when out of service
    trafo_rows: np.ndarray
    line_i_max_ka: np.ndarray
    trafo_vn_kv: np.ndarray  # trafos × 2 (hv, lv)
    trafo_rating: np.ndarray  # sn_mva · parallel · df
    pv_q_min_mvar: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per PV bus: the sum of its generators' limits
    pv_q_max_mvar: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _pq_factor: tuple | None = field(default=None, repr=False)
    _net: pp.pandapowerNet | None = field(default=None, repr=False)
    _net_source: Callable[[], pp.pandapowerNet] | None = field(default=None, repr=False)

    @property
    def net(self) -> pp.pandapowerNet | None:
        if self._net is None and self._net_source is not None:
            self._net = self._net_source()
        return self._net

    @property
    def n_bus(self) -> int:
        return self.ybus.shape[0]

    def node_buses(self) -> tuple[np.ndarray, np.ndarray]:
        """(the connected internal nodes, ascending; the layout position of the first bus on each): buses joined by
        closed switches are one node and share its voltage."""
        nodes, first_bus = np.unique(self.bus_ppci, return_index=True)
        connected = nodes >= 0
        return nodes[connected], first_bus[connected]

    def pq_factor(self, v_start: np.ndarray):
        """(LU of Y_qq, Y_qq, Y_qr·V_r): the PQ-bus block of Ybus factorised once per slack voltage, for the fixed-point solver."""
        key = tuple(np.round(v_start[self.ref], 12))
        if self._pq_factor is None or self._pq_factor[0] != key:
            y_pq = self.ybus[self.pq, :]
            y_qq = sparse.csc_matrix(y_pq[:, self.pq])
            slack_current = np.asarray(y_pq[:, self.ref].dot(v_start[self.ref])).ravel()
            self._pq_factor = (key, (splu(y_qq), sparse.csr_matrix(y_qq), slack_current))
        return self._pq_factor[1]


def has_slack(net: pp.pandapowerNet) -> bool:
    """An external grid in service, or a generator in service that is the slack (`gen.slack`: a machine with a reference
    priority). A slack machine holds its bus's voltage and angle; its p is then the solver's, and the grid exchange of the
    results (`p_ext_grid_mw`) is what the slack supplies beyond its declared p."""
    external = not net.ext_grid.empty and net.ext_grid.in_service.astype(bool).any()
    machine = not net.gen.empty and (net.gen.in_service.astype(bool) & net.gen.slack.astype(bool)).any()
    return bool(external or machine)


def build_model(net: pp.pandapowerNet, injections: Injections) -> GridModel:
    """Let pandapower build the internal model of `net` (injections set to zero).

    DC start: from a flat start, NR lands on a degenerate ~0 pu solution behind SimBench's 150° transformer shift.
    pandapower's numba kernels come from numba's disk cache (`numba_disk_cache`)."""
    import pandapower as pp
    from pandapower.pypower.idx_brch import F_BUS, T_BUS
    from pandapower.pypower.idx_bus import BASE_KV

    if not has_slack(net):
        raise LoadFlowError("no_slack", "the grid has no slack: no external grid in service and no machine in service that is "
                                        "the reference (cim:SynchronousMachine.referencePriority > 0)")
    structure = copy.deepcopy(net)
    for table in ("load", "sgen", "storage"):
        structure[table]["p_mw"] = 0.0
        structure[table]["q_mvar"] = 0.0
    structure.gen["p_mw"] = 0.0
    structure.motor["loading_percent"] = 0.0
    options = {"lightsim2grid": False, "calculate_voltage_angles": True, "tolerance_mva": TOLERANCE_MVA}
    try:
        numba_disk_cache()
        pp.runpp(structure, init="dc", **options)
    except pp.LoadflowNotConverged:
        vm_pu, va_degree = ratio_start(structure)
        try:
            pp.runpp(structure, init_vm_pu=vm_pu, init_va_degree=va_degree, **options)
        except pp.LoadflowNotConverged as exc:
            raise LoadFlowError("not_converged", "the grid does not solve even without load: check impedances") from exc
    ppc = structure._ppc
    internal = ppc["internal"]
    n_bus = internal["Ybus"].shape[0]
    lookup = structure._pd2ppc_lookups["bus"]
    bus_ppci = lookup[net.bus.index.to_numpy()].astype(np.int64)
    bus_ppci[(bus_ppci < 0) | (bus_ppci >= n_bus)] = -1
    bus_position = {b: i for i, b in enumerate(net.bus.index.tolist())}
    inj_bus = np.array([bus_ppci[bus_position[net[t].at[i, "bus"]]] for t, i in zip(injections.element, injections.net_index, strict=True)],
                       dtype=np.int64)
    _refuse_islands(net, injections, inj_bus)
    active = injections.in_service & (inj_bus >= 0)
    signs = np.array([LOAD_SIGN[t] for t in injections.element])
    rows = np.flatnonzero(active)
    incidence = sparse.csr_matrix((signs[rows], (rows, inj_bus[rows])), shape=(len(injections), n_bus))
    branch_is = internal["branch_is"]
    ppci_row = np.where(branch_is, np.cumsum(branch_is) - 1, -1)
    lookups = structure._pd2ppc_lookups["branch"]
    line_rows = ppci_row[slice(*lookups["line"])] if "line" in lookups else np.zeros(0, dtype=np.int64)
    trafo_rows = ppci_row[slice(*lookups["trafo"])] if "trafo" in lookups else np.zeros(0, dtype=np.int64)
    branch = internal["branch"]
    trafo = net.trafo
    pv = np.asarray(internal["pv"], dtype=np.int32)
    return GridModel(
        _net=net, injections=injections, ybus=sparse.csc_matrix(internal["Ybus"]), yf=sparse.csr_matrix(internal["Yf"]),
        yt=sparse.csr_matrix(internal["Yt"]), ref=np.asarray(internal["ref"], dtype=np.int32),
        pv=pv, pq=np.asarray(internal["pq"], dtype=np.int32),
        base_mva=float(internal["baseMVA"]), v0=_solved_voltages(internal["bus"]), bus_ppci=bus_ppci,
        incidence=incidence, base_kv=internal["bus"][:, BASE_KV].real.astype(float),
        f_bus=branch[:, F_BUS].real.astype(np.int64), t_bus=branch[:, T_BUS].real.astype(np.int64),
        line_rows=np.asarray(line_rows, dtype=np.int64), trafo_rows=np.asarray(trafo_rows, dtype=np.int64),
        line_i_max_ka=(net.line.max_i_ka * net.line.df * net.line.parallel).to_numpy(float),
        trafo_vn_kv=np.column_stack([trafo.vn_hv_kv.to_numpy(float), trafo.vn_lv_kv.to_numpy(float)]) if len(trafo) else np.zeros((0, 2)),
        trafo_rating=(trafo.sn_mva * trafo.parallel * trafo.df).to_numpy(float),
        **dict(zip(("pv_q_min_mvar", "pv_q_max_mvar"), _pv_limits(net, bus_ppci, pv), strict=True)),
    )



def ratio_start(net: pp.pandapowerNet) -> tuple[list[float], list[float]]:
    """(vm_pu, va_degree) per net bus: the slack voltages carried through every branch's ratio and shift, as with no load.

    The start when the DC one fails: a flat magnitude is off by a transformer's off-nominal ratio (CGMES MiniGrid: 400/120 kV
    windings on 380/110 kV nodes, 3.5 %), and behind a winding of near-zero impedance (its 110 kV star branch, 0.13 %) that
    error drives a current Newton–Raphson does not recover from. Read from the ppc of the failed run; lists, because
    pandapower compares an array start with "results" where it places the three-winding transformers' star points.
    """
    from pandapower.pypower.idx_brch import BR_STATUS, F_BUS, SHIFT, T_BUS, TAP
    from pandapower.pypower.idx_bus import BUS_TYPE, REF, VA, VM

    bus, branch = net._ppc["bus"], net._ppc["branch"]
    voltage = np.full(len(bus), np.nan, dtype=complex)
    ref = np.flatnonzero(bus[:, BUS_TYPE].real == REF)
    voltage[ref] = bus[ref, VM].real * np.exp(1j * np.deg2rad(bus[ref, VA].real))
    live = branch[branch[:, BR_STATUS].real > 0]
    ratio = np.where(live[:, TAP].real == 0, 1.0, live[:, TAP].real) * np.exp(1j * np.deg2rad(live[:, SHIFT].real))
    ends = live[:, F_BUS].real.astype(np.int64), live[:, T_BUS].real.astype(np.int64)
    frontier = list(ref)
    while frontier:  # V_to = V_from / ratio across each branch, outwards from the slack buses
        k = frontier.pop()
        for j in np.flatnonzero((ends[0] == k) | (ends[1] == k)):
            other, value = (ends[1][j], voltage[k] / ratio[j]) if ends[0][j] == k else (ends[0][j], voltage[k] * ratio[j])
            if np.isnan(voltage[other]):
                voltage[other] = value
                frontier.append(other)
    start = voltage[net._pd2ppc_lookups["bus"][net.bus.index.to_numpy()]]
    start[np.isnan(start)] = 1.0
    return np.abs(start).tolist(), np.degrees(np.angle(start)).tolist()

# pandapower's modules with numba kernels, imported (and their kernels cached) before the first build
NUMBA_MODULES = ("pandapower.auxiliary", "pandapower.build_bus", "pandapower.pf.makeYbus_numba", "pandapower.pf.create_jacobian_numba",
                 "pandapower.pf.dSbus_dV_numba", "pandapower.pf.pfsoln_numba", "pandapower.pf.run_newton_raphson_pf",
                 "pandapower.pypower.newtonpf")
_numba_cached = False


def numba_disk_cache() -> None:
    """Keep pandapower's compiled numba kernels in numba's disk cache (`var/cache/numba`), once per process.

    pandapower declares its kernels `cache=False`, so every new process compiled them again for its first `runpp`: 6.7 s
    of a first model build of the 10k-bus grid, in every `run_loadflow` command and every new worker. From the disk cache
    the kernels load in a fraction of a second, and they are the same kernels: the results stay bit for bit those of a
    compiled run. numba keys each file by the kernel's source file and signature, so a new pandapower compiles afresh.
    """
    global _numba_cached
    if _numba_cached:
        return
    import importlib
    import sys

    import numba
    from django.conf import settings
    from numba.core.caching import FunctionCache
    from numba.core.registry import CPUDispatcher

    numba.config.CACHE_DIR = str(Path(settings.BASE_DIR) / "var" / "cache" / "numba")
    for name in NUMBA_MODULES:
        importlib.import_module(name)
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "pandapower" and module is not None:
            for kernel in [value for value in vars(module).values() if isinstance(value, CPUDispatcher)]:
                if not isinstance(kernel._cache, FunctionCache):
                    kernel.enable_caching()
    _numba_cached = True


def _pv_limits(net, bus_ppci: np.ndarray, pv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per PV bus, the sums of the reactive limits (Mvar, produced) of the in-service generators on it; ±inf where none."""
    q_min, q_max = np.zeros(len(pv)), np.zeros(len(pv))
    gen = net.gen[net.gen.in_service.astype(bool)]
    position = {b: i for i, b in enumerate(net.bus.index.tolist())}
    slot = {int(b): i for i, b in enumerate(pv.tolist())}
    for bus, low, high in zip(gen.bus.tolist(), gen.min_q_mvar.to_numpy(float), gen.max_q_mvar.to_numpy(float), strict=True):
        i = slot.get(int(bus_ppci[position[bus]]))
        if i is not None:
            q_min[i] += low if np.isfinite(low) else -np.inf
            q_max[i] += high if np.isfinite(high) else np.inf
    return q_min, q_max


def _solved_voltages(bus: np.ndarray) -> np.ndarray:
    """Complex voltages (pu) of a solved ppci bus table: the warm start of the first step."""
    from pandapower.pypower.idx_bus import VA, VM

    return bus[:, VM].real * np.exp(1j * np.deg2rad(bus[:, VA].real))


def _refuse_islands(net, injections: Injections, inj_bus: np.ndarray) -> None:
    """Buses that carry an in-service injection but no path to a slack make the grid unsolvable as given."""
    stranded = injections.in_service & (inj_bus < 0)
    if stranded.any():
        names = ", ".join(injections.iri[j] for j in np.flatnonzero(stranded)[:5])
        raise LoadFlowError("islands", f"{int(stranded.sum())} injection(s) sit on buses with no connection to a slack "
                                       f"(islands): {names}")


@dataclass
class StepResults:
    """Results of consecutive steps (steps × elements; NaN for isolated buses and out-of-service branches)."""

    vm_pu: np.ndarray
    va_degree: np.ndarray
    bus_p_mw: np.ndarray
    bus_q_mvar: np.ndarray
    line: dict[str, np.ndarray]
    trafo: dict[str, np.ndarray]
    totals: dict[str, np.ndarray]
    iterations: int


def solve(model: GridModel, inputs: StepInputs, *, check=None) -> StepResults:
    """Solve every step of `inputs`; raises LoadFlowError naming the first step that does not converge.

    `check`, when given, is called between rounds of work (a run cancelled or failed elsewhere stops the work).
    """
    s_load = bus_loads(model, inputs)  # steps × internal buses, MW/Mvar, load convention
    voltages, converged, iterations = solve_rows(model, -s_load / model.base_mva, model.v0, MAX_ITERATION, check=check)
    if not converged.all():
        k = int(np.flatnonzero(~converged)[0])
        raise LoadFlowError("not_converged", f"the load flow does not converge at {inputs.times[k].isoformat()} "
                                             f"(step {k}, {MAX_ITERATION} Newton–Raphson iterations)")
    return results_of(model, voltages, s_load, iterations)


def solve_rows(model: GridModel, sbus: np.ndarray, v_start: np.ndarray, max_iteration: int, *,
               check=None) -> tuple[np.ndarray, np.ndarray, int]:
    """Solve each row of `sbus` (rows × internal buses, pu, generation positive): (voltages, converged, iterations).

    `v_start` is one start for all rows, or one per row (rows × buses); the slack voltages are the same in all.
    All rows at once by the fixed-point iteration on the PQ buses; the rows it leaves unconverged (and every row
    of a grid with PV buses) by Newton–Raphson, row after row, warm-started from the previous row's voltages.
    """
    voltages = np.array(np.broadcast_to(v_start, sbus.shape), dtype=complex)
    converged = np.zeros(len(sbus), dtype=bool)
    iterations = 0
    if not len(model.pv) and len(model.pq):
        iterations = _fixed_point(model, sbus, voltages, converged)
    if check is not None:
        check()
    pending = np.flatnonzero(~converged)
    if len(pending):
        iterations += _newton_rows(model, sbus, pending, max_iteration, voltages, converged, check)
    if len(model.pv):
        iterations += _enforce_q_limits(model, sbus, voltages, converged, max_iteration)
    return voltages, converged, iterations


def _pv_reactive_mvar(model: GridModel, sbus_row: np.ndarray, v: np.ndarray, pv: np.ndarray) -> np.ndarray:
    """Reactive power the generators of PV buses `pv` produce (Mvar): the bus injection plus the bus's load (sbus holds
    P_gen − S_load with no generator Q)."""
    injection = v[pv] * np.conj(model.ybus[pv, :].dot(v))
    return (injection.imag - sbus_row[pv].imag) * model.base_mva


def _enforce_q_limits(model: GridModel, sbus: np.ndarray, voltages: np.ndarray, converged: np.ndarray, max_iteration: int) -> int:
    """Reactive limits of PV buses, as pandapower's `enforce_q_lims`: per solved row, every PV bus whose generators
    would leave their limits becomes a PQ bus at the limit, and the row is solved again, until none leaves them."""
    if not (np.isfinite(model.pv_q_min_mvar).any() or np.isfinite(model.pv_q_max_mvar).any()):
        return 0
    from lightsim2grid.algorithm import NRSing_KLU

    solver, iterations = NRSing_KLU(), 0
    slack_weights = np.zeros(model.n_bus)
    slack_weights[model.ref] = 1.0 / len(model.ref)
    for k in np.flatnonzero(converged):
        row, v, is_pv = sbus[k].copy(), voltages[k], np.ones(len(model.pv), dtype=bool)
        for _ in range(Q_LIMIT_ROUNDS):
            q = _pv_reactive_mvar(model, row, v, model.pv)
            over, under = is_pv & (q > model.pv_q_max_mvar + 1e-9), is_pv & (q < model.pv_q_min_mvar - 1e-9)
            if not (over.any() or under.any()):
                break
            limit = np.where(over, model.pv_q_max_mvar, model.pv_q_min_mvar)
            switched = over | under
            row[model.pv[switched]] += 1j * limit[switched] / model.base_mva
            is_pv &= ~switched
            pq = np.sort(np.concatenate([model.pq, model.pv[~is_pv]])).astype(np.int32)
            solver.solve(model.ybus, v, row, model.ref, slack_weights, model.pv[is_pv], pq, max_iteration, TOLERANCE_MVA)
            iterations += solver.get_nb_iter()
            if not solver.converged():
                converged[k] = False
                break
            v = solver.get_V()
        voltages[k] = v
    return iterations


def _fixed_point(model: GridModel, sbus: np.ndarray, voltages: np.ndarray, converged: np.ndarray) -> int:
    """Fixed-point (implicit Z-bus) iteration for all rows at once from `voltages`; fills `voltages`/`converged`, returns the rounds.

    On the PQ buses q with the slack buses r fixed: Y_qq·V_q' = conj(S_q / V_q) − Y_qr·V_r. Y_qq is factorised
    once (cached on the model) and each round solves every row's right-hand side in one call. A row is done when
    its largest mismatch of P and Q is below the tolerance, the same test as pandapower's Newton–Raphson. After a
    round, the mismatch at V_q' is exactly (S_q / V_q)·V_q' − S_q (the round's own equation), so rounds need no
    product with Ybus; the rows found done are checked once more at the end with Ybus itself. Rows still open after
    FIXED_POINT_MAX_ROUNDS, or failing that check, are left to Newton–Raphson.
    """
    pq = model.pq
    lu, y_qq, slack_current = model.pq_factor(voltages[0])
    s_q = np.asfortranarray(sbus[:, pq].T)  # buses × rows: the triangular solves take the rows as columns
    v_q = np.asfortranarray(voltages[:, pq].T)
    open_rows = np.arange(len(sbus))
    rounds = 0
    while open_rows.size and rounds < FIXED_POINT_MAX_ROUNDS:
        rounds += 1
        every = open_rows.size == len(sbus)  # no gathering while every row is open (the common case)
        s_open = s_q if every else s_q[:, open_rows]
        with np.errstate(all="ignore"):  # a row running away (voltage collapse) is caught by the mismatch test
            conductance = s_open / (v_q if every else v_q[:, open_rows])  # S / V = conj(I)
        v_open = lu.solve(np.conj(conductance) - slack_current[:, None])
        if every:
            v_q = v_open
        else:
            v_q[:, open_rows] = v_open
        with np.errstate(all="ignore"):
            done = _largest_mismatch(conductance * v_open - s_open) < TOLERANCE_MVA
        converged[open_rows[done]] = True
        open_rows = open_rows[~done]
    done = np.flatnonzero(converged)
    v_done = v_q[:, done]
    checked = _largest_mismatch(v_done * np.conj(y_qq.dot(v_done) + slack_current[:, None]) - s_q[:, done]) < TOLERANCE_MVA
    converged[done[~checked]] = False
    done = done[checked]
    if len(done) == len(sbus):
        voltages[:, pq] = v_q.T
    else:  # the rows left open keep their start for Newton–Raphson
        voltages[np.ix_(done, pq)] = v_q[:, done].T
    return rounds


def _largest_mismatch(mismatch: np.ndarray) -> np.ndarray:
    """Per column, the largest |ΔP| or |ΔQ| (pu): pandapower's convergence test."""
    return np.maximum(np.abs(mismatch.real), np.abs(mismatch.imag)).max(axis=0)


def _newton_rows(model: GridModel, sbus: np.ndarray, rows: np.ndarray, max_iteration: int, voltages: np.ndarray,
                 converged: np.ndarray, check) -> int:
    """Newton–Raphson (lightsim2grid's KLU solver) for `rows` from their start in `voltages`, or warm from the row before."""
    from lightsim2grid.algorithm import NRSing_KLU

    solver = NRSing_KLU()
    slack_weights = np.zeros(model.n_bus)
    slack_weights[model.ref] = 1.0 / len(model.ref)
    start = voltages[rows].copy()
    v = start[0]
    iterations = 0
    for done, k in enumerate(rows):
        solver.solve(model.ybus, v, sbus[k], model.ref, slack_weights, model.pv, model.pq, max_iteration, TOLERANCE_MVA)
        iterations += solver.get_nb_iter()
        if not solver.converged() and len(model.pv):  # transmission grids: a warm start far from the row's state
            solver.solve(model.ybus, dc_start(model, sbus[k]), sbus[k], model.ref, slack_weights, model.pv, model.pq, max_iteration,
                         TOLERANCE_MVA)
            iterations += solver.get_nb_iter()
        if solver.converged():
            v = solver.get_V()
            voltages[k], converged[k] = v, True
        else:
            voltages[k] = start[done]
            v = start[min(done + 1, len(rows) - 1)]
        if check is not None and done % 1000 == 999:
            check()
    return iterations


def dc_start(model: GridModel, sbus_row: np.ndarray) -> np.ndarray:
    """A DC load-flow start (as pandapower's `init="dc"`): angles from B·θ = P with the slack angles fixed, magnitudes of
    the model's start (setpoints at PV and slack buses)."""
    angle = np.angle(model.v0)
    free = np.sort(np.concatenate([model.pv, model.pq]))
    b = sparse.csr_matrix(-model.ybus.imag)
    rhs = sbus_row.real[free] - b[free][:, model.ref].dot(angle[model.ref])
    angle = angle.copy()
    angle[free] = splu(sparse.csc_matrix(b[free][:, free])).solve(rhs)
    return np.abs(model.v0) * np.exp(1j * angle)


def bus_loads(model: GridModel, inputs: StepInputs) -> np.ndarray:
    """Net load per internal bus and step (MW + j Mvar) from the injections, through the signed incidence matrix."""
    if not len(model.injections):
        return np.zeros((len(inputs.times), model.n_bus), dtype=complex)
    p = model.incidence.T.dot(inputs.p_mw.T).T
    q = model.incidence.T.dot(inputs.q_mvar.T).T
    return np.asarray(p) + 1j * np.asarray(q)


def results_of(model: GridModel, voltages: np.ndarray, s_load: np.ndarray, iterations: int = 0) -> StepResults:
    """Bus, branch and total results from internal voltages (steps × buses), with pandapower's formulas."""
    base = model.base_mva
    i_from = model.yf.dot(voltages.T).T
    i_to = model.yt.dot(voltages.T).T
    s_from = voltages[:, model.f_bus] * np.conj(i_from) * base
    s_to = voltages[:, model.t_bus] * np.conj(i_to) * base
    with np.errstate(invalid="ignore", divide="ignore"):
        i_from_ka = np.abs(s_from) / (np.abs(voltages[:, model.f_bus]) * model.base_kv[model.f_bus]) / SQRT3
        i_to_ka = np.abs(s_to) / (np.abs(voltages[:, model.t_bus]) * model.base_kv[model.t_bus]) / SQRT3

    def branch(rows: np.ndarray) -> dict[str, np.ndarray]:
        ok = rows >= 0
        take = np.where(ok, rows, 0)

        def pick(values):
            out = values[:, take]
            out[:, ~ok] = np.nan
            return out

        return {"p_from_mw": pick(s_from.real), "q_from_mvar": pick(s_from.imag), "p_to_mw": pick(s_to.real),
                "q_to_mvar": pick(s_to.imag), "i_from_ka": pick(i_from_ka), "i_to_ka": pick(i_to_ka)}

    line = branch(model.line_rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        line["i_ka"] = np.fmax(line["i_from_ka"], line["i_to_ka"])
        line["loading_percent"] = line["i_ka"] / model.line_i_max_ka * 100
    trafo = branch(model.trafo_rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        trafo["i_ka"] = np.fmax(trafo["i_from_ka"], trafo["i_to_ka"])
        trafo["loading_percent"] = np.fmax(trafo["i_from_ka"] * model.trafo_vn_kv[:, 0],
                                           trafo["i_to_ka"] * model.trafo_vn_kv[:, 1]) * SQRT3 / model.trafo_rating * 100
    for values in (line, trafo):
        values["pl_mw"] = values["p_from_mw"] + values["p_to_mw"]
        values["ql_mvar"] = values["q_from_mvar"] + values["q_to_mvar"]
    take = np.where(model.bus_ppci >= 0, model.bus_ppci, 0)
    isolated = model.bus_ppci < 0
    vm = np.abs(voltages)[:, take]
    va = np.degrees(np.angle(voltages))[:, take]
    bus_p = s_load.real[:, take]
    bus_q = s_load.imag[:, take]
    for values in (vm, va, bus_p, bus_q):
        values[:, isolated] = np.nan
    s_ref = voltages[:, model.ref] * np.conj(model.ybus[model.ref, :].dot(voltages.T).T) * base + s_load[:, model.ref]
    totals = {
        "p_ext_grid_mw": s_ref.real.sum(axis=1),
        "q_ext_grid_mvar": s_ref.imag.sum(axis=1),
        "pl_mw": np.nansum(line["pl_mw"], axis=1) + np.nansum(trafo["pl_mw"], axis=1),
        "ql_mvar": np.nansum(line["ql_mvar"], axis=1) + np.nansum(trafo["ql_mvar"], axis=1),
        "p_net_load_mw": s_load.real.sum(axis=1),
    }
    return StepResults(vm_pu=vm, va_degree=va, bus_p_mw=bus_p, bus_q_mvar=bus_q, line=line, trafo=trafo, totals=totals,
                       iterations=iterations)
