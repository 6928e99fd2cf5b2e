"""Writes to the twin: importing a grid graph (all or nothing, idempotent by IRI) and applying changes.

Ownership is provenance, not a writable field. Two rules of every write, each stated once here:

* **Naming an owner** (`_participant_ids`): an asset's `gt:owner` is the grid's owner, or a participant that
  consented to own assets in this grid (an `OwnerConsent` for the grid's IRI). Anything else is refused with
  one message, whether or not the named participant exists, so a refusal reveals nothing about who is registered.
  The owner field never moves readings: those belong to `Meter.telemetry_owner`, which only ingest sets.
* **Retire, never delete, what anything refers to** (`_stale_rows_remove`): a re-publish that drops a row that has
  readings (a meter), results (a bus, line, transformer, load … named by a load-flow run) or that a kept row refers
  to retires it (`retired_at`, out of service) instead of deleting it; retired rows are left out of the grid's
  content, RDF form, versions and load flows and out of the re-publish diff, and an upload that brings the IRI back
  un-retires the same row.

Every write ends by recording the grid's next version (`twin.history.grid_version_record`) when its content changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import CASCADE, DO_NOTHING, Exists, OuterRef, Q
from django.utils import timezone
from rdflib import Graph

from ontology import limits
from ontology.document import RdfDocument, term_key
from ontology.errors import OntologyError
from ontology.namespaces import GT
from ontology.validation import ValidationReport, Violation, normalise_numbers, validate
from twin import history, models
from twin.history import Author
from twin.rdf_codec import CodecError, GridRows, graph_to_rows, rows_to_graph
from twin.selectors import chunks, grid_rows, neighbourhood_graph

# Write order: whatever a row refers to is written before it.
MODEL_ORDER = ["Feeder", "BaseVoltage", "Bus", *[m.__name__ for m in models.ASSET_MODELS]]
FOREIGN_KEYS = {
    "feeder": "Feeder",
    "base_voltage": "BaseVoltage",
    "owner": "Participant",
    "bus": "Bus",
    "other_bus": "Bus",
    "from_bus": "Bus",
    "to_bus": "Bus",
    "hv_bus": "Bus",
    "mv_bus": "Bus",
    "lv_bus": "Bus",
}
OWNER_REFUSED = "gt:owner names a participant that has not consented to own assets in this grid"


class ShapeViolation(OntologyError):
    """The upload does not conform to the shapes; carries the full SHACL report."""

    reason = "shacl_violation"
    status = 422

    def __init__(self, report: ValidationReport):
        count = sum(v.severity == "Violation" for v in report.violations)
        super().__init__(f"the model does not conform to the gridtwin shapes: {count} violation(s)")
        self.report = report

    def as_dict(self) -> dict:
        return {**super().as_dict(), "conforms": False, **self.report.summary(limit=limits.max_reported_violations())}


class IriConflict(OntologyError):
    """An IRI of the upload already belongs to another grid."""

    reason = "iri_conflict"
    status = 409


@dataclass
class ImportResult:
    """What an import did: per model, how many rows were created, updated and deleted (and, for meters with
    readings that a re-publish dropped, how many were `retired` instead of deleted)."""

    grid: models.Grid
    created: bool
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.created or any(any(c.values()) for c in self.counts.values())

    def as_dict(self) -> dict:
        return {"id": self.grid.pk, "iri": self.grid.iri, "name": self.grid.name, "version": self.grid.version,
                "created": self.created, "changed": self.changed, "counts": self.counts}


def _model(name: str):
    return getattr(models, name)


def _check(graph: Graph | RdfDocument, *, context: Graph | None = None, partial: bool = False) -> GridRows:
    """Validate a graph (a partial one with its stored `context`) and read it into rows, or raise ShapeViolation."""
    document = normalise_numbers(RdfDocument.from_graph(graph))
    focus = {term_key(s) for s in document.subjects} if partial else None
    report = validate(document, context=RdfDocument.from_graph(context) if context is not None else None, focus_nodes=focus)
    if not report.conforms:
        raise ShapeViolation(report)
    try:
        return graph_to_rows(document, require_grid=not partial)
    except CodecError as exc:
        raise ShapeViolation(ValidationReport([Violation(focus_node=exc.node, message=exc.message)])) from exc


@transaction.atomic
def grid_import_graph(*, graph: Graph | RdfDocument, participant: models.Participant, source: str = "",
                      author: Author | None = None) -> ImportResult:
    """Validate a whole-grid graph and make the stored grid equal to it, or write nothing.

    Idempotent by IRI: the same graph twice changes nothing; an edited graph updates rows in place
    and rows whose IRI is no longer in the graph are deleted, or retired when something refers to them
    (module docstring). A change of content records the grid's next version, by `author` (default: the
    participant, via the source's kind). Asset owners other than the uploader need their consent. Raises
    ShapeViolation (422) or IriConflict (409).
    """
    rows = _check(graph)
    grid_row = rows.grid
    if grid_row["owner"] and grid_row["owner"] != participant.iri:
        raise ShapeViolation(ValidationReport([Violation(
            focus_node=grid_row["iri"], path=str(GT.owner), value=grid_row["owner"],
            message="a participant can only publish its own grids: gt:owner must be the uploading participant")]))
    history.lock_grid_iri(grid_row["iri"])
    grid = models.Grid.objects.select_for_update().filter(iri=grid_row["iri"]).first()
    created = grid is None
    if grid is None:
        grid = models.Grid.objects.create(iri=grid_row["iri"], name=grid_row["name"], owner=participant, source=source)
    elif grid.owner_id != participant.pk:
        raise IriConflict("the grid IRI is already used by another participant's grid", node=grid_row["iri"])
    result = ImportResult(grid=grid, created=created)
    _write_rows(grid, rows, result, delete_missing=True)
    if not created and (result.changed or grid.name != grid_row["name"]):
        grid.name = grid_row["name"]
        grid.source = source or grid.source
        grid.save(update_fields=["name", "source", "updated_at"])
    history.grid_version_record(grid=grid, author=author or Author(via=source.split(":")[0] or "import", participant=participant))
    return result


@transaction.atomic
def grid_apply_changes(*, grid: models.Grid, graph: Graph | RdfDocument, author: Author | None = None) -> ImportResult:
    """Upsert the assets a partial graph describes into an existing grid, validating only them.

    Every node in `graph` is judged with its stored neighbourhood (the buses, voltages, feeders and
    assets it refers to), not the whole grid, so a feeder-sized change validates in well under a second.
    Each changed asset must be described completely, with its terminals. Nothing is deleted; a retired
    row described again is un-retired. Asset owners other than the grid's owner need their consent. A change of
    content records the grid's next version, by `author` (default: the grid's owner, via `changes`).
    """
    history.lock_grid_iri(grid.iri)
    grid = models.Grid.objects.select_for_update().get(pk=grid.pk)
    document = RdfDocument.from_graph(graph)
    rows = _check(document, context=neighbourhood_graph(grid, document), partial=True)
    result = ImportResult(grid=grid, created=False)
    _write_rows(grid, rows, result, delete_missing=False)
    if result.changed:
        grid.save(update_fields=["updated_at"])
    history.grid_version_record(grid=grid, author=author or Author(via="changes", participant=grid.owner))
    return result


def _write_rows(grid: models.Grid, rows: GridRows, result: ImportResult, *, delete_missing: bool) -> None:
    """Upsert the rows into the grid (whatever a row refers to first) and, with `delete_missing`, remove the rows
    the upload no longer has, in reverse order (what refers to a row goes before it): deleted, or retired."""
    ids = {"Participant": _participant_ids(rows, grid)}
    for name in MODEL_ORDER:
        model = _model(name)
        incoming = rows.rows.get(name, [])
        _refuse_foreign_iris(model, grid, [r["iri"] for r in incoming])
        existing = {r["iri"]: r for r in model.objects.filter(grid=grid).values()}
        result.counts[name] = _upsert(model, grid, incoming, existing, ids)
        if name in ("Feeder", "BaseVoltage", "Bus"):
            ids[name] = dict(model.objects.filter(grid=grid).values_list("iri", "id"))
    with_results = _ResultIris(grid)
    for name in reversed(MODEL_ORDER):
        model = _model(name)
        keep = {r["iri"] for r in rows.rows.get(name, [])}
        current = model.objects.filter(grid=grid, retired_at__isnull=True)  # retired already: not in the diff, nothing to do again
        stale = [(pk, iri) for iri, pk in current.values_list("iri", "id") if iri not in keep] if delete_missing else []
        result.counts[name]["retired"], result.counts[name]["deleted"] = _stale_rows_remove(model, stale, with_results)


class _ResultIris:
    """Which IRIs the grid's load-flow runs name in their results, asked for the rows a write removes only.

    Snapshot results are rows (branch results, inputs, violations: by IRI; bus results by foreign key, see
    `_referred_ids`); a time series keeps its results in arrays in the order of its `layout`. A run's layout is that
    of the version it pinned, so one layout per pinned version is read (and each what-if's, whose scenario may have
    changed it), not one per run; runs stored before versions existed are read one by one.
    """

    def __init__(self, grid: models.Grid):
        self.runs = models.LoadFlowRun.objects.filter(grid=grid)
        self.layouts: set[str] | None = None

    def named(self, iris: list[str]) -> set[str]:
        """The IRIs among `iris` that some run's results name."""
        found = set(iris) & self._layout_iris()
        for model in (models.BranchResult, models.LoadFlowInput, models.Violation):
            for part in chunks(sorted(set(iris) - found)):
                named = model.objects.filter(run__in=self.runs, asset_iri__in=part).order_by().values_list("asset_iri", flat=True)
                found.update(named.distinct())
        return found

    def _layout_iris(self) -> set[str]:
        if self.layouts is None:
            solved = self.runs.exclude(layout={})
            layouts = [solved.filter(version_id=pk).exclude(parameters__has_key="scenario").values_list("layout", flat=True).first()
                       for pk in solved.exclude(version=None).order_by().values_list("version_id", flat=True).distinct()]
            layouts += solved.filter(Q(version=None) | Q(parameters__has_key="scenario")).values_list("layout", flat=True)
            self.layouts = {iri for layout in layouts if layout for iris in layout.values() for iri in iris}
        return self.layouts


def _stale_rows_remove(model, stale: list[tuple[int, str]], with_results: _ResultIris) -> tuple[int, int]:
    """Remove rows a write dropped (id, IRI): retire those that anything refers to, delete the rest; (retired, deleted).

    A row is referred to when a run's results name its IRI, when a row of another table points at it (a result row,
    or a grid row kept because it was retired: the rows referring to it are removed first) or, for a meter, when it
    has readings (`_stale_meters_remove`).
    """
    if not stale:
        return 0, 0
    ids = [pk for pk, _ in stale]
    named = with_results.named([iri for _, iri in stale])
    referred = {pk for pk, iri in stale if iri in named} | _referred_ids(model, ids)
    if model is models.Meter:
        retired_meters, _ = _stale_meters_remove([pk for pk in ids if pk not in referred])
        referred |= set(retired_meters)
    now = timezone.now()
    life = {"retired_at": now, **({"in_service": False} if any(f.name == "in_service" for f in model._meta.fields) else {})}
    for part in chunks(sorted(referred)):
        model.objects.filter(id__in=part).update(**life)
    gone = [pk for pk in ids if pk not in referred]
    for part in chunks(gone):
        model.objects.filter(id__in=part).delete()
    return len(referred), len(gone)


@transaction.atomic
def grid_parts_remove(*, rows, author: Author) -> dict[str, int]:
    """Remove grid rows of one model (the admin's delete) by the rule of every write: what anything refers to is retired,
    the rest deleted; then each grid touched records its next version. Live rows that depend on a removed row go the same
    way first (its lines and loads with a bus), or lose the reference where it is optional (a feeder)."""
    model = rows.model
    by_grid: dict[int, list[tuple[int, str]]] = {}
    for pk, iri, grid_id in rows.filter(retired_at__isnull=True).values_list("id", "iri", "grid_id"):
        by_grid.setdefault(grid_id, []).append((pk, iri))
    counts = {"retired": 0, "deleted": 0}
    for grid in models.Grid.objects.filter(pk__in=list(by_grid)).order_by("id"):
        history.lock_grid_iri(grid.iri)
        with_results = _ResultIris(grid)
        _dependents_remove(model, [pk for pk, _ in by_grid[grid.pk]], with_results, counts)
        retired, deleted = _stale_rows_remove(model, by_grid[grid.pk], with_results)
        counts["retired"] += retired
        counts["deleted"] += deleted
        history.grid_version_record(grid=grid, author=author)
    return counts


def _dependents_remove(model, ids: list[int], with_results: _ResultIris, counts: dict[str, int]) -> None:
    """Before rows of `model` go, the live grid rows that refer to them: removed (references that cascade) or unset."""
    for relation in model._meta.get_fields(include_hidden=True):
        dependent = relation.related_model
        if not relation.one_to_many or not relation.auto_created or not any(f.name == "retired_at" for f in dependent._meta.fields):
            continue
        live = dependent.objects.filter(**{f"{relation.field.attname}__in": ids}, retired_at__isnull=True)
        if relation.on_delete is CASCADE:
            found = list(live.values_list("id", "iri"))
            _dependents_remove(dependent, [pk for pk, _ in found], with_results, counts)
            retired, deleted = _stale_rows_remove(dependent, found, with_results)
            counts["retired"] += retired
            counts["deleted"] += deleted
        else:
            live.update(**{relation.field.attname: None})


def _referred_ids(model, ids: list[int]) -> set[int]:
    """The ids among `ids` that a row of another table points at by foreign key (results, readings, kept grid rows)."""
    found: set[int] = set()
    for relation in model._meta.get_fields(include_hidden=True):  # results point at buses with related_name="+": hidden
        if not relation.one_to_many or not relation.auto_created or relation.on_delete is DO_NOTHING:
            continue  # readings (no constraint, a scan of all of a meter's readings): the meters' own rule asks for them
        column = relation.field.attname
        for part in chunks(ids):
            referring = relation.related_model._base_manager.filter(**{f"{column}__in": part}).order_by()
            found.update(referring.values_list(column, flat=True).distinct())
    return found


def _stale_meters_remove(meter_ids: list[int]) -> tuple[list[int], list[int]]:
    """The meters a re-publish dropped that have readings, to retire, and the ids of the others: (with, without).

    A meter has readings when ingest fixed its `telemetry_owner` (or, for readings stored before provenance was
    recorded, when it has a latest value). The rows are locked first: a worker storing a meter's first readings
    holds the same row lock while it sets `telemetry_owner`, so a meter is never deleted under readings being
    written, and the worker finds a meter deleted before it came (ingest.services, `_points_claim`).
    """
    with_readings: list[int] = []
    without: list[int] = []
    for part in chunks(sorted(meter_ids)):
        locked = dict(models.Meter.objects.select_for_update().filter(id__in=part).order_by("id").values_list("id", "telemetry_owner_id"))
        measured = set(models.LatestReading.objects.filter(point_id__in=[pk for pk, owner in locked.items() if owner is None])
                       .values_list("point_id", flat=True).distinct())
        for pk, owner in locked.items():
            (with_readings if owner is not None or pk in measured else without).append(pk)
    return with_readings, without


def _participant_ids(rows: GridRows, grid: models.Grid) -> dict[str, int]:
    """IRI → id of the participants the rows name as asset owners, or ShapeViolation (422) when one may not be named.

    The rule: an asset's `gt:owner` is the grid's owner, or a participant with an `OwnerConsent` for this grid's
    IRI. A named IRI that is no registered participant gets the same violation as one without consent, so the
    answer does not tell whether the participant exists.
    """
    wanted = {r["owner"] for name in rows.rows for r in rows.rows[name] if r.get("owner")}
    if not wanted:
        return {}
    consented = Exists(models.OwnerConsent.objects.filter(owner=OuterRef("pk"), grid_iri=grid.iri))
    found = dict(models.Participant.objects.filter(iri__in=wanted).filter(Q(pk=grid.owner_id) | consented)
                 .values_list("iri", "id"))
    refused = wanted - set(found)
    if refused:
        raise ShapeViolation(ValidationReport([
            Violation(focus_node=r["iri"], path=str(GT.owner), value=r["owner"], message=OWNER_REFUSED)
            for name in rows.rows for r in rows.rows[name] if r.get("owner") in refused
        ]))
    return found


def _refuse_foreign_iris(model, grid: models.Grid, iris: list[str]) -> None:
    for part in chunks(iris):
        taken = model.objects.filter(iri__in=part).exclude(grid=grid).values_list("iri", flat=True).first()
        if taken:
            raise IriConflict("this IRI is already used in another grid", node=taken)


def _resolve(row: dict, ids: dict) -> dict:
    """A codec row with IRIs in foreign-key fields turned into `<field>_id` primary keys."""
    values = {}
    for key, value in row.items():
        target = FOREIGN_KEYS.get(key)
        if target is None:
            values[key] = value
        elif value is None:
            values[f"{key}_id"] = None
        else:
            try:
                values[f"{key}_id"] = ids[target][value]
            except KeyError as exc:
                raise ShapeViolation(ValidationReport([Violation(
                    focus_node=row["iri"], path=key, value=value, message=f"{key} refers to a node that is not in the model")])) from exc
    return values


def _upsert(model, grid: models.Grid, incoming: list[dict], existing: dict, ids: dict) -> dict[str, int]:
    to_create, to_update = [], []
    fields: set[str] = set()
    for row in incoming:
        values = _resolve(row, ids)
        values["retired_at"] = None  # a row the upload describes is in use: back from retirement if it was retired
        current = existing.get(row["iri"])
        if current is None:
            to_create.append(model(grid=grid, **values))
            continue
        changed = [k for k, v in values.items() if current.get(k) != v]
        if changed:
            to_update.append(model(id=current["id"], grid=grid, **values))
            fields.update(changed)
    model.objects.bulk_create(to_create, batch_size=2000)
    if to_update:
        model.objects.bulk_update(to_update, sorted(fields), batch_size=1000)
    return {"created": len(to_create), "updated": len(to_update), "deleted": 0}


def participant_for_cli(name_or_iri: str | None) -> models.Participant:
    """The participant a command acts for: an existing one by IRI or name, or a new one with that name.

    Without a name, the local operator participant (created on first use) — the embedded demo's owner.
    """
    name_or_iri = name_or_iri or "Local operator"
    found = models.Participant.objects.filter(iri=name_or_iri).first() or models.Participant.objects.filter(name=name_or_iri).first()
    if found:
        return found
    slug = "-".join(name_or_iri.lower().split())
    return models.Participant.objects.create(iri=f"{settings.GRIDTWIN_BASE_IRI}participant/{slug}", name=name_or_iri)


def twin_object_check(instance) -> ValidationReport:
    """Judge one edited row (before it is saved) by the shapes, together with its stored neighbourhood.

    This is how an admin save is validated: the row is written as RDF exactly as export would write
    it, and only that node and its helper nodes are the focus. The owner rule of uploads holds here too:
    an owner other than the grid's needs that participant's consent.
    """
    grid = instance.grid
    grid_row, rows, iri_of = grid_rows(grid, iris=set())
    iri_of["Participant"] = dict(models.Participant.objects.values_list("id", "iri"))
    rows[type(instance).__name__] = [{f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}]
    document = RdfDocument.from_graph(rows_to_graph(grid_row, rows, iri_of))
    focus = {term_key(s) for s in document.subjects} - {grid.iri}
    context = RdfDocument.from_graph(neighbourhood_graph(grid, document))
    report = validate(normalise_numbers(document), context=context, focus_nodes=focus)
    owner_iri = iri_of["Participant"].get(getattr(instance, "owner_id", None))
    if owner_iri is not None:
        try:
            _participant_ids(GridRows(grid={}, rows={"Asset": [{"iri": instance.iri, "owner": owner_iri}]}), grid)
        except ShapeViolation as exc:
            report.violations.extend(exc.report.violations)
    return report
