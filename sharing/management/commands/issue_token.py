"""Issue an API token for a user acting for one participant; the secret is printed once and only its hash is kept."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from twin.models import Credential, Participant


class Command(BaseCommand):
    help = "Issue an API token for USERNAME (acting for its participant, or --participant IRI) and print it once."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="")
        parser.add_argument("--participant", help="IRI of the participant the token acts for (when the user acts for several)")

    def handle(self, *args, username: str, name: str, participant: str | None, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        participants = Participant.objects.filter(members=user)
        if participant:
            participants = participants.filter(iri=participant)
        found = list(participants[:2])
        if len(found) != 1:
            raise CommandError(f"{username} acts for {'no' if not found else 'several'} participant(s): name one with --participant IRI")
        _, raw = Credential.issue(kind=Credential.Kind.TOKEN, participant=found[0], user=user, name=name)
        self.stdout.write(raw)
