"""The history of a grid: canonical content, versions recorded on every write that changes it, diffs, past exports.

The **content** of a grid is its name and owner and every live (not retired) row of every grid model, each as a
dict of its fields with references written as IRIs (the codec's row form, `twin.rdf_codec.graph_to_rows`), rows in
IRI order. Its SHA-256 over the canonical JSON (`content_hash`) does not depend on row ids, so the same grid
written twice hashes the same. A `GridVersion` keeps the content compressed: enough to export the version as
RDF with the same writer as the current export (`content_graph`, so the latest version's export is the current
export byte for byte), to build the load-flow model a run solved (`content_net`), and to diff two versions.

`grid_version_record` is called by every write path (uploads and re-publishes, partial changes, admin saves and
deletes, converter imports, telemetry replay) inside the write's transaction, under the grid IRI's advisory lock:
it records a new version when, and only when, the content's hash differs from the latest version's. Load-flow runs
pin `grid_version_current`, which records first whatever a write outside those paths left, so no write can make a
run solve a model other than the one it records.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections import OrderedDict
from dataclasses import dataclass

import orjson
from django.conf import settings
from django.db import connection, transaction
from rdflib import Graph

from twin import models
from twin.rdf_codec import GridRows, rows_to_graph
from twin.selectors import ROW_MODELS, SKELETON

logger = logging.getLogger(__name__)
NOT_CONTENT = {"id", "grid", "retired_at", "telemetry_owner"}  # identity, membership, life and provenance: not the model
SNAPSHOT_LEVEL = 1  # zlib level of stored contents: level 6 takes 3× as long for a tenth fewer bytes
FINGERPRINT = "fingerprint"  # the key of the write stamp in the latest version's summary (`grid_fingerprint`)
# The write stamp (`grid_fingerprint`): SQL templates, identifiers filled in by psycopg.sql, the grid's id bound.
STAMP_OF_TABLE = ("(SELECT count(*) || ':' || coalesce(sum(hashtextextended(r.ctid::text || r.xmin::text, 0)::numeric), 0) "
                  "FROM {table} r WHERE r.grid_id = %(grid)s)")
OWNERS_OF_TABLE = "SELECT {column} FROM {table} WHERE grid_id = %(grid)s"
OWNERS_OF_GRID = "SELECT owner_id FROM {grid} WHERE id = %(grid)s"
STAMP_OF_GRID = ("SELECT md5(concat_ws(',', (SELECT g.iri || ' ' || g.name || ' ' || g.owner_id FROM {grid} g WHERE g.id = %(grid)s), "
                 "(SELECT string_agg(p.id || ' ' || p.iri, ' ' ORDER BY p.id) FROM {participant} p WHERE p.id IN "
                 "({owners})), {tables}))")
LISTED_CHANGES = 200  # a version's stored summary lists at most this many assets per kind of change (the API diff lists all)


@dataclass(frozen=True)
class Author:
    """Who made a write, as provenance of the version it records: the path (`via`) and, when known, the participant
    it acted for, the user and the credential's label."""

    via: str
    participant: models.Participant | None = None
    user: object | None = None
    credential: str = ""


def lock_grid_iri(iri: str) -> None:
    """Serialise the writes of one grid IRI until the transaction ends, whether or not the grid exists yet.

    `select_for_update` locks rows that exist: two first uploads of a grid both find none, both insert, and the
    second ends in an IntegrityError. A PostgreSQL advisory lock keyed on the IRI's 64-bit hash makes the second
    wait for the first to commit and then update the grid it made (or answer 409 if another participant's); the
    same lock orders the versions of a grid. A session holds it again at no cost. A hash collision only serialises
    two unrelated writes. SQLite (the demo) serialises every write anyway.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"gridtwin.grid:{iri}"])


# --- content ------------------------------------------------------------------------------------------------------


def _references(model) -> list:
    return [f for f in model._meta.concrete_fields if f.many_to_one and f.name not in NOT_CONTENT]


def _plain(model) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields if not f.many_to_one and f.name not in NOT_CONTENT]


def grid_content(grid: models.Grid, *, apps=None) -> dict:
    """The grid's canonical content (module docstring), rows in IRI order; `apps` is a migration's app registry."""
    iri_of: dict[type, dict[int, str]] = {}

    def iris(target) -> dict[int, str]:  # id → IRI of what rows refer to: the grid's feeders, voltages, buses; participants
        if target not in iri_of:
            rows = target.objects.filter(grid_id=grid.pk) if any(f.name == "grid" for f in target._meta.fields) else target.objects
            iri_of[target] = dict(rows.values_list("id", "iri"))
        return iri_of[target]

    rows = {}
    for name in ROW_MODELS:
        try:
            model = apps.get_model("twin", name) if apps is not None else getattr(models, name)
        except LookupError:  # a model newer than the migration that asks
            continue
        plain, references = _plain(model), _references(model)
        found = (model.objects.filter(grid_id=grid.pk, retired_at__isnull=True).order_by("iri")
                 .values_list(*plain, *(f.attname for f in references)))
        maps = [iris(f.related_model) for f in references]
        names = [*plain, *(f.name for f in references)]
        listed = [dict(zip(names, (*row[: len(plain)], *(m.get(pk) for m, pk in zip(maps, row[len(plain):], strict=True))),
                           strict=True)) for row in found]
        if listed:
            rows[name] = listed
    owner = iris(grid._meta.get_field("owner").related_model).get(grid.owner_id)
    return {"grid": {"iri": grid.iri, "name": grid.name, "owner": owner}, "rows": rows}


def content_bytes(content: dict) -> bytes:
    """The content as canonical JSON (keys sorted, rows in IRI order, floats exact): what is hashed and stored."""
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


def content_hash(content: dict) -> str:
    """SHA-256 (hex) of the canonical JSON: independent of row ids and of the order of writes."""
    return hashlib.sha256(content_bytes(content)).hexdigest()


def snapshot_pack(content: dict) -> bytes:
    return zlib.compress(content_bytes(content), SNAPSHOT_LEVEL)


def snapshot_unpack(blob) -> dict:
    return orjson.loads(zlib.decompress(bytes(blob)))


_CONTENTS: OrderedDict[tuple[int, str], dict] = OrderedDict()
_CONTENTS_CACHED = 8


def version_content(version: models.GridVersion) -> dict:
    """The content a version recorded (cached per process by id and hash: versions never change; do not mutate it)."""
    key = (version.pk, version.content_hash)
    found = _CONTENTS.get(key)
    if found is None:
        blob = version.snapshot if "snapshot" not in version.get_deferred_fields() else \
            models.GridVersion.objects.values_list("snapshot", flat=True).get(pk=version.pk)
        found = _CONTENTS[key] = snapshot_unpack(blob)
        while len(_CONTENTS) > _CONTENTS_CACHED:
            _CONTENTS.popitem(last=False)
    _CONTENTS.move_to_end(key)
    return found


# --- recording versions -------------------------------------------------------------------------------------------


def grid_version_record(*, grid: models.Grid, author: Author, apps=None) -> models.GridVersion | None:
    """Record the grid's content as its next version if it differs from the latest version's; None when it does not.

    Call it inside the write's transaction after the rows are written: it takes the grid IRI's advisory lock, so two
    writes of one grid get consecutive numbers, and sets `Grid.version` to the new number. The latest version keeps the
    grid's write stamp (`grid_fingerprint`) of the rows it was recorded from, so `grid_version_current` can tell
    without reading the content that nothing was written since.
    """
    versions = apps.get_model("twin", "GridVersion") if apps is not None else models.GridVersion
    with transaction.atomic():
        lock_grid_iri(grid.iri)
        stamp = grid_fingerprint(grid) if apps is None else None
        content = grid_content(grid, apps=apps)
        if stamp is not None and grid_fingerprint(grid) != stamp:
            stamp = None  # written to while the content was read (outside the lock): the next check reads it again
        encoded = content_bytes(content)
        digest = hashlib.sha256(encoded).hexdigest()
        latest = versions.objects.filter(grid_id=grid.pk).order_by("-number").defer("snapshot").first()
        if latest is not None and latest.content_hash == digest:
            if stamp is not None and latest.summary.get(FINGERPRINT) != stamp:
                versions.objects.filter(pk=latest.pk).update(summary={**latest.summary, FINGERPRINT: stamp})
            return None
        before = snapshot_unpack(versions.objects.values_list("snapshot", flat=True).get(pk=latest.pk)) if latest is not None else None
        number = latest.number + 1 if latest is not None else max(grid.version, 1)
        user = author.user if getattr(author.user, "is_authenticated", False) else None
        summary = diff_summary(content_diff(before, content))
        if stamp is not None:
            summary[FINGERPRINT] = stamp
        version = versions.objects.create(
            grid_id=grid.pk, number=number, created_by_participant_id=getattr(author.participant, "pk", None),
            created_by_user_id=getattr(user, "pk", None), created_by_credential=author.credential[:200], via=author.via,
            content_hash=digest, summary=summary, snapshot=zlib.compress(encoded, SNAPSHOT_LEVEL))
        type(grid).objects.filter(pk=grid.pk).update(version=number)
        grid.version = number
    if apps is None:
        model_prepare_after_commit(grid.pk)
    return version


def model_prepare_after_commit(grid_id: int) -> None:
    """Once the write commits, a worker builds the grid's load-flow model into the disk cache (GRIDTWIN_LOADFLOW_PREPARE_ON_WRITE),
    so the first run after the write does not pay for it. A broker that cannot take the message costs only that head start."""
    if not settings.GRIDTWIN_LOADFLOW_PREPARE_ON_WRITE:
        return

    def publish() -> None:
        from twin.tasks import loadflow_model_prepare  # the task module imports the load-flow engine: only where it is used

        try:
            loadflow_model_prepare.delay(grid_id)
        except Exception:  # the write has committed: the first run builds the model instead
            logger.warning("could not ask a worker to prepare the load-flow model of grid %s", grid_id, exc_info=True)

    transaction.on_commit(publish)


def grid_version_current(grid: models.Grid) -> models.GridVersion:
    """The version of the grid's content now, to pin a run to: the latest, after recording whatever changed since.

    Where the grid's write stamp still equals the one the latest version kept (PostgreSQL), nothing was written since
    and the content is not read; otherwise (a write outside the recording paths, or SQLite) it is recorded first.
    """
    latest = models.GridVersion.objects.defer("snapshot").filter(grid=grid).order_by("-number").first()
    stamp = latest.summary.get(FINGERPRINT) if latest is not None else None
    if stamp is not None and stamp == grid_fingerprint(grid):
        return latest
    grid_version_record(grid=grid, author=Author(via="unrecorded"))
    return models.GridVersion.objects.defer("snapshot").filter(grid=grid).latest("number")


def grid_fingerprint(grid: models.Grid) -> str | None:
    """The grid's write stamp, computed by PostgreSQL (~60 ms on the 10k-bus grid, where reading and hashing the content
    takes 2–3 s); None on other databases.

    Per table of the grid's models, the number of its rows (retired ones too) and the sum of a 64-bit hash of each row
    version's place and writer (`ctid`, `xmin`); the grid's IRI, name and owner; the ids and IRIs of the participants its
    rows name. Every INSERT or UPDATE makes a new row version in a new place — within one transaction too, where `xmin`
    stays the same — and a DELETE lowers the count, so every write that can change the content changes the stamp. So do
    writes that leave the content as it was (a meter's `telemetry_owner`, a re-publish of the same rows, VACUUM FULL):
    the content is then read and hashed once more, finds no change, and the latest version keeps the new stamp.
    """
    if connection.vendor != "postgresql":
        return None
    from psycopg import sql  # PostgreSQL only: identifiers quoted by psycopg, the grid's id a bound parameter

    tables, owners = [], []
    for name in ROW_MODELS:
        model = getattr(models, name)
        table = sql.Identifier(model._meta.db_table)
        tables.append(sql.SQL(STAMP_OF_TABLE).format(table=table))
        owners += [sql.SQL(OWNERS_OF_TABLE).format(column=sql.Identifier(f.column), table=table)
                   for f in _references(model) if f.related_model is models.Participant]
    owners.append(sql.SQL(OWNERS_OF_GRID).format(grid=sql.Identifier(models.Grid._meta.db_table)))
    query = sql.SQL(STAMP_OF_GRID).format(grid=sql.Identifier(models.Grid._meta.db_table),
                                          participant=sql.Identifier(models.Participant._meta.db_table),
                                          owners=sql.SQL(" UNION ").join(owners), tables=sql.SQL(", ").join(tables))
    with connection.cursor() as cursor:
        cursor.execute(query.as_string(cursor.connection), {"grid": grid.pk})
        return cursor.fetchone()[0]


# --- diffs --------------------------------------------------------------------------------------------------------


def content_diff(before: dict | None, after: dict) -> dict:
    """What changed from `before` (None: nothing) to `after`: assets added, changed (with the names of the fields that
    changed) and retired (no longer part of the grid), by model in write order, and the grid's own fields changed."""
    old_rows = before["rows"] if before is not None else {}
    added, changed, retired = [], [], []
    present = set(old_rows) | set(after["rows"])
    for name in [n for n in ROW_MODELS if n in present] + sorted(present - set(ROW_MODELS)):
        old = {r["iri"]: r for r in old_rows.get(name, [])}
        new = {r["iri"]: r for r in after["rows"].get(name, [])}
        added += [{"type": name, "iri": iri} for iri in sorted(new.keys() - old.keys())]
        retired += [{"type": name, "iri": iri} for iri in sorted(old.keys() - new.keys())]
        for iri in sorted(new.keys() & old.keys()):
            fields = sorted(k for k in old[iri].keys() | new[iri].keys() if old[iri].get(k) != new[iri].get(k))
            if fields:
                changed.append({"type": name, "iri": iri, "fields": fields})
    grid_fields = sorted(k for k in after["grid"] if before is None or before["grid"].get(k) != after["grid"][k])
    return {"counts": {"added": len(added), "changed": len(changed), "retired": len(retired)}, "grid_fields": grid_fields,
            "added": added, "changed": changed, "retired": retired}


def diff_summary(diff: dict) -> dict:
    """A diff as a version keeps it: the counts (in all and per model) and at most LISTED_CHANGES assets of each kind."""
    by_type: dict[str, dict[str, int]] = {}
    for kind in ("added", "changed", "retired"):
        for entry in diff[kind]:
            by_type.setdefault(entry["type"], {"added": 0, "changed": 0, "retired": 0})[kind] += 1
    listed = {kind: diff[kind][:LISTED_CHANGES] for kind in ("added", "changed", "retired")}
    truncated = any(len(diff[kind]) > LISTED_CHANGES for kind in listed)
    return {"counts": diff["counts"], "by_type": by_type, "grid_fields": diff["grid_fields"], **listed, "truncated": truncated}


def versions_diff(grid: models.Grid, number_from: int, number_to: int) -> dict:
    """The diff from version `number_from` to `number_to` of a grid (KeyError naming the number that does not exist)."""
    found = {v.number: v for v in models.GridVersion.objects.filter(grid=grid, number__in=[number_from, number_to])}
    for number in (number_from, number_to):
        if number not in found:
            raise KeyError(number)
    return content_diff(version_content(found[number_from]), version_content(found[number_to]))


# --- a version as RDF and as a load-flow model --------------------------------------------------------------------


def _values_rows(content: dict) -> dict[str, list[dict]]:
    """The content's rows as `QuerySet.values()` gives them (references under `<field>_id`), IRIs standing for ids."""
    rows = {name: [] for name in ROW_MODELS}
    for name, listed in content["rows"].items():
        references = {f.name for f in _references(getattr(models, name))}
        rows[name] = [{(f"{k}_id" if k in references else k): v for k, v in row.items()} for row in listed]
    return rows


def content_graph(content: dict) -> Graph:
    """The RDF graph of a version's content, written by the same codec as the current export."""
    rows = _values_rows(content)
    iri_of = {name: {row["iri"]: row["iri"] for row in rows[name]} for name in SKELETON}
    owners = {content["grid"]["owner"]} | {row.get("owner_id") for listed in rows.values() for row in listed}
    iri_of["Participant"] = {iri: iri for iri in owners if iri}
    grid_row = {"iri": content["grid"]["iri"], "name": content["grid"]["name"], "owner_id": content["grid"]["owner"]}
    return rows_to_graph(grid_row, rows, iri_of)


def version_graph(grid: models.Grid, number: int) -> Graph | None:
    """Version `number` of the grid as its RDF graph (what the export served then), or None when it has no such version."""
    version = models.GridVersion.objects.filter(grid=grid, number=number).first()
    return content_graph(version_content(version)) if version is not None else None


def content_net(content: dict):
    """The pandapower net (and IRI → index maps) of a version's content: the model a run pinned to it solves."""
    from twin.pandapower_adapter import rows_to_net  # pandapower is heavy: only where a net is built

    rows = {name: list(content["rows"].get(name, [])) for name in ROW_MODELS}
    return rows_to_net(GridRows(grid=content["grid"], rows=rows), name=content["grid"]["name"])


def content_buses(content: dict) -> list[dict]:
    """The buses of a version's content (IRI, feeder IRI, coordinates): what a picture of a run places its dots by."""
    return content["rows"].get("Bus", [])
