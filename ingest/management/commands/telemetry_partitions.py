"""Create the monthly partitions of the readings table ahead of the data (PostgreSQL)."""

from django.core.management.base import BaseCommand

from ingest import services


class Command(BaseCommand):
    help = "Create the readings partitions of this month and the next N months (workers also create missing ones on demand)."

    def add_arguments(self, parser):
        parser.add_argument("--months", type=int, default=3)

    def handle(self, *args, months, **options):
        names = services.reading_partitions_ahead(months=months)
        self.stdout.write("\n".join(names) if names else "not PostgreSQL: the readings table is not partitioned")
