"""The clients under contract and what the contract needs to know about each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from distributed_tasks import State

FAKE = pytest.param("fake", id="fake")
INLINE = pytest.param("inline", id="inline")
# The real client: Redis, PostgreSQL and the ``node`` fixture (a live node that
# consumes nothing, so its runs stay QUEUED as the fake's do).
CLUSTER = pytest.param("cluster", id="cluster", marks=pytest.mark.django_db(transaction=True))
ALL = [FAKE, INLINE, CLUSTER]


@dataclass
class Subject:
    kind: str
    client: Any
    settled: State  # the state a run reaches by itself right after its start

    def recorded(self) -> int:
        """How many runs the client has recorded (``TaskRun`` rows, for the real client)."""
        if self.kind == "cluster":
            from distributed_tasks.models import TaskRun

            return TaskRun.objects.count()
        return len(self.client.starts)
