"""Import a grid: an RDF file, a pandapower net, a SimBench code or CGMES files, all judged by the shapes."""

import zoneinfo
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ontology.errors import OntologyError
from ontology.parsing import media_type_for_path, parse_rdf
from twin import services

MAX_VIOLATIONS_SHOWN = 25
LOCAL_FILE_MAX_BYTES = 2 * 1024**3


class Command(BaseCommand):
    help = "Import a grid from RDF (Turtle, JSON-LD, RDF/XML, N-Triples), a pandapower JSON net, a SimBench code or CGMES files."

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="*", help="RDF file, pandapower JSON file (--pandapower) or CGMES files (--cgmes)")
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--pandapower", action="store_true", help="FILE is a pandapower net saved with to_json")
        source.add_argument("--simbench", metavar="CODE", help="a SimBench code, e.g. 1-LV-rural1--0-sw (offline)")
        source.add_argument("--cgmes", action="store_true", help="FILES are the profiles (EQ, TP, SSH, SV) of one CGMES model")
        parser.add_argument("--participant", help="IRI or name of the owning participant (default: Local operator)")
        parser.add_argument("--name", help="grid name for converted models")
        parser.add_argument("--time-zone", help="IANA time zone of the grid (days of its aggregates are local days); "
                                                "default Europe/Berlin for SimBench grids, else UTC for a new grid")

    def handle(self, *args, files, pandapower, simbench, cgmes, participant, name, time_zone, **options):
        time_zone = time_zone or ("Europe/Berlin" if simbench else None)
        if time_zone and time_zone not in zoneinfo.available_timezones():
            raise CommandError(f"--time-zone {time_zone!r} is not an IANA time zone")
        participant = services.participant_for_cli(participant)
        try:
            graph, source = self.read(files, pandapower=pandapower, simbench=simbench, cgmes=cgmes, participant=participant, name=name)
            self.stderr.write(f"validating {len(graph)} triples against the gridtwin shapes …")
            result = services.grid_import_graph(graph=graph, participant=participant, source=source)
        except services.ShapeViolation as exc:
            raise CommandError(self.describe_violations(exc)) from exc
        except OntologyError as exc:
            raise CommandError(describe_error(exc)) from exc
        summary = ", ".join(f"{k}: +{v['created']} ~{v['updated']} -{v['deleted']}" for k, v in result.counts.items() if any(v.values()))
        self.stderr.write(f"{'created' if result.created else 'updated' if result.changed else 'unchanged'}: {summary or 'no changes'}")
        if time_zone and result.grid.time_zone != time_zone:
            type(result.grid).objects.filter(pk=result.grid.pk).update(time_zone=time_zone)
        self.stdout.write(f"grid {result.grid.pk} {result.grid.iri}")

    def read(self, files, *, pandapower, simbench, cgmes, participant, name):
        base = settings.GRIDTWIN_BASE_IRI
        if simbench:
            from ontology.converters.pandapower_net import simbench_document

            self.stderr.write(f"converting SimBench grid {simbench} …")
            return simbench_document(simbench, base_iri=base, owner_iri=participant.iri), f"simbench:{simbench}"
        if not files:
            raise CommandError("name a file (or --simbench CODE)")
        paths = [Path(f) for f in files]
        for path in paths:
            if not path.is_file():
                raise CommandError(f"{path}: no such file")
        if cgmes:
            from ontology.converters.cgmes import cgmes_to_graph

            self.stderr.write(f"converting {len(paths)} CGMES file(s) …")
            source = "cgmes:" + ",".join(p.name for p in paths)  # Grid.source holds 200 characters; conformity sets name more
            return cgmes_to_graph(paths, grid_name=name, owner_iri=participant.iri), source if len(source) <= 200 else source[:199] + "…"
        if len(paths) != 1:
            raise CommandError("give exactly one file (several only with --cgmes)")
        if pandapower:
            return self.read_pandapower(paths[0], base, participant, name), f"pandapower:{paths[0].name}"
        self.stderr.write(f"parsing {paths[0]} …")
        data = paths[0].read_bytes()
        # a local file chosen by the operator: the HTTP body limit does not apply, every other check does
        graph = parse_rdf(data, media_type_for_path(paths[0]), max_bytes=LOCAL_FILE_MAX_BYTES,
                          max_literal_chars=settings.GRIDTWIN_MAX_LITERAL_CHARS)
        return graph, f"file:{paths[0].name}"

    def read_pandapower(self, path, base, participant, name):
        import pandapower

        from ontology.converters.pandapower_net import net_to_document

        try:
            net = pandapower.from_json(str(path))
        except Exception as exc:  # pandapower raises many kinds for a broken file
            raise CommandError(f"{path}: not a pandapower JSON net ({exc})") from exc
        grid_name = name or net.name or path.stem
        return net_to_document(net, grid_iri=f"{base}pandapower/{path.stem}", grid_name=grid_name, owner_iri=participant.iri)

    def describe_violations(self, exc) -> str:
        lines = [exc.message]
        for v in exc.report.violations[:MAX_VIOLATIONS_SHOWN]:
            where = f"{v.focus_node}" + (f" {v.path}" if v.path else "") + (f" = {v.value}" if v.value is not None else "")
            lines.append(f"  {v.severity}: {where}: {v.message}")
        if len(exc.report.violations) > MAX_VIOLATIONS_SHOWN:
            lines.append(f"  … and {len(exc.report.violations) - MAX_VIOLATIONS_SHOWN} more")
        return "\n".join(lines)


def describe_error(exc: OntologyError) -> str:
    where = "".join(f" ({k} {v})" for k, v in (("line", exc.line), ("node", exc.node)) if v is not None)
    return f"{exc.reason}: {exc.message}{where}"
