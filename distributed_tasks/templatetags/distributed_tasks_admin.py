"""Template filters of the admin pages (``{% load distributed_tasks_admin %}``)."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from distributed_tasks.admin.display import code_spans

register = template.Library()


@register.filter(name="code_spans")
def code_spans_filter(text: str) -> SafeString:
    """A health problem (plain text with `backticked` commands) as escaped HTML."""
    return code_spans(str(text))
