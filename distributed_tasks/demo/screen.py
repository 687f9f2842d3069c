"""The demo's output: phase lines and a live table, coloured and redrawn on a terminal,
appended every two seconds when the output is a pipe or a file."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from typing import TextIO

STATES = ("QUEUED", "RUNNING", "DONE", "FAILED")
COLOURS = {"QUEUED": "33", "RUNNING": "36", "DONE": "32", "FAILED": "31", "phase": "1"}


class Screen:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._drawn = 0
        self._last_plain = 0.0

    def paint(self, text: str, colour: str) -> str:
        return f"\x1b[{COLOURS[colour]}m{text}\x1b[0m" if self.tty else text

    def say(self, text: str) -> None:
        self._drawn = 0
        self._write(f"{text}\n")

    def phase(self, text: str) -> None:
        self.say("\n" + self.paint(f"== {text}", "phase"))

    def _write(self, text: str) -> None:
        # A closed pipe (`make demo | head`) must not stop the clean-up of processes.
        with contextlib.suppress(BrokenPipeError):
            self.out.write(text)
            self.out.flush()

    def table(self, rows: list[str], *, final: bool = False) -> None:
        if self.tty:
            clear = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
            self._write(clear + "\n".join(rows) + "\n")
            self._drawn = len(rows)
        elif final or time.monotonic() - self._last_plain >= 2.0:
            self._last_plain = time.monotonic()
            self._write("\n".join(rows) + "\n\n")

    def runs_table(
        self,
        per_node: dict[str, Counter],
        elapsed: float,
        notes: dict[str, str],
        footer: list[str],
    ) -> list[str]:
        total = sum(sum(c.values()) for c in per_node.values())
        finished = sum(c["DONE"] + c["FAILED"] for c in per_node.values())
        width = 30
        filled = int(width * finished / total) if total else 0
        rows = [f"   {'node':<24}" + "".join(self.paint(f"{s:>9}", s) for s in STATES)]
        for node, counts in sorted(per_node.items()):
            cells = "".join(self.paint(f"{counts[s]:>9}", s) for s in STATES)
            rows.append(f"   {node:<24}{cells}  {notes.get(node, '')}")
        bar = self.paint("#" * filled, "DONE") + "." * (width - filled)
        rows.append(f"   [{bar}] {finished}/{total} finished  {elapsed:5.1f} s")
        rows.extend(f"   {line}" for line in footer)
        return rows
