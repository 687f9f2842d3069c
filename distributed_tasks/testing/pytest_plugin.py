"""pytest fixtures of the testing double: ``dt_fake`` and ``dt_inline``.

Enable with the package's ``pytest11`` entry point, or in a project's root
``conftest.py``::

    pytest_plugins = ["distributed_tasks.testing.pytest_plugin"]

Importing this module touches no model, so pytest can load it before Django is
set up; the clients are imported when a fixture is first used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from distributed_tasks.testing import FakeClient, InlineClient


@pytest.fixture
def dt_fake() -> Iterator[FakeClient]:
    """A ``FakeClient`` behind ``start_async``/``get_status`` for the test."""
    from distributed_tasks.testing import fake_tasks

    with fake_tasks() as fake:
        yield fake


@pytest.fixture
def dt_inline() -> Iterator[InlineClient]:
    """An ``InlineClient`` behind ``start_async``/``get_status`` for the test."""
    from distributed_tasks.testing import inline_tasks

    with inline_tasks() as inline:
        yield inline
