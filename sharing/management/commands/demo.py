"""The main job on the embedded default: publish grids, export them, show a rejection, draw the grid, solve, share."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from rdflib import Literal
from rdflib.namespace import XSD

from ontology.namespaces import CIM
from sharing.demo_story import aggregator_story
from twin import models, plots, selectors, services
from twin.loadflow import services as loadflow
from twin.models import Credential
from twin.plots import draw_grid_map
from twin.sv_comparison import sv_deviation

OUT = Path(settings.GRIDTWIN_DEMO_DIR)


class Command(BaseCommand):
    help = "Run the gridtwin demo: SimBench and CGMES imports, RDF export, a SHACL rejection and a grid map."

    def add_arguments(self, parser):
        parser.add_argument("--simbench", default="1-LV-rural1--0-sw")

    def handle(self, *args, simbench: str, **options):
        OUT.mkdir(parents=True, exist_ok=True)
        participant = services.participant_for_cli(None)
        self.step(f"1. Publish SimBench grid {simbench}")
        call_command("import_grid", simbench=simbench, stdout=self.stdout, stderr=self.stderr)
        grid = models.Grid.objects.get(source=f"simbench:{simbench}")
        self.step("2. Publish it again: idempotent by IRI")
        call_command("import_grid", simbench=simbench, stdout=self.stdout, stderr=self.stderr)
        self.step("3. Export as Turtle and JSON-LD")
        for fmt, ext in (("turtle", "ttl"), ("json-ld", "jsonld")):
            path = OUT / f"{simbench}.{ext}"
            call_command("export_rdf", str(grid.pk), format=fmt, output=str(path), stderr=self.stderr)
        self.step("4. A broken edit is rejected by the SHACL shapes, nothing is written")
        self.show_rejection(grid, participant)
        self.step("5. Publish a CGMES model (CIGRE MV, exported by a commercial tool)")
        self.import_cgmes()
        self.step("6. Draw the grid")
        png = draw_grid_map(grid, OUT / f"{simbench}-map.png")
        self.stdout.write(f"grid map with load-flow voltages: {png}")
        self.step("7. Replay a day of SimBench load and PV profiles through the telemetry pipeline")
        call_command("replay_telemetry", grid=grid.pk, simbench_profiles=True, days=1, stdout=self.stdout, stderr=self.stderr)
        self.step("8. Load flows: a snapshot, a day of time series with violations, a voltage profile")
        self.show_loadflows(grid, simbench)
        self.step("9. Share with an aggregator: an offer, the catalog, a request approved, feeder aggregates, SPARQL, the audit")
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        aggregator_story(grid, day, self.stdout.write)
        self.step("10. Try the API")
        self.print_tour(grid, participant)

    def step(self, title: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"\n{title}"))

    def show_rejection(self, grid, participant) -> None:
        graph = selectors.grid_graph(grid)
        line = sorted(graph.subjects(CIM["Conductor.length"], None))[0]
        graph.set((line, CIM["Conductor.length"], Literal(-0.2, datatype=XSD.double)))
        version = grid.version
        try:
            services.grid_import_graph(graph=graph, participant=participant)
        except services.ShapeViolation as exc:
            for violation in exc.report.violations:
                self.stdout.write(f"  {violation.severity}: {violation.focus_node} {violation.path} = {violation.value}")
                self.stdout.write(f"    {violation.message}")
        grid.refresh_from_db()
        self.stdout.write(f"grid version still {grid.version} (was {version})")

    def import_cgmes(self) -> None:
        import cimpy

        folder = Path(cimpy.__file__).parent / "examples" / "sampledata" / "CIGRE_MV"
        files = sorted(str(p) for p in folder.glob("*.xml") if not p.name.endswith("_DI.xml"))
        call_command("import_grid", *files, cgmes=True, name="CIGRE MV (CGMES)", stdout=self.stdout, stderr=self.stderr)
        grid = models.Grid.objects.filter(source__startswith="cgmes:").latest("updated_at")
        dvm_pu, dva_degree = sv_deviation(grid)
        self.stdout.write(f"twin load flow vs the SV profile: max |Δvm| {dvm_pu:.1e} p.u., max |Δva| {dva_degree:.1e}°")

    def show_loadflows(self, grid, simbench: str) -> None:
        """Solve here (no workers needed): yesterday at noon, and yesterday in 96 steps — the day step 7 replayed."""
        def solve(**request):
            run = loadflow.loadflow_run_create(grid=grid, trigger="command", **request)
            for index in loadflow.loadflow_run_execute(run_id=run.pk):
                loadflow.loadflow_chunk_solve(run_id=run.pk, index=index)
            run.refresh_from_db()
            return run

        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        snapshot = solve(at=day + timedelta(hours=12))
        s = snapshot.summary
        self.stdout.write(f"snapshot run {snapshot.pk} at {snapshot.at:%Y-%m-%d %H:%M}: {snapshot.status}, vm {s['vm_min_pu']:.4f}–"
                          f"{s['vm_max_pu']:.4f} pu, max line loading {s['line_loading_max_percent']:.1f} %, inputs {snapshot.inputs}")
        band = {}
        series = solve(kind="timeseries", start=day, end=day + timedelta(days=1))
        if not series.violations.exists():
            low, high = series.summary["vm_min_pu"], series.summary["vm_max_pu"]
            band = {"vm_min_pu": round(low + 0.4 * (high - low), 4)}
            self.stdout.write(f"the day stays within EN 50160's ±10 % (vm {low:.4f}–{high:.4f} pu): solving it again with a lower "
                              f"limit of {band['vm_min_pu']} pu (a demo band, not a real limit) to show where the evening peak pulls "
                              "voltages down")
            series = solve(kind="timeseries", start=day, end=day + timedelta(days=1), parameters=band)
        self.stdout.write(f"time-series run {series.pk}: {series.status}, {series.steps_done} steps in {series.chunks_total} chunk(s), "
                          f"{series.summary['violations']} violation period(s), {series.timings['wall_s']:.2f} s")
        for violation in series.violations.order_by("-steps")[:5]:
            self.stdout.write(f"  {violation.severity}: {'/'.join(violation.asset_iri.rsplit('/', 2)[-2:])} {violation.quantity} "
                              f"{violation.value:.4f} (limit {violation.limit}) {violation.start:%H:%M}–{violation.end:%H:%M}")
        path = OUT / f"{simbench}-voltage-profile.png"
        path.write_bytes(plots.run_picture(series, "voltage-profile"))
        self.stdout.write(f"voltage profile along the feeders at the day's lowest voltage: {path}")

    def print_tour(self, grid, participant) -> None:
        user, _ = get_user_model().objects.get_or_create(username="demo")
        participant.members.add(user)
        _, token = Credential.issue(kind=Credential.Kind.TOKEN, participant=participant, user=user, name="demo")
        (OUT / "token.txt").write_text(token + "\n")
        self.stdout.write(f"operator 'demo' of {participant.name}; API token saved in {OUT / 'token.txt'}")
        self.stdout.write("start the server with `.venv/bin/python manage.py runserver` and follow the README's tour, e.g.")
        self.stdout.write(f'  curl -H "Authorization: Token $(cat var/demo/token.txt)" -H "Accept: text/turtle" '
                          f"http://127.0.0.1:8000/api/v1/grids/{grid.pk}/rdf")
