"""The schedule admin: periodic tasks with their next and last runs; edits go through
``atp.schedules``, so the admin checks exactly what ``register_schedule`` checks."""

from django import forms
from django.contrib import admin, messages
from django.db.models import OuterRef, Subquery
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from atp import schedules
from atp.admin import display
from atp.exceptions import ATPError, InvalidInput
from atp.models import Schedule, TaskInstance
from atp.schedules import cleaning
from atp.schedules.runs import runs_of
from atp.schedules.slots import zone

#: Runs listed on a schedule's page.
RECENT_RUNS = 20


class ScheduleForm(forms.ModelForm):
    """The schedule's fields, each checked by ``atp.schedules.cleaning`` (errors per field)."""

    class Meta:
        model = Schedule
        fields = (
            "name",
            "task_type",
            "cron",
            "every",
            "timezone",
            "input",
            "enabled",
            "catch_up",
            "options",
        )

    def _check(self, field, check, *args):
        try:
            return check(*args)
        except InvalidInput as exc:
            self.add_error(field, str(exc))
            return None

    def clean(self):
        """Check every field as ``register_schedule`` does, each error on its own field."""
        data = super().clean()
        if "name" in data:
            self._check("name", cleaning.name, data["name"])
        self._check("timezone", cleaning.zone, data.get("timezone"))
        cron, every = data.get("cron") or None, data.get("every")
        if (cron is None) == (every is None):
            self.add_error("cron", "give exactly one of cron and every")
        elif cron is not None:
            self._check("cron", cleaning.expand_cron, cron)
        else:
            self._check("every", cleaning.every, every)
        self._check("input", cleaning.validation.json_input, data.get("input"), "the runs")
        options = data.get("options") or {}
        if not isinstance(options, dict):
            self.add_error("options", 'options must be a JSON object such as {"priority": 5}')
        else:
            self._check("options", cleaning.run_options, options)
        return data


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    """Schedules: list with next and last run; enable, disable and run now as actions."""

    form = ScheduleForm
    change_form_template = "admin/atp/schedule/change_form.html"
    list_display = (
        "name",
        "task_type",
        "timing",
        "enabled",
        "next_run",
        "last_run_status",
        "source",
    )
    list_filter = ("enabled", "source", "task_type")
    search_fields = ("name",)
    list_select_related = ("task_type",)
    actions = ("enable", "disable", "run_now")
    readonly_fields = (
        "source",
        "next_runs",
        "recent_runs",
        "checked_until",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "task_type", "input", "options")}),
        ("When", {"fields": ("cron", "every", "timezone", "catch_up", "enabled", "next_runs")}),
        (
            "Runs",
            {"fields": ("recent_runs", "checked_until", "source", "created_at", "updated_at")},
        ),
    )

    def get_queryset(self, request):
        """Schedules with their last run's identifier and status (a primary-key lookup each)."""
        last = TaskInstance.objects.filter(pk=OuterRef("last_task_id"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                last_identifier=Subquery(last.values("identifier")),
                last_status=Subquery(last.values("status")),
            )
        )

    def get_readonly_fields(self, request, obj=None):
        """The name is fixed once saved: runs are named after it."""
        fixed = ("name",) if obj is not None else ()
        return fixed + self.readonly_fields

    def save_model(self, request, obj, form, change):
        """Save through ``atp.schedules`` (an upsert by name), as code would."""
        data = form.cleaned_data
        values = cleaning.schedule(
            obj.name,
            data["task_type"],
            data.get("cron") or None,
            data.get("every"),
            data["timezone"],
            data.get("input"),
            data["enabled"],
            data["catch_up"],
            data.get("options") or {},
        )
        saved = schedules.save(values, source=obj.source if change else Schedule.Source.CODE)
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        """Delete through ``unregister_schedule``; its runs stay."""
        schedules.unregister_schedule(obj.name)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The schedule's page, with buttons for the actions."""
        buttons = [("enable", "Enable"), ("disable", "Disable"), ("run_now", "Run now")]
        extra_context = {**(extra_context or {}), "atp_actions": buttons}
        return super().change_view(request, object_id, form_url, extra_context)

    # --- actions ------------------------------------------------------------------------

    def _each(self, request, queryset, step, verb):
        done, failed = [], []
        for name in queryset.values_list("name", flat=True):
            try:
                step(name)
                done.append(name)
            except ATPError as exc:
                failed.append(f"{name}: {exc}")
        text = f"{verb} {len(done)} schedule(s)" + (f": {', '.join(done[:10])}" if done else ".")
        self.message_user(request, text, messages.SUCCESS)
        if failed:
            self.message_user(request, "; ".join(failed), messages.WARNING)

    @admin.action(description="Enable (missed slots run by their catch-up)", permissions=["change"])
    def enable(self, request, queryset):
        """Resume the selected schedules."""
        self._each(request, queryset, schedules.resume_schedule, "Enabled")

    @admin.action(description="Disable", permissions=["change"])
    def disable(self, request, queryset):
        """Pause the selected schedules."""
        self._each(request, queryset, schedules.pause_schedule, "Disabled")

    @admin.action(description="Run now (an extra run)", permissions=["change"])
    def run_now(self, request, queryset):
        """Enqueue an extra run of each selected schedule."""
        self._each(request, queryset, schedules.run_now, "Ran")

    # --- columns and fields ------------------------------------------------------------

    @admin.display(description="when")
    def timing(self, schedule):
        """The cron and its time zone, or the interval."""
        return schedule.describe()

    @admin.display(description="next run", ordering="next_slot")
    def next_run(self, schedule):
        """The next slot (none while disabled)."""
        return schedule.next_slot if schedule.enabled else "—"

    @admin.display(description="last run")
    def last_run_status(self, schedule):
        """The latest run, linked, with its status."""
        if schedule.last_identifier is None:  # none yet, or deleted since (retention)
            return "—"
        url = reverse("admin:atp_taskinstance_change", args=[schedule.last_task_id])
        return format_html(
            '<a href="{}">{}</a> {}',
            url,
            schedule.last_identifier,
            display.status_badge(schedule.last_status),
        )

    @admin.display(description="next 5 runs")
    def next_runs(self, schedule):
        """The next five slots, in UTC and in the schedule's time zone."""
        if schedule.pk is None:
            return "—"
        slots = schedules.next_runs(schedule.name, count=5)
        tz = zone(schedule.timezone)
        return (
            format_html_join(
                "",
                "<div>{} UTC &nbsp; ({} {})</div>",
                (
                    (
                        f"{s:%Y-%m-%d %H:%M:%S}",
                        f"{s.astimezone(tz):%Y-%m-%d %H:%M:%S %Z}",
                        schedule.timezone,
                    )
                    for s in slots
                ),
            )
            or "none (the cron never matches again)"
        )

    @admin.display(description="recent runs")
    def recent_runs(self, schedule):
        """The latest runs, newest first, linked, with their status."""
        if schedule.pk is None:
            return "—"
        tasks = list(runs_of(schedule)[:RECENT_RUNS])
        if not tasks:
            return "none yet"
        return format_html_join(
            "",
            '<div><a href="{}">{}</a> {} enqueued {}</div>',
            (
                (
                    reverse("admin:atp_taskinstance_change", args=[t.pk]),
                    t.identifier,
                    display.status_badge(t.status),
                    f"{t.enqueued_at:%Y-%m-%d %H:%M:%S}",
                )
                for t in tasks
            ),
        )
