"""The DCAT catalog of a consumer with 100 agreements on a hub of 1,000 datasets, next to the naive build and a bare listing.

The hub: 5 providers × 10 grids × 4 feeders (Grid and Feeder rows written directly, no assets: the catalog reads
neither) = 200 feeders × 5 data categories (asset metadata, topology, telemetry, load-flow results, violations) =
1,000 datasets. The consumer holds 100 agreements in force, each over the 2 feeders of one half-grid and the 5
categories (10 datasets each, so its catalog is the 1,000 datasets), plus 5 agreements offered to it (awaiting its
answer) and 40 published offers of the providers (20 shown to its role, over datasets it already has: both policies;
20 to another audience); 900 agreements of 100 other consumers fill the table. Prints, median and p95 in ms:
  * GET /api/v1/shared/catalog (the first page: 100 datasets) and GET /api/v1/shared/catalog?limit=1000 (the whole
    catalog), JSON-LD, through DRF's APIClient in process (an OAuth2 client, one persistent database connection), and
    the whole catalog as Turtle;
  * the builder `sharing.catalog.consumer_catalog` (6 queries whatever the number of agreements) next to the plain
    approach side by side in the same run: the same catalog built naively with `sharing.datasets` one agreement and one
    dataset at a time (`agreement_datasets`, `offer_datasets`, `dataset_place`: queries per agreement and per dataset),
    and the floor, a bare ORM listing of the same 100 agreements (`values()`); the ratios;
  * what the whole-catalog request spends building, rendering (JSON-LD dicts) and encoding (orjson), in isolation.
Run: `.venv/bin/python benchmarks/sharing_catalog.py [--repeat 30] [--keep]`
The database is private to this script: the database of BENCH_DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/gridtwin_bench) with `_catalog` appended, dropped and created afresh, migrated, and
dropped again at the end (`--keep` keeps it).
"""

import argparse
import time

from _setup import run_on_private_database, summary_ms

PROVIDERS = 5
GRIDS_PER_PROVIDER = 10
FEEDERS_PER_GRID = 4
FEEDERS_PER_AGREEMENT = 2
CATEGORIES = ["asset_metadata", "topology", "telemetry", "loadflow_results", "violations"]
OTHER_CONSUMERS = 100
AGREEMENTS_PER_OTHER = 9
OFFERS_SHOWN = OFFERS_HIDDEN = 20
AWAITING = 5








def timed(fn, repeat: int, warmup: int = 3) -> list[float]:
    """Wall times of `repeat` calls in ms, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per path (≥ 20)")
    parser.add_argument("--keep", action="store_true", help="keep the private database at the end")
    args = parser.parse_args()
    run_on_private_database("catalog", run, args, keep=args.keep)


def hub_create():
    """The hub of the module docstring; returns the consumer."""
    from django.db import connection
    from django.utils import timezone

    from sharing.models import Agreement, DatasetOffer, Purpose
    from tests.hub import agreement_terms, participant_create
    from twin import models as twin

    consumer = participant_create("Catalog Aggregator", ["aggregator"])
    providers = twin.Participant.objects.bulk_create(
        [twin.Participant(iri=f"https://gridtwin.example/id/participant/catalog-dso-{p}", name=f"Catalog DSO {p}", roles=["dso"])
         for p in range(PROVIDERS)])
    grids = twin.Grid.objects.bulk_create(
        [twin.Grid(iri=f"{provider.iri}/grid/{g}", name=f"grid {g} of DSO {p}", owner=provider)
         for p, provider in enumerate(providers) for g in range(GRIDS_PER_PROVIDER)])
    feeders = twin.Feeder.objects.bulk_create(
        [twin.Feeder(iri=f"{grid.iri}/feeder/{f}", name=f"feeder {f}", grid=grid) for grid in grids for f in range(FEEDERS_PER_GRID)])
    now = timezone.now()

    def agreement(uid: str, provider, party, feeder_iris: list[str], status: str) -> Agreement:
        terms = agreement_terms(provider, party, feeder_iris=feeder_iris, categories=CATEGORIES)
        return Agreement(uid=uid, provider=provider, status=status, activated_at=now, **terms)

    owner_of = {grid.pk: grid.owner for grid in grids}
    pairs = [feeders[k:k + FEEDERS_PER_AGREEMENT] for k in range(0, len(feeders), FEEDERS_PER_AGREEMENT)]
    rows = [agreement(f"urn:bench:catalog:{consumer.pk}:{k}", owner_of[pair[0].grid_id], consumer, [f.iri for f in pair], "active")
            for k, pair in enumerate(pairs)]
    rows += [agreement(f"urn:bench:catalog:{consumer.pk}:offered:{k}", owner_of[pairs[k][0].grid_id], consumer,
                       [pairs[k][0].iri], "offered") for k in range(AWAITING)]
    others = twin.Participant.objects.bulk_create(
        [twin.Participant(iri=f"https://gridtwin.example/id/participant/catalog-other-{k}", name=f"Other consumer {k}",
                          roles=["aggregator"]) for k in range(OTHER_CONSUMERS)])
    rows += [agreement(f"urn:bench:catalog:{other.pk}:{j}", owner_of[pairs[(k + j) % len(pairs)][0].grid_id], other,
                       [f.iri for f in pairs[(k + j) % len(pairs)]], "active")
             for k, other in enumerate(others) for j in range(AGREEMENTS_PER_OTHER)]
    Agreement.objects.bulk_create(rows, batch_size=500)
    DatasetOffer.objects.bulk_create(
        [DatasetOffer(uid=f"urn:bench:catalog:offer:{k}", provider=grid.owner, title=f"Telemetry of {grid.name}", grid=grid,
                      feeder_iris=[f"{grid.iri}/feeder/0"], categories=["telemetry"], purposes=[Purpose.RESEARCH], published=True,
                      audience=["aggregator"] if k < OFFERS_SHOWN else ["researcher"])
         for k, grid in enumerate(grids[:OFFERS_SHOWN + OFFERS_HIDDEN])])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return consumer, len(feeders) * len(CATEGORIES), Agreement.objects.count()


def naive_catalog(participant) -> dict:
    """The plain approach: the same datasets and policies, one agreement and one dataset at a time through sharing.datasets."""
    from django.utils import timezone

    from sharing.access_requests import visible_offers
    from sharing.catalog import offered_agreements
    from sharing.datasets import agreement_datasets, dataset_place, offer_datasets
    from sharing.decisions import agreements_in_force

    at = timezone.now()
    found: dict = {}
    for kind, policies, keys_of in (("grants", agreements_in_force(participant.pk, at), agreement_datasets),
                                    ("awaiting", offered_agreements(participant.pk, at), agreement_datasets),
                                    ("offers", visible_offers(participant), offer_datasets)):
        for policy in policies:
            for key in keys_of(policy):
                entry = found.setdefault(key, {"place": dataset_place(key), "grants": [], "awaiting": [], "offers": []})
                entry[kind].append(policy.uid)
    return found


def run(args) -> None:
    import orjson
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from sharing import catalog
    from sharing.models import Agreement
    from tests.hub import oauth_client

    started = time.perf_counter()
    consumer, datasets, agreements = hub_create()
    in_force = Agreement.objects.filter(consumer=consumer, status="active").count()
    print(f"hub: {PROVIDERS} providers × {GRIDS_PER_PROVIDER} grids × {FEEDERS_PER_GRID} feeders × {len(CATEGORIES)} categories = "
          f"{datasets} datasets; {agreements} agreements, {in_force} of them the consumer's in force, {AWAITING} offered to it; "
          f"{OFFERS_SHOWN + OFFERS_HIDDEN} published offers ({OFFERS_SHOWN} shown to it); written in {time.perf_counter() - started:.1f} s")

    # --- the same catalog both ways, checked -------------------------------------------------------------------------
    built = catalog.consumer_catalog(consumer)
    naive = naive_catalog(consumer)
    same = ({e.key for e in built} == set(naive) and all(
        sorted(p.uid for p in getattr(e, kind)) == sorted(naive[e.key][kind]) for e in built for kind in ("grants", "awaiting", "offers")))
    if not same or len(built) != datasets:
        raise SystemExit(f"the builder and the naive build differ ({len(built)} vs {len(naive)} datasets)")
    with CaptureQueriesContext(connection) as builder_queries:
        catalog.consumer_catalog(consumer)
    with CaptureQueriesContext(connection) as naive_queries:
        naive_catalog(consumer)
    builder_queries, naive_queries = len(builder_queries), len(naive_queries)  # counts now: the query log is a bounded deque
    both = sum(1 for e in built if e.grants and e.offers)
    print(f"catalog: {len(built)} datasets ({sum(e.granted for e in built)} granted, {both} also offered, "
          f"{sum(bool(e.awaiting) for e in built)} also awaiting an answer); builder {builder_queries} SQL queries, "
          f"naive build {naive_queries} (same datasets and policies: checked)")

    client = oauth_client(consumer, "bench-catalog-client")

    def get(params: dict, accept: str = "application/ld+json"):
        response = client.get("/api/v1/shared/catalog", params, HTTP_ACCEPT=accept)
        if response.status_code != 200:
            raise SystemExit(f"the catalog answered {response.status_code}: {response.content[:300]!r}")
        return response

    first, whole = get({}).json(), get({"limit": 1000})
    turtle = get({"limit": 1000}, "text/turtle")
    if first["count"] != datasets or len(first["dcat:dataset"]) != 100 or len(whole.json()["dcat:dataset"]) != 1000:
        raise SystemExit("the catalog pages are not the 100 and 1,000 datasets expected")
    print(f"responses: first page {len(get({}).content) / 1e3:.0f} kB, whole catalog {len(whole.content) / 1e6:.1f} MB JSON-LD, "
          f"{len(turtle.content) / 1e6:.1f} MB Turtle")

    repeat = args.repeat

    def bare_agreements() -> list[dict]:
        return list(Agreement.objects.filter(consumer=consumer, status="active").values())

    rows = [
        ("GET /shared/catalog (first page, 100 datasets)", timed(lambda: get({}), repeat)),
        ("GET /shared/catalog?limit=1000 (whole catalog, JSON-LD)", timed(lambda: get({"limit": 1000}), repeat)),
        ("GET /shared/catalog?limit=1000, Accept: text/turtle", timed(lambda: get({"limit": 1000}, "text/turtle"), max(5, repeat // 3))),
    ]
    builder = timed(lambda: catalog.consumer_catalog(consumer), repeat)
    plain = timed(lambda: naive_catalog(consumer), max(5, repeat // 3), warmup=1)
    bare = timed(bare_agreements, repeat)
    rows += [("builder: sharing.catalog.consumer_catalog", builder), ("plain: naive build, per agreement and per dataset", plain),
             ("floor: bare ORM listing of the 100 agreements (values())", bare)]
    print(f"timings ({repeat} calls after 3 warm-up ones; Turtle and the naive build {max(5, repeat // 3)})    median      p95")
    for label, times in rows:
        median, p95 = summary_ms(times)
        print(f"  {label:<72}{median:9.1f}{p95:9.1f}")
    (builder_median, builder_p95), (plain_median, plain_p95) = summary_ms(builder), summary_ms(plain)
    bare_median, bare_p95 = summary_ms(bare)
    print(f"  ratio naive / builder: {plain_median / builder_median:.1f}× (median), {plain_p95 / builder_p95:.1f}× (p95);   "
          f"builder / bare listing: {builder_median / bare_median:.1f}× (median), {builder_p95 / bare_p95:.1f}× (p95)")

    # --- where the whole-catalog request goes, in isolation ----------------------------------------------------------
    links = catalog.Links(catalog="http://testserver/api/v1/shared/catalog",
                          endpoints={name: f"http://testserver/api/v1/shared/{name}" for name in catalog.ENDPOINT_NAMES},
                          agreements="http://testserver/api/v1/sharing/agreements/", schema="http://testserver/api/schema/")
    page = {"count": len(built), "limit": 1000, "offset": 0, "next": None, "previous": None}
    document = catalog.catalog_document(built, consumer=consumer, links=links, page=page)
    parts = {"build (consumer_catalog)": builder,
             "render (catalog_document, 1,000 datasets)": timed(lambda: catalog.catalog_document(built, consumer=consumer, links=links,
                                                                                                page=page), repeat),
             "encode (orjson.dumps)": timed(lambda: orjson.dumps(document), repeat)}
    whole_median = summary_ms(rows[1][1])[0]
    print("the whole-catalog request in parts, in isolation (median ms; share of the request's median)")
    for label, times in parts.items():
        median = summary_ms(times)[0]
        print(f"  {label:<72}{median:9.1f}{median / whole_median:9.0%}")
    print("summary")
    for label, times in rows[:3]:
        median, p95 = summary_ms(times)
        print(f"  {label:<60} p50 {median:7.1f} ms   p95 {p95:7.1f} ms")
    print(f"  builder {builder_median:.1f} / {builder_p95:.1f} ms vs naive {plain_median:.1f} / {plain_p95:.1f} ms (p50 / p95): "
          f"{plain_median / builder_median:.1f}× faster, {builder_queries} vs {naive_queries} queries; "
          f"bare agreement listing {bare_median:.1f} / {bare_p95:.1f} ms")


if __name__ == "__main__":
    main()
