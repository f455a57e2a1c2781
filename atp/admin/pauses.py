"""Pausing from the admin: paused queues (pause one by name, resume the selected) and the
pause/resume actions of the task type list. Every change goes through ``atp.control``, and
needs the permission to change task types, as over HTTP."""

from django import forms
from django.contrib import admin, messages

from atp import control, validation
from atp.exceptions import InvalidInput
from atp.models import QueuePause, Status, TaskInstance

#: The permission every pause and resume needs (the HTTP routes ask for it too).
PAUSE_PERMISSION = "atp.change_tasktype"


class QueuePauseForm(forms.ModelForm):
    """Names the queue to pause; checked as ``control.pause_queue`` checks it."""

    class Meta:
        model = QueuePause
        fields = ("queue",)

    def clean_queue(self):
        """The queue name, or the error ``control.pause_queue`` would raise."""
        try:
            return validation.identifier(self.cleaned_data["queue"], "queue")
        except InvalidInput as exc:
            raise forms.ValidationError(str(exc)) from exc


@admin.action(description="Resume the selected queues", permissions=["change"])
def resume_queues(modeladmin, request, queryset):
    """Resume each selected queue (``control.resume_queue``)."""
    names = list(queryset.values_list("queue", flat=True))
    for name in names:
        control.resume_queue(name)
    modeladmin.message_user(request, f"Resumed {len(names)} queue(s): {', '.join(names)}.")


@admin.register(QueuePause)
class QueuePauseAdmin(admin.ModelAdmin):
    """The paused queues; adding one pauses it, the action resumes (a queue may not exist yet)."""

    form = QueuePauseForm
    list_display = ("queue", "paused_at", "waiting_tasks")
    actions = [resume_queues]

    def has_module_permission(self, request):
        """Shown to whoever may see task types."""
        return request.user.has_perm("atp.view_tasktype")

    def has_view_permission(self, request, obj=None):
        """Whoever may see task types may see the pauses."""
        return request.user.has_perm("atp.view_tasktype") or self.has_change_permission(request)

    def has_add_permission(self, request):
        """Pausing needs the permission to change task types."""
        return request.user.has_perm(PAUSE_PERMISSION)

    def has_change_permission(self, request, obj=None):
        """Resuming (the action) needs the permission to change task types."""
        return request.user.has_perm(PAUSE_PERMISSION)

    def has_delete_permission(self, request, obj=None):
        """Resume through the action, which notifies the daemons; never delete the row."""
        return False

    def get_readonly_fields(self, request, obj=None):
        """A pause's queue is fixed once saved (resume it and pause another)."""
        return ("queue", "paused_at") if obj else ("paused_at",)

    def save_model(self, request, obj, form, change):
        """Pause through ``control.pause_queue``."""
        if not change:
            control.pause_queue(obj.queue)
            obj.pk = QueuePause.objects.get(queue=obj.queue).pk

    @admin.display(description="waiting tasks")
    def waiting_tasks(self, pause):
        """How many tasks of the queue wait (up to 10,000 counted)."""
        waiting = TaskInstance.objects.filter(queue=pause.queue, status=Status.ACCEPTED)
        return waiting.order_by().values("pk")[:10_000].count()


@admin.action(description="Pause the selected task types", permissions=["change"])
def pause_types(modeladmin, request, queryset):
    """Pause each selected type (``control.pause_task_type``)."""
    _set(modeladmin, request, queryset, control.pause_task_type, "Paused")


@admin.action(description="Resume the selected task types", permissions=["change"])
def resume_types(modeladmin, request, queryset):
    """Resume each selected type (``control.resume_task_type``)."""
    _set(modeladmin, request, queryset, control.resume_task_type, "Resumed")


def _set(modeladmin, request, queryset, call, verb) -> None:
    names = list(queryset.values_list("identifier", flat=True))
    changed = [name for name in names if call(name)]
    unchanged = len(names) - len(changed)
    text = f"{verb} {len(changed)} task type(s)" + (f": {', '.join(changed)}" if changed else "")
    if unchanged:
        text += f"; {unchanged} already were"
    modeladmin.message_user(request, text + ".", messages.SUCCESS)
