"""The README's Quickstart as data, so the install test follows exactly what users read.

Blocks marked ``<!-- quickstart: all|sqlite|postgres -->`` are steps: a ``sh`` block is
commands (``cd`` moves, a trailing ``&`` starts a background process), a ``python``
block is appended to the file its first line names (``# mysite/settings.py (...)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
MARK = re.compile(
    r"<!-- quickstart: (?P<variant>\w+) -->\s*\n```(?P<lang>\w+)\n(?P<body>.*?)\n```", re.S
)


@dataclass(frozen=True, slots=True)
class Step:
    lang: str  # "sh" or "python"
    body: str

    @property
    def path(self) -> str:
        """The file a python block goes to, from its first line's comment."""
        match = re.match(r"# (\S+)", self.body)
        assert match, f"a quickstart python block must start with '# <path>':\n{self.body}"
        return match.group(1)

    @property
    def commands(self) -> list[str]:
        lines = (line.split(" #")[0].strip() for line in self.body.splitlines())
        return [line for line in lines if line and not line.startswith("#")]


def section(text: str) -> str:
    start = text.index("\n## Quickstart\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def steps(variant: str, readme: Path = README) -> list[Step]:
    """The Quickstart's steps for ``variant`` ("sqlite" or "postgres"), in order."""
    found = [
        Step(m["lang"], m["body"])
        for m in MARK.finditer(section(readme.read_text()))
        if m["variant"] in ("all", variant)
    ]
    assert found, f"README.md's Quickstart has no steps for {variant}"
    return found
