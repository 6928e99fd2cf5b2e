"""A consumer's read through the shared API next to the owner's read of the same data, and the decision point alone.

On a provider grid of 1,000 meters (10 feeders × 100) with a day of 15-minute active-power readings (96k, stored
through the real ingest service in process, so the worker sets `Meter.telemetry_owner`; hourly rollup refreshed
as Celery beat does), on a hub of 1,000 agreements (200 consumers with 5 each), prints:
  * the consumer's read, an OAuth2 client under an active agreement (whole grid, asset_metadata + telemetry,
    hourly, per feeder, k = 5, owner and coordinates dropped): GET /api/v1/shared/meters?limit=1000 and
    GET /api/v1/shared/telemetry (the day, hourly: 10 feeder groups × 24 buckets), median and p95 ms;
  * the owner's read of the same data, a user token of the provider: GET /api/v1/meters/?grid=…&limit=1000 and
    GET /api/v1/telemetry/readings?feeder=…&resolution=hour&group=all for each of the 10 feeders (the operator API
    has no per-feeder grouping in one request), median and p95 ms; and the ratio shared / owner (goal ≤ 1.25×).
    Both through DRF's APIClient in process (no HTTP, one persistent database connection), interleaved, after
    a warm-up;
  * what the shared read spends in the decision point, the redaction, the audit write, its row queries and
    aggregation, measured inside the timed requests (the functions wrapped with timers in a separate pass) and
    in isolation;
  * decisions per second of `sharing.decisions.decide(principal, "view", "shared.telemetry", purpose=…)` for the
    consumer (5 of the hub's 1,000 agreements, 2 of them in force), as decided (lazy queryset) and with
    `decision.queryset.exists()` evaluated.
Run: `.venv/bin/python benchmarks/sharing_read.py [--repeat 40] [--decisions 2000] [--profile] [--keep]`
The database is private to this script: the database of BENCH_DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/gridtwin_bench) with `_sharing` appended, dropped and created afresh, migrated,
and dropped again at the end (`--keep` keeps it).
"""

import argparse
import cProfile
import pstats
import re
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from _setup import run_on_private_database, summary_ms

FEEDERS = 10
METERS_PER_FEEDER = 100
DAY = (datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 2, tzinfo=UTC))
STEPS = 96
INGEST_BATCHES = 4  # 24 steps × 1,000 meters = 24k readings per batch
OTHER_CONSUMERS = 199
AGREEMENTS_PER_CONSUMER = 5
GOAL_RATIO = 1.25
TIME_ZONE = "Europe/Berlin"  # the shared view buckets in the grid's local time; the operator view in UTC hours








def median_call_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


class PartTimers:
    """Wrap module attributes with timers (ms spent per label); `restore()` puts the originals back."""

    def __init__(self):
        self.spent: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.originals: list[tuple[object, str, object]] = []

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spent[label] += (time.perf_counter() - started) * 1000
                self.calls[label] += 1

        self.originals.append((owner, name, original))
        setattr(owner, name, timed)

    def take(self) -> tuple[dict[str, float], dict[str, int]]:
        spent, calls = dict(self.spent), dict(self.calls)
        self.spent.clear()
        self.calls.clear()
        return spent, calls

    def restore(self) -> None:
        for owner, name, original in reversed(self.originals):
            setattr(owner, name, original)
        self.originals.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=40, help="timed reads per path (≥ 30)")
    parser.add_argument("--decisions", type=int, default=2000, help="timed decisions (≥ 2000)")
    parser.add_argument("--profile", action="store_true", help="also print cProfile hotspots of both reads")
    parser.add_argument("--keep", action="store_true", help="keep the private database at the end")
    args = parser.parse_args()
    run_on_private_database("sharing", run, args, keep=args.keep)


def run(args) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    import sharing.api.base
    import sharing.api.shared
    from ingest import selectors as ingest_selectors
    from ingest import services as ingest
    from ingest.testing import metered_grid_create, power_readings, readings_json
    from sharing import audit, decisions
    from sharing.models import Agreement, ApiClient, DataCategory, Purpose
    from sharing.principals import CONSUMER, Principal
    from sharing.rows import asset_rows, redact
    from tests.hub import agreement_in_state, agreement_terms, oauth_client, participant_create, user_client
    from twin import models as twin

    purpose = Purpose.FLEXIBILITY_PROCUREMENT
    # --- the provider's grid and a day of its telemetry -------------------------------------------------------
    provider = participant_create("Bench DSO", ["dso"])
    consumer = participant_create("Bench Aggregator", ["aggregator"])
    grid = metered_grid_create(provider, name="sharing-bench", feeders=FEEDERS, meters_per_feeder=METERS_PER_FEEDER)
    grid.time_zone = TIME_ZONE
    grid.save(update_fields=["time_zone"])
    feeder_ids = list(twin.Feeder.objects.filter(grid=grid).order_by("id").values_list("id", flat=True))
    meter_ids = list(twin.Meter.objects.filter(grid=grid).order_by("id").values_list("id", flat=True))
    source, _ = ingest.telemetry_source_issue(participant=provider, name="bench-gateway")
    started = time.perf_counter()
    per_batch = STEPS // INGEST_BATCHES
    for b in range(INGEST_BATCHES):
        body = readings_json(power_readings(meter_ids, DAY[0] + b * per_batch * timedelta(minutes=15), per_batch))
        receipt = ingest.telemetry_batch_receive(source=source, body=body, content_type="application/json")
        ingest.telemetry_batch_process(batch_id=receipt.batch.pk)  # a no-op when the in-process task already did it
    batches = twin.TelemetryBatch.objects.filter(source=source)
    stored = sum(batches.values_list("accepted_count", flat=True))
    if stored != STEPS * len(meter_ids) or batches.exclude(status="succeeded").exists():
        raise SystemExit(f"ingest stored {stored} readings, expected {STEPS * len(meter_ids)}")
    ingest_s = time.perf_counter() - started
    hours = ingest.reading_rollups_refresh(settled_s=-60)  # what Celery beat does a while after the batches
    owned = twin.Meter.objects.filter(grid=grid, telemetry_owner=provider).count()
    with connection.cursor() as cursor:  # statistics as autovacuum keeps them on a live database
        cursor.execute("ANALYZE")
    print(f"grid: {len(meter_ids)} meters on {len(feeder_ids)} feeders (time zone {TIME_ZONE}); {stored} readings "
          f"(a day, 15 min) stored through the ingest service in process in {ingest_s:.1f} s, {INGEST_BATCHES} batches; "
          f"telemetry_owner set by the worker on {owned} meters; hourly rollup of {hours} hours refreshed")

    # --- the hub: the consumer's agreements and 995 of 199 other consumers ----------------------------------------
    agreement = agreement_in_state(provider, consumer, "active", categories=[DataCategory.ASSET_METADATA, DataCategory.TELEMETRY])
    agreement_in_state(provider, consumer, "active", purpose=Purpose.RESEARCH, categories=[DataCategory.TELEMETRY], resolution="day")
    for state in ("expired", "revoked", "suspended"):
        agreement_in_state(provider, consumer, state, categories=[DataCategory.TELEMETRY])
    now = timezone.now()
    others = twin.Participant.objects.bulk_create(
        [twin.Participant(iri=f"https://gridtwin.example/id/participant/bench-consumer-{k}", name=f"Bench consumer {k}",
                          roles=["aggregator"]) for k in range(OTHER_CONSUMERS)])
    statuses = [Agreement.Status.ACTIVE, Agreement.Status.ACTIVE, Agreement.Status.SUSPENDED, Agreement.Status.REVOKED,
                Agreement.Status.ACTIVE]
    purposes = list(Purpose.values)
    # Written straight through the ORM: only their rows matter to the decision point, not their lifecycle's audit.
    Agreement.objects.bulk_create(
        [Agreement(uid=f"urn:bench:agreement:{other.pk}:{j}", provider=provider, status=statuses[j], activated_at=now,
                   **{**agreement_terms(provider, other), "purpose": purposes[j], "feeder_iris": []})
         for other in others for j in range(AGREEMENTS_PER_CONSUMER)], batch_size=500)
    total_agreements = Agreement.objects.count()
    in_force = list(decisions.agreements_in_force(consumer.pk, timezone.now()))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE sharing_agreement")
    print(f"hub: {total_agreements} agreements, {OTHER_CONSUMERS + 1} consumers; the consumer has "
          f"{Agreement.objects.filter(consumer=consumer).count()}, {len(in_force)} in force "
          f"(the one read: whole grid, {', '.join(agreement.categories)}, {agreement.resolution}, per {agreement.group_by}, "
          f"k = {agreement.min_group_size}, drops {', '.join(agreement.dropped_fields)})")

    # --- the two reads -------------------------------------------------------------------------------------------
    shared_client = oauth_client(consumer, "bench-flex-client")
    owner_client = user_client(provider, "bench-operator")
    window = {"quantity": "active_power", "start": DAY[0].isoformat(), "end": DAY[1].isoformat(), "resolution": "hour"}

    def get(client, path: str, params: dict):
        response = client.get(path, params)
        if response.status_code != 200:
            raise SystemExit(f"{path} answered {response.status_code}: {response.content[:300]!r}")
        return response

    def shared_read(times: dict | None = None) -> list:
        out = []
        for label, path, params in (("meters", "/api/v1/shared/meters", {"purpose": purpose, "limit": 1000}),
                                    ("telemetry", "/api/v1/shared/telemetry", {"purpose": purpose, **window})):
            started = time.perf_counter()
            out.append(get(shared_client, path, params))
            if times is not None:
                times[label].append((time.perf_counter() - started) * 1000)
        return out

    def owner_read(times: dict | None = None) -> list:
        started = time.perf_counter()
        out = [get(owner_client, "/api/v1/meters/", {"grid": grid.pk, "limit": 1000})]
        middle = time.perf_counter()
        for f in feeder_ids:
            before = time.perf_counter()
            out.append(get(owner_client, "/api/v1/telemetry/readings", {"feeder": f, **window, "group": "all"}))
            if times is not None:
                times["one feeder"].append((time.perf_counter() - before) * 1000)
        if times is not None:
            times["meters"].append((middle - started) * 1000)
            times["telemetry"].append((time.perf_counter() - middle) * 1000)
        return out

    # Same data both ways: 1,000 meters, and per feeder the same 24 hourly means (the instants compared, not the zones).
    shared_meters, shared_telemetry = (r.json() for r in shared_read())
    owner = [r.json() for r in owner_read()]
    series = shared_telemetry["series"]
    shared_means = {(g["group"], datetime.fromisoformat(b["ts"])): b["mean"] for g in series for b in g["buckets"]}
    feeder_iri = dict(twin.Feeder.objects.filter(grid=grid).values_list("id", "iri"))
    owner_means = {(feeder_iri[f], datetime.fromisoformat(b["ts"])): b["mean"]
                   for f, body in zip(feeder_ids, owner[1:], strict=True) for b in body["series"][0]["readings"]}
    if (not len(shared_meters["results"]) == len(owner[0]["results"]) == len(meter_ids) or shared_means.keys() != owner_means.keys()
            or any(abs(shared_means[k] - owner_means[k]) > 1e-9 for k in shared_means) or len(shared_means) != FEEDERS * 24):
        raise SystemExit("the shared and the owner's reads do not return the same data")
    if any("owner" in m or "lon_degree" in m for m in shared_meters["results"]):
        raise SystemExit("the shared meters carry a field the agreement drops")
    with CaptureQueriesContext(connection) as shared_queries:
        shared_read()
    with CaptureQueriesContext(connection) as owner_queries:
        owner_read()
    print(f"consumer's read: 2 requests ({len(shared_meters['results'])} meters; {len(series)} feeder groups × 24 hourly buckets), "
          f"{len(shared_queries)} SQL queries")
    print(f"owner's read:    {1 + len(feeder_ids)} requests ({len(owner[0]['results'])} meters; 10 × one feeder's 24 hourly means), "
          f"{len(owner_queries)} SQL queries; same meters and the same 240 means as the consumer's (checked)")

    for _ in range(5):  # warm-up: first-request costs (URL resolver, serializer classes, plan caches)
        shared_read()
        owner_read()
    shared_times: dict[str, list[float]] = defaultdict(list)
    owner_times: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.repeat):  # interleaved, so drift on the machine hits both paths alike
        shared_read(shared_times)
        owner_read(owner_times)
    shared_total = [a + b for a, b in zip(shared_times["meters"], shared_times["telemetry"], strict=True)]
    owner_total = [a + b for a, b in zip(owner_times["meters"], owner_times["telemetry"], strict=True)]
    print(f"reads, {args.repeat} interleaved repetitions after 5 warm-up ones (ms)      median      p95")
    rows = [("consumer: shared meters", shared_times["meters"]), ("consumer: shared telemetry", shared_times["telemetry"]),
            ("consumer: shared read, total", shared_total), ("owner: operator meters", owner_times["meters"]),
            ("owner: operator readings × 10 feeders", owner_times["telemetry"]),
            ("  of which one feeder's request (each of the 10)", owner_times["one feeder"]), ("owner: operator read, total", owner_total)]
    for label, times in rows:
        median, p95 = summary_ms(times)
        print(f"  {label:<60}{median:9.1f}{p95:9.1f}")
    shared_median, shared_p95 = summary_ms(shared_total)
    owner_median, owner_p95 = summary_ms(owner_total)
    ratio, ratio_p95 = shared_median / owner_median, shared_p95 / owner_p95
    meters_ratio = statistics.median(shared_times["meters"]) / statistics.median(owner_times["meters"])
    telemetry_ratio = statistics.median(shared_times["telemetry"]) / statistics.median(owner_times["telemetry"])
    print(f"  ratio shared / owner: {ratio:.2f}× (median), {ratio_p95:.2f}× (p95)   goal ≤ {GOAL_RATIO}×;   "
          f"meters {meters_ratio:.2f}×, telemetry {telemetry_ratio:.2f}×")

    # --- where the shared read's time goes ---------------------------------------------------------------------------
    timers = PartTimers()
    timers.wrap(decisions, "decide", "decision point (decide)")
    timers.wrap(sharing.api.shared, "redact", "redaction (redact)")
    timers.wrap(sharing.api.base, "audit_record", "audit write (audit_record)")
    timers.wrap(sharing.api.shared, "asset_rows", "meter rows: scope query + dicts (asset_rows)")
    timers.wrap(sharing.api.shared.SharedTelemetryViewSet, "series", "telemetry: scope query + k-aggregation (series)")
    timers.wrap(ingest_selectors, "readings_series", "telemetry: rollup query (readings_series)")
    parts: dict[str, dict[str, list[float]]] = {"shared": defaultdict(list), "owner": defaultdict(list)}
    calls: dict[str, dict[str, int]] = {}
    totals: dict[str, list[float]] = defaultdict(list)
    try:
        for _ in range(max(10, args.repeat // 2)):
            for path, read in (("shared", shared_read), ("owner", owner_read)):
                started = time.perf_counter()
                read()
                totals[path].append((time.perf_counter() - started) * 1000)
                spent, calls[path] = timers.take()
                for label, ms in spent.items():
                    parts[path][label].append(ms)
    finally:
        timers.restore()
    print("where the time goes, inside the timed requests (functions wrapped with timers; median ms per read, calls per read)")
    print(f"  {'':<60}{'consumer':>12}{'share':>8}{'owner':>12}{'share':>8}")
    labels = list(dict.fromkeys([*parts["shared"], *parts["owner"]]))
    for label in [*labels, "everything else (auth, DRF, serializers, JSON rendering)"]:
        cells = []
        for path in ("shared", "owner"):
            total = statistics.median(totals[path])
            if label.startswith("everything else"):
                per_read = [t - sum(parts[path][name][i] for name in parts[path]) for i, t in enumerate(totals[path])]
                ms, count = statistics.median(per_read), None
            elif label in parts[path]:
                ms, count = statistics.median(parts[path][label]), calls[path][label]
            else:
                cells.append(f"{'—':>12}{'':>8}")
                continue
            cells.append(f"{ms:9.1f}{'' if count is None else f'/{count}':<3}{ms / total:8.0%}")
        print(f"  {label:<60}{cells[0]}{cells[1]}")
    print(f"  {'whole read (instrumented pass)':<60}{statistics.median(totals['shared']):8.1f}  {'':>8}"
          f"{statistics.median(totals['owner']):8.1f}")

    # As sharing.principals builds it for an OAuth2 client whose token carries the shared:read scope.
    api_client = ApiClient.objects.select_related("participant").get(application__name="bench-flex-client")
    principal = Principal(kind="client", participant=api_client.participant, roles=frozenset({CONSUMER}), credential_id=api_client.pk,
                          client=api_client)
    meter_decision = decisions.decide(principal, "view", "shared.asset", purpose=purpose, model=twin.Meter)
    meter_body = {"count": len(meter_ids), "limit": 1000, "offset": 0, "results": asset_rows(meter_decision.queryset, twin.Meter)}
    drop = meter_decision.obligations.drop_fields
    telemetry_body = {k: v for k, v in shared_telemetry.items() if k not in ("agreement", "attribution", "delete_after_days")}
    audit_args = {"participant_iri": consumer.iri, "credential": principal.credential_label, "action": "view",
                  "resource": "shared.telemetry", "purpose": purpose, "allowed": True, "rule": "agreement:telemetry",
                  "agreement_uid": agreement.uid, "provider_iri": provider.iri, "method": "GET", "path": "/api/v1/shared/telemetry",
                  "query": {"purpose": [purpose], **{k: [v] for k, v in window.items()}}, "status_code": 200, "records": 240}
    isolated = {
        "decide('shared.asset', model=Meter) + decide('shared.telemetry')":
            lambda: (decisions.decide(principal, "view", "shared.asset", purpose=purpose, model=twin.Meter),
                     decisions.decide(principal, "view", "shared.telemetry", purpose=purpose)),
        "redact(meters body) + redact(telemetry body)": lambda: (redact([meter_body], drop), redact([telemetry_body], drop)),
        "2 × audit_record(…)": lambda: (audit.audit_record(**audit_args), audit.audit_record(**audit_args)),
    }
    print("the same parts in isolation, as one shared read calls them (median ms over 200 calls; share of the shared read's median)")
    isolated_ms = {}
    for label, fn in isolated.items():
        for _ in range(20):
            fn()
        isolated_ms[label] = median_call_ms(fn, 200)
        print(f"  {label:<70}{isolated_ms[label]:8.2f}{isolated_ms[label] / shared_median:8.1%}")

    # --- the decision point alone ------------------------------------------------------------------------------------
    def decide():
        return decisions.decide(principal, "view", "shared.telemetry", purpose=purpose)

    for _ in range(100):
        decide().queryset.exists()
    started = time.perf_counter()
    for _ in range(args.decisions):
        decision = decide()
    lazy_s = time.perf_counter() - started
    if not decision.allowed or decision.agreement.pk != agreement.pk:
        raise SystemExit(f"the decision point denied the consumer: {decision.explain()}")
    started = time.perf_counter()
    for _ in range(args.decisions):
        exists = decide().queryset.exists()
    exists_s = time.perf_counter() - started
    if not exists:
        raise SystemExit("the decision's queryset is empty")
    with CaptureQueriesContext(connection) as lazy_queries:
        decision = decide()
    with CaptureQueriesContext(connection) as exists_queries:
        decision.queryset.exists()
    lazy_rate, exists_rate = args.decisions / lazy_s, args.decisions / exists_s
    print(f"decision point alone: decide(principal, 'view', 'shared.telemetry', purpose=…), {args.decisions} calls, "
          f"{total_agreements} agreements on the hub")
    print(f"  {f'as decided (lazy queryset; {len(lazy_queries)} queries)':<56}{lazy_rate:10,.0f} decisions/s   "
          f"{lazy_s / args.decisions * 1e6:7.0f} µs each")
    print(f"  {f'with decision.queryset.exists() (+{len(exists_queries)} query)':<56}{exists_rate:10,.0f} decisions/s   "
          f"{exists_s / args.decisions * 1e6:7.0f} µs each")
    tables = [re.search(r'FROM "(\w+)"', q["sql"]).group(1) for q in [*lazy_queries.captured_queries, *exists_queries.captured_queries]]
    print(f"  tables the queries of one decision read: {', '.join(tables[:-1])}; exists(): {tables[-1]}")

    if args.profile:
        for path, read in (("consumer's shared read", shared_read), ("owner's operator read", owner_read)):
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(10):
                read()
            profile.disable()
            print(f"cProfile of 10 × the {path}, top 25 by own time")
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)

    print("summary")
    print(f"  consumer's shared read (2 requests)       median {shared_median:7.1f} ms   p95 {shared_p95:7.1f} ms")
    print(f"  owner's operator read ({1 + len(feeder_ids)} requests)       median {owner_median:7.1f} ms   p95 {owner_p95:7.1f} ms")
    print(f"  ratio shared / owner                      median {ratio:7.2f} ×    p95 {ratio_p95:7.2f} ×    goal ≤ {GOAL_RATIO} ×   "
          f"{'met' if ratio <= GOAL_RATIO else 'NOT met'}")
    for label, ms in isolated_ms.items():
        print(f"  {label:<70}{ms:7.2f} ms  {ms / shared_median:6.1%} of the shared read")
    print(f"  decision point: {lazy_rate:,.0f} decisions/s as decided, {exists_rate:,.0f}/s with queryset.exists()")


if __name__ == "__main__":
    main()
