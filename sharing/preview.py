"""Access preview: what a consumer would get right now under one agreement, decided by the real decision point.

A steward asks before granting (the terms a request would get, an unsaved agreement) or at any time after (a saved
agreement of any status). Each shared view the agreement's categories open is decided by `sharing.decisions.decide`
for a consumer principal of the agreement's consumer, with `preview=agreement` (as if that agreement were the only
one in force), and the decision's rows are counted and sampled the way the /api/v1/shared/… views build them. Every
decision is audited with `preview=True`, in the steward's participant's name, as the records it would let out.

The rows are built here, not with `sharing.api.rows`: nothing below the HTTP views imports them (pyproject.toml,
import-linter). `tests/test_steward_workbench.py` compares the counts and samples with real GET /api/v1/shared/…
answers, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import QuerySet

from sharing import scope
from sharing.audit import audit_record
from sharing.decisions import VIEW, Decision, decide
from sharing.models import Agreement, DataCategory, Resolution
from sharing.principals import CONSUMER, Principal
from sharing.scope import MODEL_OF_TYPE, TYPE_OF_MODEL
from twin import models as twin

# As the shared views build their rows (sharing/api/rows.py and sharing/api/shared.py).
SKIPPED_FIELDS = {"id", "part_iris", "grid", "telemetry_owner", "retired_at"}
BRANCH_ENDS = {twin.Line: ("from_bus", "to_bus"), twin.Transformer: ("hv_bus", "lv_bus"), twin.Switch: ("bus", "other_bus")}
RUN_FIELDS = ("id", "kind", "status", "at", "start", "end", "step_minutes", "grid_version", "finished_at")
VIOLATION_FIELDS = ("element", "asset_iri", "quantity", "start", "end", "steps", "value", "limit", "severity")
HOSTING_FIELDS = ("pv_kw", "load_kw", "pv_limited_by", "load_limited_by")
# What each asset type is called in the preview, plural (the views' routes: /api/v1/shared/buses, …/switches …).
ASSET_LABELS = {"bus": "buses", "external_grid": "external grids", "line": "lines", "transformer": "transformers", "switch": "switches",
                "load": "loads", "static_generator": "static generators", "storage": "storage units", "ev_charger": "EV chargers",
                "meter": "meters"}


@dataclass
class Sample:
    """A few rows of one shared view exactly as the consumer would get them (redacted), out of `count`."""

    title: str
    count: int
    rows: list[dict]

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(key for row in self.rows for key in row))

    @property
    def cells(self) -> list[list]:
        columns = self.columns
        return [[row.get(name, "") for name in columns] for row in self.rows]


@dataclass
class CategoryPreview:
    """One data category the agreement grants: the decision's rule, what it counts, and samples of the rows."""

    category: str
    label: str
    rule: str
    allowed: bool
    count: int = 0
    counts: list[tuple[str, int]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)


@dataclass
class AccessPreview:
    """What the consumer of `agreement` would see now, per granted category (in the order of `DataCategory`)."""

    agreement: Agreement
    categories: list[CategoryPreview]

    def category(self, name: str) -> CategoryPreview | None:
        return next((c for c in self.categories if c.category == name), None)


def _redact(value, drop_fields: frozenset[str]):
    if isinstance(value, dict):
        return {k: _redact(v, drop_fields) for k, v in value.items() if k not in drop_fields}
    if isinstance(value, list):
        return [_redact(v, drop_fields) for v in value]
    return value


def _asset_rows(queryset: QuerySet, model, limit: int) -> list[dict]:
    """The first `limit` rows of one twin model as the shared asset views give them (foreign keys as IRIs)."""
    scalars, references = [], {}
    for model_field in model._meta.concrete_fields:
        if model_field.name in SKIPPED_FIELDS:
            continue
        if model_field.is_relation:
            references[model_field.name] = f"{model_field.name}__iri"
        else:
            scalars.append(model_field.name)
    type_name = TYPE_OF_MODEL.get(model, model._meta.model_name)
    rows = []
    for value in queryset.order_by("id").values(*scalars, *references.values(), "grid__iri")[:limit]:
        row = {"iri": value["iri"], "type": type_name, "grid": value["grid__iri"]}
        row.update({name: value[name] for name in scalars if name != "iri"})
        row.update({name: value[lookup] for name, lookup in references.items()})
        rows.append(row)
    return rows


class _Previewer:
    """Decides and audits each shared view of one agreement for its consumer, as the steward's participant asks."""

    def __init__(self, agreement: Agreement, steward_participant: twin.Participant, credential: str, sample_size: int):
        self.agreement, self.steward, self.credential, self.sample_size = agreement, steward_participant, credential, sample_size
        self.principal = Principal(kind="preview", participant=agreement.consumer, roles=frozenset({CONSUMER}))
        self.drop = frozenset()

    def decide(self, resource: str, model=None) -> Decision:
        decision = decide(self.principal, VIEW, resource, purpose=self.agreement.purpose, model=model, preview=self.agreement)
        if decision.allowed:
            self.drop = decision.obligations.drop_fields
        return decision

    def audit(self, resource: str, decision: Decision, records: int, **details) -> None:
        agreement = self.agreement
        query = {"preview_of": agreement.uid, "consumer": agreement.consumer.iri, "status": agreement.status, **details}
        audit_record(participant_iri=self.steward.iri, credential=self.credential, action=VIEW, resource=resource,
                     purpose=agreement.purpose, allowed=decision.allowed, rule=decision.rule, agreement_uid=agreement.uid,
                     provider_iri=agreement.provider.iri, method="", path="", query=query, status_code=None, records=records,
                     preview=True)

    def redacted(self, rows: list[dict]) -> list[dict]:
        return [_redact(row, self.drop) for row in rows] if self.drop else rows

    def denied(self, category: str, label: str, decision: Decision) -> CategoryPreview:
        return CategoryPreview(category=category, label=label, rule=decision.rule, allowed=False,
                               notes=[decision.message or decision.reason])

    # one method per data category
    def asset_metadata(self, label: str) -> CategoryPreview:
        found = CategoryPreview(category=DataCategory.ASSET_METADATA, label=label, rule="", allowed=True)
        for type_name, model in MODEL_OF_TYPE.items():
            decision = self.decide("shared.asset", model)
            if not decision.allowed:
                self.audit("shared.asset", decision, 0, model=type_name)
                return self.denied(found.category, label, decision)
            count = decision.queryset.count()
            self.audit("shared.asset", decision, count, model=type_name)
            found.rule = decision.rule
            found.count += count
            found.counts.append((ASSET_LABELS[type_name], count))
            if count:
                rows = self.redacted(_asset_rows(decision.queryset, model, self.sample_size))
                found.samples.append(Sample(title=ASSET_LABELS[type_name], count=count, rows=rows))
        return found

    def topology(self, label: str) -> CategoryPreview:
        decision = self.decide("shared.topology", twin.Bus)
        if not decision.allowed:
            self.audit("shared.topology", decision, 0)
            return self.denied(DataCategory.TOPOLOGY, label, decision)
        buses = set(decision.queryset.values_list("iri", flat=True))
        rows = [{"iri": iri, "type": "bus"} for iri in sorted(buses)]
        counts = [("buses", len(buses))]
        for model, (one, other) in BRANCH_ENDS.items():
            ends = scope.scope_assets(decision.agreement, model).values_list("iri", f"{one}__iri", f"{other}__iri").order_by("id")
            branches = [{"iri": iri, "type": "branch", "kind": model._meta.model_name, "from_bus": a, "to_bus": b}
                        for iri, a, b in ends if a in buses and b in buses]
            counts.append((f"{ASSET_LABELS[scope.TYPE_OF_MODEL[model]]} (branches between buses in scope)", len(branches)))
            rows += branches
        self.audit("shared.topology", decision, len(rows))
        sample = Sample(title="buses and branches", count=len(rows), rows=self.redacted(rows[:self.sample_size]))
        return CategoryPreview(category=DataCategory.TOPOLOGY, label=label, rule=decision.rule, allowed=True, count=len(rows),
                               counts=counts, samples=[sample])

    def telemetry(self, label: str) -> CategoryPreview:
        decision = self.decide("shared.telemetry")
        if not decision.allowed:
            self.audit("shared.telemetry", decision, 0)
            return self.denied(DataCategory.TELEMETRY, label, decision)
        meters, obligations = decision.queryset, decision.obligations
        count = meters.count()
        found = CategoryPreview(category=DataCategory.TELEMETRY, label=label, rule=decision.rule, allowed=True, count=count,
                                counts=[("meters in scope (readings sent by the provider's own gateways)", count)])
        if obligations.resolution == Resolution.RAW:
            found.notes.append("Raw data granted: one series per meter, no aggregation.")
            iris = list(meters.order_by("id").values_list("iri", flat=True)[:self.sample_size])
            found.samples.append(Sample(title="meters", count=count, rows=[{"point_iri": iri} for iri in iris]))
        else:
            k = obligations.min_group_size
            for (_, _), groups in sorted(scope.meter_groups(meters, obligations.group_by).items()):
                for key, ids in groups.items():
                    size = len(set(ids))
                    found.groups.append({"group": key, "meters": size, "suppressed": size < k})
            suppressed = sum(1 for group in found.groups if group["suppressed"])
            found.counts += [(f"groups (per {obligations.group_by})", len(found.groups)), (f"groups suppressed (fewer than {k} meters)",
                                                                                          suppressed)]
            found.notes.append(f"Aggregated per {obligations.group_by} at {obligations.resolution} resolution or coarser: mean, sum and "
                               f"counts per group; groups and time buckets of fewer than {k} meters are suppressed, minima and "
                               "maxima withheld.")
        if obligations.data_start or obligations.data_end:
            found.notes.append(f"Only readings time-stamped in [{obligations.data_start or '…'}, {obligations.data_end or '…'}).")
        self.audit("shared.telemetry", decision, count)
        return found

    def loadflow_results(self, label: str) -> CategoryPreview:
        decision = self.decide("shared.run")
        if not decision.allowed:
            self.audit("shared.run", decision, 0)
            return self.denied(DataCategory.LOADFLOW_RESULTS, label, decision)
        runs = decision.queryset
        count = runs.count()
        rows = [{**{name: run[name] for name in RUN_FIELDS}, "grid": run["grid__iri"]}
                for run in runs.order_by("-id").values(*RUN_FIELDS, "grid__iri")[:self.sample_size]]
        self.audit("shared.run", decision, count)
        found = CategoryPreview(category=DataCategory.LOADFLOW_RESULTS, label=label, rule=decision.rule, allowed=True, count=count,
                                counts=[("succeeded runs in the data window", count)],
                                samples=[Sample(title="runs", count=count, rows=self.redacted(rows))])
        if decision.obligations.resolution != Resolution.RAW:
            found.notes.append(f"Bus results of runs fed by measured telemetry go out as per-{decision.obligations.group_by} extremes over "
                               f"groups of at least {decision.obligations.min_group_size} buses.")
        return found

    def violations(self, label: str) -> CategoryPreview:
        decision = self.decide("shared.violation")
        if not decision.allowed:
            self.audit("shared.violation", decision, 0)
            return self.denied(DataCategory.VIOLATIONS, label, decision)
        count = decision.queryset.count()
        rows = [{**{n: v[n] for n in VIOLATION_FIELDS}, "run": v["run_id"]}
                for v in decision.queryset.order_by("start", "id").values(*VIOLATION_FIELDS, "run_id")[:self.sample_size]]
        self.audit("shared.violation", decision, count)
        return CategoryPreview(category=DataCategory.VIOLATIONS, label=label, rule=decision.rule, allowed=True, count=count,
                               counts=[("violations on assets in scope", count)],
                               samples=[Sample(title="violations", count=count, rows=self.redacted(rows))])

    def hosting_capacity(self, label: str) -> CategoryPreview:
        decision = self.decide("shared.hosting")
        if not decision.allowed:
            self.audit("shared.hosting", decision, 0)
            return self.denied(DataCategory.HOSTING_CAPACITY, label, decision)
        runs = decision.queryset.filter(kind=twin.LoadFlowRun.Kind.HOSTING_CAPACITY).order_by("grid_id", "-id")
        latest: dict[int, int] = {}
        for run_id, grid_id in runs.values_list("id", "grid_id"):
            latest.setdefault(grid_id, run_id)
        results = twin.HostingCapacityResult.objects.filter(run_id__in=latest.values(),
                                                            bus__in=scope.scope_assets(decision.agreement, twin.Bus))
        count = results.count()
        rows = [{"bus": r["bus__iri"], "run": r["run_id"], **{n: r[n] for n in HOSTING_FIELDS}}
                for r in results.order_by("run_id", "id").values("bus__iri", "run_id", *HOSTING_FIELDS)[:self.sample_size]]
        self.audit("shared.hosting", decision, count)
        return CategoryPreview(category=DataCategory.HOSTING_CAPACITY, label=label, rule=decision.rule, allowed=True, count=count,
                               counts=[("latest hosting-capacity runs", len(latest)), ("bus capacities in scope", count)],
                               samples=[Sample(title="hosting capacity per bus", count=count, rows=self.redacted(rows))])


def access_preview(agreement: Agreement, *, steward_participant: twin.Participant, credential: str, sample_size: int = 3) -> AccessPreview:
    """Per data category the agreement grants: the count and the first `sample_size` rows the consumer would get now.

    `agreement` may be unsaved (`sharing.access_requests.request_preview_agreement`) or saved in any status: it is
    decided as if in force now. Each decision is audited with `preview=True` (participant: `steward_participant`,
    provider: the agreement's provider, records: the count), under `credential` (e.g. "admin:<user id>").
    """
    previewer = _Previewer(agreement, steward_participant, credential, sample_size)
    labels = dict(DataCategory.choices)
    found = [getattr(previewer, category)(labels[category]) for category in DataCategory.values if category in agreement.categories]
    return AccessPreview(agreement=agreement, categories=found)


def preview_counts(preview: AccessPreview) -> dict[str, int]:
    """Category → count, for a quick comparison (tests, messages)."""
    return {c.category: c.count for c in preview.categories}

