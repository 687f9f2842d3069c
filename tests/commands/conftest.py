"""Fixtures of the command tests: run a command in-process and capture what it prints."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import call_command

from tests.support import ROOT


@pytest.fixture
def run_command():
    """``run_command("dt_x", *args) -> stdout``; errors propagate as CommandError."""

    def run(name: str, *args: str, stderr: io.StringIO | None = None) -> str:
        out = io.StringIO()
        call_command(name, *args, stdout=out, stderr=stderr or io.StringIO())
        return out.getvalue()

    return run


@pytest.fixture
def manage_py():
    """Run ``manage.py`` as a separate process on the test database and Redis."""

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        full_env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DT_TEST_DB_NAME": settings.DATABASES["default"]["NAME"],
            **env,
        }
        full_env.pop("PYTHONWARNINGS", None)  # third-party deprecations are not ours to fail on
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run
