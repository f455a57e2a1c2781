"""``manage.py atp_status``: print how many tasks are in each status."""

from django.core.management.base import BaseCommand

from atp.tracker import count_by_status


class Command(BaseCommand):
    """The ``manage.py atp_status`` command (see ``help``)."""

    help = "Print the number of ATP tasks in each status."

    def handle(self, *args, **options):
        """Run the command with the parsed options."""
        for name, count in count_by_status().items():
            self.stdout.write(f"{name:<10} {count}")
