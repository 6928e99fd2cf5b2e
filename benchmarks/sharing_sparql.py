"""SPARQL over a consumer's permitted graph (/api/v1/shared/sparql) next to plain Oxigraph over the whole grid, in one run.

On SimBench 1-MVLV-urban-all-0-sw (~10k buses, ~25k assets) imported through the twin's own path (`simbench_document`
+ `grid_import_graph`, SHACL included), with an agreement over about half of its feeders (asset_metadata + topology,
owner and coordinates dropped) for an OAuth2 consumer, prints:
  * the permitted graph: assets, triples, build time (rows through the ORM vs triples into Oxigraph) per 1,000
    assets, and the memory the store takes;
  * a two-hop topology query (the buses and branches within two branches of one bus) through the endpoint, in process
    (DRF's APIClient: authentication, decision, fingerprint, forked evaluator, audit): cold — the first query after an
    agreement change (a new version activated), so it includes building the graph — median of --cold, and warm, p50
    and p95 over --repeat;
  * the same question on the whole graph without any policy, in plain Oxigraph in this process: (a) the full grid
    export (its CIM form: buses, terminals, equipment) loaded into Oxigraph, asked in CIM terms; (b) the whole
    grid's twin view (every row of the REST views, nothing dropped, the permitted graph's shape) with the very same
    query text. Their answers are checked against the endpoint's (a bus whose neighbourhood lies inside the scope);
  * a global two-hop count (every pair of branches sharing a bus) over the permitted graph (warm) and the whole view;
  * the ratios, and the fixed cost of one forked evaluation (fork, pipe, reap) on its own.
Run: `.venv/bin/python benchmarks/sharing_sparql.py [--repeat 30] [--cold 3] [--code 1-MVLV-urban-all-0-sw] [--keep]`
The database is private to this script: the database of BENCH_DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/gridtwin_bench) with `_sparql` appended, dropped and created afresh, migrated, and
dropped again at the end (`--keep` keeps it). About 2–3 minutes, most of it importing the grid.
"""

import argparse
import ctypes
import gc
import os
import statistics
import time
from collections import defaultdict

from _setup import run_on_private_database, summary_ms

ADJACENT = "gt:from_bus|gt:to_bus"






def timings_ms(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times




def two_hop_query(start: str) -> str:
    """The buses and branches within two branches of `start`, in the permitted graph's terms (the /shared/topology shape).

    The branch check is a FILTER EXISTS: Oxigraph joins a `?branch a gt:branch` pattern first, over every branch
    (124 ms on this graph instead of 0.6 ms)."""
    branch = "FILTER EXISTS {{ ?{0} a gt:branch }}"
    return f"""SELECT DISTINCT ?bus ?branch WHERE {{
  {{ ?branch {ADJACENT} <{start}>, ?bus {branch.format("branch")} }}
  UNION {{ ?near {ADJACENT} <{start}>, ?mid . ?branch {ADJACENT} ?mid, ?bus {branch.format("near")} {branch.format("branch")} }}
}}"""


def _cim_branch(eq: str, at: str, other: str) -> str:
    """Equipment `?eq` with two terminals, one on node `at`; `other` is the node of either of its terminals."""
    return (f"?{eq}_a cim:Terminal.ConductingEquipment ?{eq} ; cim:Terminal.TopologicalNode {at} . "
            f"?{eq}_b cim:Terminal.ConductingEquipment ?{eq} . FILTER(?{eq}_a != ?{eq}_b) "
            f"?{eq}_c cim:Terminal.ConductingEquipment ?{eq} ; cim:Terminal.TopologicalNode {other} . ")


def two_hop_cim(start: str) -> str:
    """The same question in the grid export's CIM terms: equipment with two terminals is a branch."""
    first = _cim_branch("branch", f"<{start}>", "?bus")
    second = _cim_branch("near", f"<{start}>", "?mid") + _cim_branch("branch", "?mid", "?bus")
    return f"SELECT DISTINCT ?bus ?branch WHERE {{ {{ {first}}} UNION {{ {second}}} }}"


GLOBAL_COUNT = (f"SELECT (COUNT(*) AS ?pairs) WHERE {{ ?a a gt:branch ; {ADJACENT} ?bus . ?b a gt:branch ; {ADJACENT} ?bus . "
                "FILTER(?a != ?b) }")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30, help="warm queries timed per path (≥ 20)")
    parser.add_argument("--cold", type=int, default=3, help="cold queries, each after a new agreement version")
    parser.add_argument("--code", default="1-MVLV-urban-all-0-sw", help="SimBench grid")
    parser.add_argument("--keep", action="store_true", help="keep the private database at the end")
    args = parser.parse_args()
    run_on_private_database("sparql", run, args, keep=args.keep)


def run(args) -> None:
    import orjson
    import pyoxigraph as ox
    from django.conf import settings

    from ontology.converters.pandapower_net import simbench_document
    from ontology.serialization import serialize
    from sharing import decisions, scope, services, sparql
    from sharing.api.sparql import VOCABULARY, permitted_rows
    from sharing.models import DataCategory
    from sharing.principals import CONSUMER, Principal
    from tests.hub import PURPOSE, agreement_in_state, oauth_client, participant_create
    from twin import models as twin
    from twin import selectors
    from twin import services as twin_services

    # --- the grid, through the twin's import path ------------------------------------------------------------------
    provider = participant_create("Bench DSO", ["dso"])
    consumer = participant_create("Bench Aggregator", ["aggregator"])
    started = time.perf_counter()
    document = simbench_document(args.code, base_iri=settings.GRIDTWIN_BASE_IRI)
    grid = twin_services.grid_import_graph(graph=document, participant=provider, source=f"simbench:{args.code}").grid
    del document  # a web worker holds no grid document: the fork cost below depends on the resident size
    gc.collect()
    counts = {model.__name__: model.objects.filter(grid=grid).count() for model in (twin.Bus, *twin.ASSET_MODELS)}
    print(f"grid {args.code}: {counts['Bus']} buses, {sum(counts.values()) - counts['Bus']} assets "
          f"({', '.join(f'{n} {c}' for n, c in counts.items() if c and n != 'Bus')}), imported in {time.perf_counter() - started:.1f} s")

    # --- the agreement: about half of the feeders --------------------------------------------------------------------
    feeders = list(twin.Feeder.objects.filter(grid=grid).order_by("iri").values_list("iri", "buses__id"))
    per_feeder: dict[str, int] = defaultdict(int)
    for iri, bus_id in feeders:
        per_feeder[iri] += bus_id is not None
    chosen, covered = [], 0
    for iri, buses in sorted(per_feeder.items(), key=lambda item: (-item[1], item[0])):
        if covered < counts["Bus"] / 2:
            chosen.append(iri)
            covered += buses
    terms = {"grid_iris": [grid.iri], "feeder_iris": chosen, "categories": [DataCategory.ASSET_METADATA, DataCategory.TOPOLOGY]}
    agreement = agreement_in_state(provider, consumer, "active", **terms)
    client = oauth_client(consumer, "bench-sparql-client")
    principal = Principal(kind="client", participant=consumer, roles=frozenset({CONSUMER}), credential_id=None)
    decision = decisions.decide(principal, "view", "shared.sparql", purpose=PURPOSE)
    in_scope = {model: scope.scope_assets(agreement, model).count() for model in (twin.Bus, *twin.ASSET_MODELS)}
    assets = sum(in_scope.values())
    print(f"agreement: {len(chosen)} of {len(per_feeder)} feeders ({in_scope[twin.Bus]} of {counts['Bus']} buses, {assets} buses and "
          f"assets in scope), asset_metadata + topology, drops {', '.join(agreement.dropped_fields)}")

    # --- the permitted graph, built in parts -------------------------------------------------------------------------
    libc = ctypes.CDLL("libc.so.6") if os.path.exists("/proc/self/statm") else None

    def permitted_graph_parts() -> tuple[float, float, int, int]:
        began = time.perf_counter()
        rows = list(permitted_rows(decision))
        rows_s = time.perf_counter() - began
        if libc is not None:
            libc.malloc_trim(0)  # freed memory back to the system, so the resident size grows by what the store keeps
        before = sparql._resident_bytes()
        began = time.perf_counter()
        store, triples = sparql.graph_build(rows, VOCABULARY)
        build_s = time.perf_counter() - began
        memory = sparql._resident_bytes() - before
        del store
        return rows_s, build_s, triples, memory

    first = permitted_graph_parts()  # the memory is the first build's: later ones reuse what it freed
    parts = [permitted_graph_parts() for _ in range(3)]
    rows_s = statistics.median(p[0] for p in parts)
    build_s = statistics.median(p[1] for p in parts)
    triples, memory = first[2], first[3]
    per_k = (rows_s + build_s) / assets * 1000
    print(f"permitted graph: {triples} triples ({triples / assets:.1f} per asset); build {1000 * (rows_s + build_s):.0f} ms = rows through "
          f"the ORM {1000 * rows_s:.0f} ms + triples into Oxigraph {1000 * build_s:.0f} ms (median of 3) -> {1000 * per_k:.0f} ms per "
          f"1,000 assets; store memory ~{memory / 1e6:.0f} MB ({memory / triples:.0f} B per triple: resident size, first build)")

    # --- the start bus: one whose two-hop neighbourhood lies inside the scope ----------------------------------------------
    ends = {twin.Line: ("from_bus", "to_bus"), twin.Transformer: ("hv_bus", "lv_bus"), twin.Switch: ("bus", "other_bus")}
    adjacency: dict[str, set[str]] = defaultdict(set)
    for model, (one, other) in ends.items():
        for a, b in model.objects.filter(grid=grid).values_list(f"{one}__iri", f"{other}__iri"):
            adjacency[a].add(b)
            adjacency[b].add(a)
    scoped_buses = set(scope.scope_assets(agreement, twin.Bus).values_list("iri", flat=True))

    def within_two(bus: str) -> set[str]:
        first = adjacency[bus] | {bus}
        return first | {c for b in first for c in adjacency[b]}

    start = max(sorted(scoped_buses), key=lambda b: (within_two(b) <= scoped_buses, len(within_two(b))))
    query = two_hop_query(start)

    def endpoint(text: str, **extra) -> bytes:
        response = client.get("/api/v1/shared/sparql", {"purpose": PURPOSE, "query": text, **extra})
        if response.status_code != 200:
            raise SystemExit(f"the endpoint answered {response.status_code}: {response.content[:300]!r}")
        return response.content

    def answer_of(body: bytes) -> set[tuple[str, str]]:
        return {(b["bus"]["value"], b["branch"]["value"]) for b in orjson.loads(body)["results"]["bindings"]}

    # --- cold and warm through the endpoint ---------------------------------------------------------------------------
    cold, cold_builds = [], []
    current = agreement
    for _ in range(args.cold):
        current = services.agreement_amend(agreement=current, actor=provider)
        for step in ("offer", "activate"):
            current = services.agreement_transition(agreement=current, step=step, actor=provider)
        builds = sparql.GRAPHS.builds
        began = time.perf_counter()
        permitted_answer = answer_of(endpoint(query))
        cold.append((time.perf_counter() - began) * 1000)
        cold_builds.append(sparql.GRAPHS.builds - builds)
    if cold_builds != [1] * args.cold:
        raise SystemExit(f"a cold query did not build the graph once: {cold_builds}")
    builds = sparql.GRAPHS.builds
    for _ in range(3):
        endpoint(query)
    warm = timings_ms(lambda: endpoint(query), args.repeat)
    if sparql.GRAPHS.builds != builds:
        raise SystemExit("a warm query rebuilt the graph")
    [entry] = [e for e in sparql.GRAPHS._entries.values() if e.key[0] == current.pk]
    inside = timings_ms(lambda: list(entry.store.query(query, prefixes=sparql.QUERY_PREFIXES)), args.repeat)
    evaluator = timings_ms(lambda: sparql.run_limited(lambda: ({}, b""), timeout_s=5, limits=sparql.limits()), args.repeat)
    resident_mb = sparql._resident_bytes() / 1e6
    fingerprints = timings_ms(lambda: sparql.data_fingerprint(current), args.repeat)
    parses = timings_ms(lambda: sparql.query_form(query), args.repeat)
    decides = timings_ms(lambda: decisions.decide(principal, "view", "shared.sparql", purpose=PURPOSE), args.repeat)
    fingerprinted = (twin.Feeder, twin.BaseVoltage, twin.Bus, *twin.ASSET_MODELS)
    fingerprinted_rows = sum(model.objects.filter(grid=grid).count() for model in fingerprinted)

    # --- the whole grid without policy, in plain Oxigraph -------------------------------------------------------------
    began = time.perf_counter()
    export = serialize(selectors.grid_graph(grid), "nt")
    export_s = time.perf_counter() - began
    began = time.perf_counter()
    whole_export = ox.Store()
    whole_export.bulk_load(export, format=ox.RdfFormat.N_TRIPLES)
    load_s = time.perf_counter() - began
    cim = two_hop_cim(start)
    cim_answer = {(r["bus"].value, r["branch"].value) for r in whole_export.query(cim, prefixes=sparql.QUERY_PREFIXES)}
    plain_export = timings_ms(lambda: list(whole_export.query(cim, prefixes=sparql.QUERY_PREFIXES)), args.repeat)
    open_terms = {**terms, "feeder_iris": [], "dropped_fields": []}
    open_agreement = agreement_in_state(provider, participant_create("Bench Open", ["researcher"]), "active", **open_terms)
    whole_view, _ = sparql.graph_build(permitted_rows(decisions.Decision(
        allowed=True, rule="bench", agreement=open_agreement, obligations=decisions.obligations_of(open_agreement))), VOCABULARY)
    view_answer = {(r["bus"].value, r["branch"].value) for r in whole_view.query(query, prefixes=sparql.QUERY_PREFIXES)}
    plain_view = timings_ms(lambda: list(whole_view.query(query, prefixes=sparql.QUERY_PREFIXES)), args.repeat)
    same = permitted_answer == view_answer == cim_answer
    print(f"two-hop query from {start.rsplit('/', 1)[-1]}: {len({b for b, _ in permitted_answer})} buses, "
          f"{len({br for _, br in permitted_answer})} branches; the same answer from the endpoint, the whole view and the CIM export: "
          f"{'yes' if same else 'NO'}")
    if not same:
        raise SystemExit(f"answers differ: endpoint {len(permitted_answer)}, whole view {len(view_answer)}, CIM export {len(cim_answer)}")
    print(f"whole grid without policy: export {len(whole_export)} triples (rows → CIM graph → N-Triples {export_s:.1f} s, loaded into "
          f"Oxigraph in {load_s:.2f} s); whole twin view {len(whole_view)} triples")

    cold_ms = statistics.median(cold)
    warm_p50, warm_p95 = summary_ms(warm)
    export_p50, _ = summary_ms(plain_export)
    view_p50, _ = summary_ms(plain_view)
    inside_p50, _ = summary_ms(inside)
    fork_p50, fork_p95 = summary_ms(evaluator)
    rest = warm_p50 - inside_p50 - fork_p50 - statistics.median(fingerprints) - statistics.median(decides)
    print(f"two-hop query, ms{'':<70}p50        p95   (cold: median of {args.cold})")
    for label, p50, p95 in (
            ("endpoint, cold: first query after an agreement change (builds the graph)", cold_ms, max(cold)),
            (f"endpoint, warm, over {args.repeat} queries", warm_p50, warm_p95),
            ("  of which the query itself on the permitted store, in process", inside_p50, summary_ms(inside)[1]),
            (f"  of which one forked evaluation's fixed cost (fork, pipe, reap; {resident_mb:.0f} MB resident)", fork_p50, fork_p95),
            (f"  of which the data fingerprint (one SQL statement over {fingerprinted_rows} rows)", *summary_ms(fingerprints)),
            ("  the guard: rdflib parse + algebra walk, once per distinct text (not in warm)", *summary_ms(parses)),
            ("  of which the decision (decide, 'shared.sparql')", *summary_ms(decides)),
            ("  the rest: authentication, DRF, serialising, audit write, response", rest, rest),
            ("plain Oxigraph, whole grid export (CIM terms), in process", export_p50, summary_ms(plain_export)[1]),
            ("plain Oxigraph, whole twin view (same query text), in process", view_p50, summary_ms(plain_view)[1])):
        print(f"  {label:<84}{p50:9.2f}{p95:11.2f}")
    plain_cold = 1000 * load_s + export_p50
    print(f"  ratios: warm endpoint / plain export {warm_p50 / export_p50:.1f}×, / plain whole view {warm_p50 / view_p50:.1f}×; "
          f"cold / warm {cold_ms / warm_p50:.1f}×; cold endpoint / plain (export load + query) {cold_ms / plain_cold:.1f}×")

    counted = orjson.loads(endpoint(GLOBAL_COUNT))["results"]["bindings"][0]["pairs"]["value"]
    global_warm = timings_ms(lambda: endpoint(GLOBAL_COUNT), max(5, args.repeat // 3))
    global_plain = timings_ms(lambda: list(whole_view.query(GLOBAL_COUNT, prefixes=sparql.QUERY_PREFIXES)), max(5, args.repeat // 3))
    whole_pairs = next(iter(whole_view.query(GLOBAL_COUNT, prefixes=sparql.QUERY_PREFIXES)))["pairs"].value
    print(f"global two-hop count (pairs of branches sharing a bus): permitted {counted}, whole {whole_pairs}; endpoint warm "
          f"p50 {statistics.median(global_warm):.1f} ms, plain whole view p50 {statistics.median(global_plain):.1f} ms "
          f"({statistics.median(global_warm) / statistics.median(global_plain):.1f}×)")
    print("summary")
    print(f"  permitted graph: {assets} assets, {triples} triples, built in {1000 * (rows_s + build_s):.0f} ms "
          f"({1000 * per_k:.0f} ms per 1,000 assets), ~{memory / 1e6:.0f} MB")
    print(f"  two-hop query: cold {cold_ms:.0f} ms, warm p50 {warm_p50:.1f} ms (p95 {warm_p95:.1f}); plain Oxigraph on the whole grid "
          f"{export_p50:.2f} ms (CIM export) / {view_p50:.2f} ms (twin view)")


if __name__ == "__main__":
    main()
