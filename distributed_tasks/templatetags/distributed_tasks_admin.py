"""Template filters of the admin pages (``{% load distributed_tasks_admin %}``)."""

from __future__ import annotations

import datetime as dt

from django import template
from django.utils import timezone
from django.utils.safestring import SafeString

from distributed_tasks.admin.display import age, code_spans

register = template.Library()


@register.filter(name="code_spans")
def code_spans_filter(text: str) -> SafeString:
    """A health problem (plain text with `backticked` commands) as escaped HTML."""
    return code_spans(str(text))


@register.filter(name="age")
def age_filter(value: dt.datetime | None) -> str:
    """A past or future time as a relative age with seconds ("12 s ago", "in 3 min")."""
    if value is None:
        return "-"
    return age((timezone.now() - value).total_seconds())
