"""Register a gateway (telemetry source) for a participant and print its key once."""

from django.core.management.base import BaseCommand, CommandError

from ingest import services
from twin import models


class Command(BaseCommand):
    help = "Register a telemetry source (a gateway) for a participant; prints its key, which is stored only as a hash."

    def add_arguments(self, parser):
        parser.add_argument("participant", help="IRI or name of the participant")
        parser.add_argument("name", help="source name, a slug; also the MQTT topic segment (gridtwin/telemetry/<name>/json)")

    def handle(self, *args, participant, name, **options):
        owner = models.Participant.objects.filter(iri=participant).first() or models.Participant.objects.filter(name=participant).first()
        if owner is None:
            raise CommandError(f"no participant {participant!r}")
        if models.TelemetrySource.objects.filter(name=name).exists():
            raise CommandError(f"a source named {name!r} exists already")
        _, key = services.telemetry_source_issue(participant=owner, name=name)
        self.stdout.write(key)
