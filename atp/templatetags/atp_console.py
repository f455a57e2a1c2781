"""Template filters of ATP's admin console."""

from django import template

from atp.admin import display

register = template.Library()


@register.filter
def ago(value, now=None):
    """``12 s ago`` for a past time (relative to ``now``, default the current time)."""
    return display.ago(value, now)


@register.filter
def in_list(value, values):
    """Whether ``value`` is one of ``values``."""
    return value in values
