"""Model fields of the twin's grid data."""

import math

from django.db import models


class FiniteFloatField(models.FloatField):
    """A float column that never stores NaN or ±infinity: the shapes refuse them at the edge (gts:FiniteNumbers);
    this is the last line, so a path that skipped them fails its write instead of storing what no JSON answer
    can hold. Migrations see a plain FloatField (no schema change)."""

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{self.model.__name__}.{self.name} cannot store the non-finite number {value!r}")
        return value

    def deconstruct(self):
        name, _, args, kwargs = super().deconstruct()
        return name, "django.db.models.FloatField", args, kwargs
