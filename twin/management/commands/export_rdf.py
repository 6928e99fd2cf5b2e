"""Export a grid as RDF."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from ontology.serialization import FORMATS, serialize
from twin import history, models, selectors
from twin.ids import parse_id


class Command(BaseCommand):
    help = "Export GRID (id or IRI) as Turtle, JSON-LD, RDF/XML or N-Triples."

    def add_arguments(self, parser):
        parser.add_argument("grid", help="grid id or IRI")
        parser.add_argument("--format", choices=sorted(FORMATS), default="turtle")
        parser.add_argument("-o", "--output", help="file to write (default: standard output)")
        parser.add_argument("--grid-version", type=int, metavar="N", help="export version N of the grid (default: the grid now)")

    def handle(self, *args, grid, format, output, grid_version, **options):
        number = parse_id(grid)
        found = models.Grid.objects.filter(pk=number).first() if number else models.Grid.objects.filter(iri=grid).first()
        if found is None:
            raise CommandError(f"no grid {grid!r}")
        graph = selectors.grid_graph(found) if grid_version is None else history.version_graph(found, grid_version)
        if graph is None:
            raise CommandError(f"grid {found.pk} has no version {grid_version}")
        body = serialize(graph, format)
        if output:
            Path(output).write_bytes(body)
            self.stderr.write(f"wrote {len(body)} bytes to {output}")
        else:
            self.stdout.write(body.decode(), ending="")
