"""JSON views: ``path("tasks/", include("distributed_tasks.urls"))``.

A name may hold "/" (any printable character is allowed), so it is the last,
``path``-typed segment; task lists are a single segment, and one holding "/" is named
in the query (``status?task_list=a/b&name=x``) or, for ``cancel``, in form fields.
Anything else under ``status/`` or ``cancel/`` (an empty segment) gets the JSON 404.
"""

from django.urls import path, re_path

from distributed_tasks import views

app_name = "distributed_tasks"

urlpatterns = [
    path("health", views.health, name="health"),
    path("status/<str:task_list>/<path:name>", views.task_status, name="status"),
    path("status", views.task_status, name="status_query"),
    path("metrics", views.metrics_view, name="metrics"),
    path("cancel/<str:task_list>/<path:name>", views.cancel, name="cancel"),
    path("cancel", views.cancel, name="cancel_query"),
    re_path(r"^(?:status|cancel)(?:/.*)?$", views.not_found),
]
