"""``manage.py atp_examples``: register the example task types and enqueue a few tasks."""

from django.core.management.base import BaseCommand

from atp.examples import enqueue_examples, register_examples


class Command(BaseCommand):
    """The ``manage.py atp_examples`` command (see ``help``)."""

    help = "Register ATP's example task types and enqueue example tasks for atpd to run."

    def add_arguments(self, parser):
        """Declare the command's options."""
        parser.add_argument(
            "--count", type=int, default=2, help="Tasks to enqueue per example type (default 2)."
        )

    def handle(self, *args, count, **options):
        """Run the command with the parsed options."""
        types = register_examples()
        ids = enqueue_examples(count)
        self.stdout.write(f"Registered {len(types)} example task types; enqueued {len(ids)} tasks.")
        self.stdout.write(
            f"The {count} example.fail task(s) will end FAILED on purpose (their handler "
            "always raises); atp_status explains the counts."
        )
