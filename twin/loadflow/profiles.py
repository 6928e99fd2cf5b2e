"""SimBench relative profiles (15-minute factors of a reference year), cached per process and on disk.

`simbench.get_simbench_net(code)` re-reads CSVs for 4–5 s; the profiles alone, pickled, load in tens of
milliseconds. So a process reads a code's profiles once, from `var/cache/simbench-profiles/` when an
earlier process left them there, else from simbench (and leaves them there).
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from django.conf import settings

if TYPE_CHECKING:  # the frames come from simbench, which imports pandas itself; a cached profile set needs neither
    import pandas as pd

logger = logging.getLogger(__name__)
PROFILE_STEP = timedelta(minutes=15)


@dataclass(frozen=True)
class ProfileSet:
    """Relative profiles by name: `p[name]` / `q[name]` are factors per 15-minute step of the reference year."""

    p: dict[str, np.ndarray]
    q: dict[str, np.ndarray]
    steps: int

    def rows(self, times: list[datetime]) -> np.ndarray:
        """Profile rows for timestamps: the step of the year they fall in (the reference year repeats)."""
        return np.array([int((t - t.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)) // PROFILE_STEP)
                         for t in times], dtype=np.int64) % self.steps

    def factors(self, element: str, name: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(p factors, q factors) of one profile at the given rows, or None when the profile does not exist.

        Loads have separate p and q profiles; generators and storage have none for q (it keeps its declared value).
        """
        key = (element, name)
        if key not in self.p:
            return None
        q = self.q.get(key)
        return self.p[key][rows], None if q is None else q[rows]


def simbench_code(grid_source: str) -> str | None:
    """The SimBench code of a grid imported with `import_grid --simbench CODE` (source `simbench:CODE`)."""
    return grid_source.removeprefix("simbench:") if grid_source.startswith("simbench:") else None


def _cache_path(code: str) -> Path:
    return Path(settings.BASE_DIR) / "var" / "cache" / "simbench-profiles" / f"{code}.pkl"


def _from_frames(profiles: dict[str, pd.DataFrame]) -> ProfileSet:
    p, q = {}, {}
    steps = 0
    for table, elements in (("load", ("load",)), ("renewables", ("sgen",)), ("powerplants", ("sgen", "gen")), ("storage", ("storage",))):
        frame = profiles.get(table)
        if frame is None or frame.empty:
            continue
        steps = max(steps, len(frame))
        for column in frame.columns:
            if column == "time":
                continue
            values = frame[column].to_numpy(np.float64)
            for element in elements:
                if column.endswith("_pload"):
                    p[(element, column.removesuffix("_pload"))] = values
                elif column.endswith("_qload"):
                    q[(element, column.removesuffix("_qload"))] = values
                else:
                    p[(element, column)] = values
    return ProfileSet(p=p, q=q, steps=steps)


@lru_cache(maxsize=8)
def simbench_profiles(code: str) -> ProfileSet | None:
    """The relative profiles of a SimBench grid, or None when the code is unknown to simbench."""
    path = _cache_path(code)
    if path.exists():
        with path.open("rb") as handle:
            return pickle.load(handle)  # noqa: S301  # nosec B301  # our own cache file (var/cache), code from import_grid --simbench, not a request
    import simbench

    try:
        profiles = simbench.get_simbench_net(code).profiles
    except Exception:  # simbench raises assorted errors for unknown codes
        logger.warning("no SimBench profiles for %s", code)
        return None
    found = _from_frames(profiles)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    with partial.open("wb") as handle:
        pickle.dump(found, handle, protocol=pickle.HIGHEST_PROTOCOL)
    partial.replace(path)
    return found


def simbench_reference(net, step: int):
    """The reference of the correctness check: pandapower itself on a copy of an original SimBench net at one profile step.

    The step's absolute profile values replace the nets' p_mw / q_mvar; taps are applied
    (`tap_changer_type` "Ratio", simbench issue #69) as the twin applies them; lightsim2grid=False.
    """
    import copy

    import pandapower as pp
    import simbench

    net = copy.deepcopy(net)
    net.trafo["tap_changer_type"] = "Ratio"
    for (element, column), frame in simbench.get_absolute_values(net, profiles_instead_of_study_cases=True).items():
        if frame.shape[1]:
            net[element].loc[frame.columns, column] = frame.iloc[step].to_numpy()
    pp.runpp(net, calculate_voltage_angles=True, lightsim2grid=False, tolerance_mva=1e-8)
    return net
