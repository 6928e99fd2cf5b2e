"""Access preview: what a consumer would get right now under one agreement, decided by the real decision point.

A steward asks before granting (the terms a request would get, an unsaved agreement) or at any time after (a saved
agreement of any status). Each shared view the agreement's categories open is decided by `sharing.decisions.decide`
for a consumer principal of the agreement's consumer, with `preview=agreement` (as if that agreement were the only
one in force), and the decision's rows are counted and sampled the way the /api/v1/shared/… views build them. Every
decision is audited with `preview=True`, in the steward's participant's name, as the records it would let out.

The rows are the views' own (`sharing.rows`); `tests/test_steward_workbench.py` also compares the counts and samples
with real GET /api/v1/shared/… answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sharing import scope
from sharing.audit import audit_record
from sharing.decisions import VIEW, Decision, decide
from sharing.models import Agreement, DataCategory, Resolution
from sharing.principals import CONSUMER, Principal
from sharing.rows import BRANCH_ENDS, asset_rows, hosting_results, hosting_rows, redact, run_rows, topology_rows, violation_rows
from sharing.scope import MODEL_OF_TYPE
from twin import models as twin

# The shared view each category but asset metadata is previewed through: resource and model of its decision.
CATEGORY_VIEWS = {DataCategory.TOPOLOGY: ("shared.topology", twin.Bus), DataCategory.TELEMETRY: ("shared.telemetry", None),
                  DataCategory.LOADFLOW_RESULTS: ("shared.run", None), DataCategory.VIOLATIONS: ("shared.violation", None),
                  DataCategory.HOSTING_CAPACITY: ("shared.hosting", None)}
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
        return redact(rows, self.drop)

    def category(self, category: str, label: str) -> CategoryPreview:
        """One granted category: decided (and audited when denied) here; counted and sampled by the method named after it."""
        if category == DataCategory.ASSET_METADATA:
            return self.asset_metadata(label)  # one decision per asset type
        resource, model = CATEGORY_VIEWS[category]
        decision = self.decide(resource, model)
        if not decision.allowed:
            self.audit(resource, decision, 0)
            return self.denied(category, label, decision)
        return getattr(self, category)(label, decision)

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
                rows = self.redacted(asset_rows(decision.queryset, model, self.sample_size))
                found.samples.append(Sample(title=ASSET_LABELS[type_name], count=count, rows=rows))
        return found

    def topology(self, label: str, decision: Decision) -> CategoryPreview:
        rows = topology_rows(decision.agreement)
        counts = [("buses", sum(1 for row in rows if row["type"] == "bus"))]
        for model in BRANCH_ENDS:
            kind = scope.TYPE_OF_MODEL[model]
            counts.append((f"{ASSET_LABELS[kind]} (branches between buses in scope)", sum(1 for row in rows if row.get("kind") == kind)))
        self.audit("shared.topology", decision, len(rows))
        sample = Sample(title="buses and branches", count=len(rows), rows=self.redacted(rows[:self.sample_size]))
        return CategoryPreview(category=DataCategory.TOPOLOGY, label=label, rule=decision.rule, allowed=True, count=len(rows),
                               counts=counts, samples=[sample])

    def telemetry(self, label: str, decision: Decision) -> CategoryPreview:
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

    def loadflow_results(self, label: str, decision: Decision) -> CategoryPreview:
        runs = decision.queryset
        count = runs.count()
        rows = run_rows(runs, self.sample_size)
        self.audit("shared.run", decision, count)
        found = CategoryPreview(category=DataCategory.LOADFLOW_RESULTS, label=label, rule=decision.rule, allowed=True, count=count,
                                counts=[("succeeded runs in the data window", count)],
                                samples=[Sample(title="runs", count=count, rows=self.redacted(rows))])
        if decision.obligations.resolution != Resolution.RAW:
            found.notes.append(f"Bus results of runs fed by measured telemetry go out as per-{decision.obligations.group_by} extremes over "
                               f"groups of at least {decision.obligations.min_group_size} buses.")
        return found

    def violations(self, label: str, decision: Decision) -> CategoryPreview:
        count = decision.queryset.count()
        rows = violation_rows(decision.queryset, self.sample_size)
        self.audit("shared.violation", decision, count)
        return CategoryPreview(category=DataCategory.VIOLATIONS, label=label, rule=decision.rule, allowed=True, count=count,
                               counts=[("violations on assets in scope", count)],
                               samples=[Sample(title="violations", count=count, rows=self.redacted(rows))])

    def hosting_capacity(self, label: str, decision: Decision) -> CategoryPreview:
        results, latest = hosting_results(decision.agreement, decision.queryset)
        count = results.count()
        rows = hosting_rows(results, self.sample_size)
        self.audit("shared.hosting", decision, count)
        return CategoryPreview(category=DataCategory.HOSTING_CAPACITY, label=label, rule=decision.rule, allowed=True, count=count,
                               counts=[("latest hosting-capacity runs", latest), ("bus capacities in scope", count)],
                               samples=[Sample(title="hosting capacity per bus", count=count, rows=self.redacted(rows))])


def access_preview(agreement: Agreement, *, steward_participant: twin.Participant, credential: str, sample_size: int = 3) -> AccessPreview:
    """Per data category the agreement grants: the count and the first `sample_size` rows the consumer would get now.

    `agreement` may be unsaved (`sharing.access_requests.request_preview_agreement`) or saved in any status: it is
    decided as if in force now. Each decision is audited with `preview=True` (participant: `steward_participant`,
    provider: the agreement's provider, records: the count), under `credential` (e.g. "admin:<user id>").
    """
    previewer = _Previewer(agreement, steward_participant, credential, sample_size)
    labels = dict(DataCategory.choices)
    found = [previewer.category(category, labels[category]) for category in DataCategory.values if category in agreement.categories]
    return AccessPreview(agreement=agreement, categories=found)

