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

__all__ = [
    "ASSET_MODELS",
    "BaseVoltage",
    "Bus",
    "EVCharger",
    "ExternalGrid",
    "Feeder",
    "Grid",
    "Line",
    "Load",
    "Meter",
    "Participant",
    "StaticGenerator",
    "Storage",
    "Switch",
    "Transformer",
]
