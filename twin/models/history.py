"""The history of a grid: one `GridVersion` per write that changed its content; the past never changes.

A version keeps the grid's canonical content (every live row of every grid model, references as IRIs, see
`twin.history`) compressed, its SHA-256 (`content_hash`), who wrote it and a summary of what changed since the
version before. Finished load-flow runs pin the version they solved (`LoadFlowRun.version`), so their results and
pictures stay those of that version whatever is written after them.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from twin.models.grid import Grid, Participant


class GridVersion(models.Model):
    """Version `number` (1, 2, …) of a grid: its content as of one write, the hash of that content and what changed.

    `summary` holds the counts and the IRIs of the assets `added`, `changed` (with the names of the fields that
    changed) and `retired` against version `number - 1`. `snapshot` is the zlib-compressed canonical JSON of the
    content (`twin.history.grid_content`), enough to export the version as RDF and to build its load-flow model.
    """

    grid = models.ForeignKey(Grid, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by_participant = models.ForeignKey(Participant, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                               help_text="Provenance: the participant the write acted for.")
    created_by_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by_credential = models.CharField(max_length=200, blank=True, help_text="The credential the write came with (its label).")
    via = models.CharField(max_length=20, help_text="Which path wrote it: upload, changes, admin, import, replay, migration, …")
    content_hash = models.CharField(max_length=64, help_text="SHA-256 of the canonical content (hex).")
    summary = models.JSONField(default=dict, blank=True)
    snapshot = models.BinaryField(help_text="zlib-compressed canonical JSON of the content.")

    class Meta:
        ordering = ["grid", "number"]
        constraints = [models.UniqueConstraint(fields=["grid", "number"], name="grid_version_unique")]

    def __str__(self) -> str:
        return f"{self.grid} v{self.number}"
