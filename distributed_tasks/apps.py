from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class DistributedTasksConfig(AppConfig):
    name = "distributed_tasks"
    verbose_name = "Distributed tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Checks and signal receivers register on import.
        # periodic registers PeriodicRun, the function every periodic slot runs.
        import distributed_tasks.periodic  # noqa: F401
        from distributed_tasks import checks, signals  # noqa: F401

        # Fill the registry: every installed app's tasks.py is imported at start-up,
        # so a worker knows every function by path without importing paths it is sent.
        autodiscover_modules("tasks")

        from distributed_tasks import observability

        observability.install()  # metrics, tracing and run-bound logs, each when enabled
