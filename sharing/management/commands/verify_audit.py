"""Walk the audit's hash chain: exit 0 when it is intact, 1 with the first broken entry when it is not."""

from django.core.management.base import BaseCommand, CommandError

from sharing.audit import audit_verify


class Command(BaseCommand):
    help = "Verify the audit's hash chain; on a break, print the first broken entry and exit with status 1."

    def handle(self, *args, **options):
        verification = audit_verify()
        if not verification.ok:
            raise CommandError(f"audit chain broken at entry {verification.first_bad_id}: {verification.problem} "
                               f"({verification.entries} entries before it intact)")
        self.stdout.write(f"audit chain intact: {verification.entries} entries")
