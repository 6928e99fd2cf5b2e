"""Register an OAuth2 API client (client credentials) for a participant and print its id and secret once."""

from django.core.management.base import BaseCommand, CommandError

from sharing.oauth import api_client_issue
from twin.models import Participant


class Command(BaseCommand):
    help = ("Issue an API client for PARTICIPANT (IRI or name); prints `client_id client_secret participant_iri` once "
            "(the secret is stored hashed).")

    def add_arguments(self, parser):
        parser.add_argument("participant", help="IRI or name of the participant")
        parser.add_argument("--name", default="", help="a name for the client (default: the participant's)")
        parser.add_argument("--scopes", default="shared:read", help="space-separated: shared:read, operator")

    def handle(self, *args, participant: str, name: str, scopes: str, **options):
        found = Participant.objects.filter(iri=participant).first() or Participant.objects.filter(name=participant).first()
        if found is None:
            raise CommandError(f"no participant {participant!r}")
        unknown = set(scopes.split()) - {"shared:read", "operator"}
        if unknown:
            raise CommandError(f"unknown scope(s): {', '.join(sorted(unknown))}")
        _, client_id, secret = api_client_issue(participant=found, name=name or f"{found.name} client", scopes=scopes)
        self.stderr.write(f"API client of {found.iri}; the secret is shown once:")
        self.stdout.write(f"{client_id} {secret} {found.iri}")
