"""JSON views: ``path("tasks/", include("distributed_tasks.urls"))``."""

from django.urls import path  # noqa: F401 - views land here

app_name = "distributed_tasks"

urlpatterns: list = []
