"""``manage.py atp_status``: print how many tasks are in each status, and what to read next."""

from django.core.management.base import BaseCommand
from django.db.models import Count
from django.urls import NoReverseMatch, reverse

from atp.examples import INTENDED_FAILURES
from atp.models import Status, TaskInstance
from atp.tracker import count_by_status

#: The README sections an operator reads next.
README_SECTIONS = "README.md: 'Statuses', 'The daemon: manage.py atpd', 'The admin'"


class Command(BaseCommand):
    """The ``manage.py atp_status`` command (see ``help``)."""

    help = (
        "Print the number of ATP tasks in each status; explain failures of the example "
        "types and where to look at failed tasks."
    )

    def handle(self, *args, **options):
        """Run the command with the parsed options."""
        for name, count in count_by_status().items():
            self.stdout.write(f"{name:<10} {count}")
        failed = dict(
            TaskInstance.objects.filter(status=Status.FAILED)
            .order_by()
            .values_list("type__identifier")
            .annotate(n=Count("id"))
        )
        if not failed:
            return
        self.stdout.write("")
        for type_identifier, count in sorted(failed.items()):
            why = INTENDED_FAILURES.get(type_identifier)
            if why:
                self.stdout.write(f"{count} FAILED {type_identifier}: intended ({why}).")
            else:
                self.stdout.write(f"{count} FAILED {type_identifier}.")
        self.stdout.write("Where to look next:")
        self.stdout.write(f"  admin: {self._admin_url()} (python manage.py runserver first)")
        self.stdout.write("  this summary again: python manage.py atp_status")
        self.stdout.write(f"  {README_SECTIONS}")

    def _admin_url(self) -> str:
        """The admin's list of FAILED tasks on the development server, if the admin is on."""
        try:
            path = reverse("admin:atp_taskinstance_changelist")
        except NoReverseMatch:
            return "(django.contrib.admin is not installed)"
        return f"http://127.0.0.1:8000{path}?status__exact={Status.FAILED.value}"
