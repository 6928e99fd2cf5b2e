"""Register a participant with one operator user and print the operator's API token once."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from twin.models import Credential, Participant


class Command(BaseCommand):
    help = "Create (or reuse) participant NAME with operator USERNAME and print a new API token for them."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("username")
        parser.add_argument("--iri", help="the participant's IRI (default: minted from the name)")

    def handle(self, *args, name: str, username: str, iri: str | None, **options):
        iri = iri or f"{settings.GRIDTWIN_BASE_IRI}participant/{'-'.join(name.lower().split())}"
        participant, _ = Participant.objects.get_or_create(iri=iri, defaults={"name": name})
        user, _ = get_user_model().objects.get_or_create(username=username)
        participant.members.add(user)
        _, raw = Credential.issue(kind=Credential.Kind.TOKEN, participant=participant, user=user, name=f"{participant.name} operator")
        self.stderr.write(f"participant {participant.iri}; operator {username}; the token is shown once:")
        self.stdout.write(raw)
