"""Datasets of the hub: one per grid (or feeder) and data category, with the one way to name them.

A dataset is what the catalog lists and a request asks for: the data of one category (telemetry, topology …)
of one provider's grid, or of one feeder of it. Its id is `g<grid id>-<category>` or
`g<grid id>-f<feeder id>-<category>`: stable, short, and meaningless outside the catalog that lists it (an id
that is not in a caller's catalog is answered like one that does not exist).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sharing.models import Agreement, DataCategory, DatasetOffer
from sharing.scope import scope_grids
from twin import models as twin

DATASET_ID = re.compile(r"^g(?P<grid>[1-9][0-9]{0,17})(?:-f(?P<feeder>[1-9][0-9]{0,17}))?-(?P<category>[a-z_]{1,40})$")


@dataclass(frozen=True, order=True)
class DatasetKey:
    """Which data a dataset is: a grid, optionally one of its feeders, and a data category."""

    grid_id: int
    feeder_id: int | None
    category: str

    @property
    def id(self) -> str:
        feeder = f"-f{self.feeder_id}" if self.feeder_id is not None else ""
        return f"g{self.grid_id}{feeder}-{self.category}"


def parse_dataset_id(text: str) -> DatasetKey | None:
    """The key a dataset id names, or None when the text is not a dataset id."""
    found = DATASET_ID.match(text) if isinstance(text, str) else None
    if found is None or found["category"] not in DataCategory.values:
        return None
    feeder = found["feeder"]
    return DatasetKey(int(found["grid"]), int(feeder) if feeder else None, found["category"])


def _keys(grid_ids: list[int], feeder_iris: list[str], categories: list[str]) -> list[DatasetKey]:
    if feeder_iris:
        feeders = twin.Feeder.objects.filter(grid_id__in=grid_ids, iri__in=feeder_iris).values_list("grid_id", "id")
        places = [(grid_id, feeder_id) for grid_id, feeder_id in feeders]
    else:
        places = [(grid_id, None) for grid_id in grid_ids]
    return sorted(DatasetKey(grid_id, feeder_id, category) for grid_id, feeder_id in places for category in categories)


def offer_datasets(offer: DatasetOffer) -> list[DatasetKey]:
    """The datasets an offer makes requestable: each offered category of each listed feeder, or of the whole grid."""
    return _keys([offer.grid_id], offer.feeder_iris, offer.categories)


def agreement_datasets(agreement: Agreement) -> list[DatasetKey]:
    """The datasets an agreement grants: each permitted category of each listed feeder, or of each covered grid."""
    return _keys(list(scope_grids(agreement).values_list("id", flat=True)), agreement.feeder_iris, agreement.categories)


def dataset_place(key: DatasetKey) -> tuple[twin.Grid, twin.Feeder | None] | None:
    """The grid (and feeder) a key names, or None when they do not exist (or the feeder is not the grid's)."""
    grid = twin.Grid.objects.filter(pk=key.grid_id).select_related("owner").first()
    if grid is None:
        return None
    if key.feeder_id is None:
        return grid, None
    feeder = twin.Feeder.objects.filter(pk=key.feeder_id, grid=grid).first()
    return (grid, feeder) if feeder is not None else None
