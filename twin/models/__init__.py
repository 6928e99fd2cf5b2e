"""Twin models: the relational system of record for grids, their assets and their owners."""

from twin.models.assets import (
    ASSET_MODELS,
    EVCharger,
    ExternalGrid,
    Line,
    Load,
    Meter,
    StaticGenerator,
    Storage,
    Switch,
    Transformer,
)
from twin.models.grid import BaseVoltage, Bus, Feeder, Grid, Participant
from twin.models.loadflow import (
    BranchResult,
    BusResult,
    HostingCapacityResult,
    LoadFlowInput,
    LoadFlowRun,
    TimeSeriesChunk,
    Violation,
)

__all__ = [
    "ASSET_MODELS",
    "BaseVoltage",
    "BranchResult",
    "Bus",
    "BusResult",
    "EVCharger",
    "ExternalGrid",
    "Feeder",
    "Grid",
    "HostingCapacityResult",
    "Line",
    "Load",
    "LoadFlowInput",
    "LoadFlowRun",
    "Meter",
    "Participant",
    "StaticGenerator",
    "Storage",
    "Switch",
    "TimeSeriesChunk",
    "Transformer",
    "Violation",
]
