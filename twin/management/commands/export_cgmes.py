"""Export a grid as CGMES 2.4.15 or 3.0: EQ, TP, SSH, and SV from a succeeded load-flow run of the grid."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from ontology.converters.cgmes_export import VERSIONS
from ontology.errors import OntologyError
from twin import models
from twin.cgmes_export import grid_cgmes_profiles, profile_file_name
from twin.ids import parse_id


class Command(BaseCommand):
    help = "Export GRID (id or IRI) as CGMES profiles EQ, TP, SSH (and SV with --run RUN) into DIR."

    def create_parser(self, prog_name, subcommand, **kwargs):
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)  # --version: the CGMES version

    def add_arguments(self, parser):
        parser.add_argument("grid", help="grid id or IRI")
        parser.add_argument("--version", dest="cgmes_version", choices=VERSIONS, default="3.0", help="CGMES version (default 3.0)")
        parser.add_argument("--run", type=int, help="a succeeded load-flow run of the grid: its bus voltages become the SV profile")
        parser.add_argument("-o", "--output", required=True, help="folder to write the profiles into")

    def handle(self, *args, grid, cgmes_version, run, output, **options):
        number = parse_id(grid)
        found = models.Grid.objects.filter(pk=number).first() if number else models.Grid.objects.filter(iri=grid).first()
        if found is None:
            raise CommandError(f"no grid {grid!r}")
        try:
            profiles = grid_cgmes_profiles(found, version=cgmes_version, run_id=run)
        except OntologyError as exc:
            raise CommandError(f"{exc.reason}: {exc.message}" + (f" (node {exc.node})" if exc.node else "")) from exc
        folder = Path(output)
        folder.mkdir(parents=True, exist_ok=True)
        for profile, body in profiles.items():
            path = folder / profile_file_name(found, cgmes_version, profile)
            path.write_bytes(body)
            self.stdout.write(f"wrote {path} ({len(body)} bytes)")
