"""Export a grid as RDF."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from ontology.serialization import FORMATS, serialize
from twin import models, selectors


class Command(BaseCommand):
    help = "Export GRID (id or IRI) as Turtle, JSON-LD, RDF/XML or N-Triples."

    def add_arguments(self, parser):
        parser.add_argument("grid", help="grid id or IRI")
        parser.add_argument("--format", choices=sorted(FORMATS), default="turtle")
        parser.add_argument("-o", "--output", help="file to write (default: standard output)")

    def handle(self, *args, grid, format, output, **options):
        found = models.Grid.objects.filter(pk=int(grid)).first() if grid.isdigit() else models.Grid.objects.filter(iri=grid).first()
        if found is None:
            raise CommandError(f"no grid {grid!r}")
        body = serialize(selectors.grid_graph(found), format)
        if output:
            Path(output).write_bytes(body)
            self.stderr.write(f"wrote {len(body)} bytes to {output}")
        else:
            self.stdout.write(body.decode(), ending="")
