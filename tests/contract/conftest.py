"""The ``subject`` fixture: each contract test runs once per client in ``subjects.ALL``."""

from __future__ import annotations

import pytest

from distributed_tasks import State
from tests.contract.subjects import ALL, Subject


@pytest.fixture(params=ALL)
def subject(request) -> Subject:
    if request.param == "cluster":
        from distributed_tasks.client import ClusterClient

        request.getfixturevalue("node")
        return Subject("cluster", ClusterClient(), State.QUEUED)
    if request.param == "fake":
        return Subject("fake", request.getfixturevalue("dt_fake"), State.QUEUED)
    return Subject("inline", request.getfixturevalue("dt_inline"), State.DONE)
