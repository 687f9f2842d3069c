"""Hosts of their own for the partition tests: a network namespace per host, and two veth
pairs into it, one that carries Redis and one that carries PostgreSQL.

``cut()`` takes the Redis pair's link down: the host can no longer reach Redis (new
connections find no route, open ones hear nothing) while its processes keep running
and PostgreSQL still answers; ``heal()`` brings the link back. Processes in the host
reach only the two addresses the test gave the root side of its pairs. Creating a
host needs root and ``ip``; where either is missing the test fails and says so. Every
host is removed by ``remove()``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass


def ip(*args: str) -> None:
    """Run ``ip args``; fail loudly (never skip) when it cannot be done."""
    binary = shutil.which("ip")
    if binary is None or os.geteuid() != 0:
        raise AssertionError(
            "the partition tests need root and iproute2's `ip` (network namespaces, veth): "
            f"euid {os.geteuid()}, ip {binary or 'missing'}"
        )
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=20, check=False)
    if done.returncode:
        raise AssertionError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


@dataclass(frozen=True)
class Host:
    """One namespace; ``index`` picks its subnets, 10.213.<4i>.0/30 (Redis) and .4/30."""

    index: int

    @property
    def name(self) -> str:
        return f"dtp{os.getpid() % 100000}h{self.index}"

    def _link(self, path: str, side: str) -> str:
        return f"{self.name}{path}{side}"  # at most 15 characters: dtp99999h9rn

    def _subnet(self, path: str) -> str:
        return f"10.213.{4 * self.index + (1 if path == 'p' else 0)}"

    def gateway(self, path: str) -> str:
        """The root side's address of the Redis ("r") or PostgreSQL ("p") pair."""
        return f"{self._subnet(path)}.1"

    @property
    def redis_address(self) -> str:
        return self.gateway("r")

    @property
    def postgres_address(self) -> str:
        return self.gateway("p")

    def create(self) -> Host:
        ip("netns", "add", self.name)
        try:
            self.exec_ip("link", "set", "lo", "up")
            for path in ("r", "p"):
                root, inner = self._link(path, "o"), self._link(path, "n")
                ip("link", "add", root, "type", "veth", "peer", "name", inner)
                ip("link", "set", inner, "netns", self.name)
                ip("addr", "add", f"{self.gateway(path)}/30", "dev", root)
                ip("link", "set", root, "up")
                self.exec_ip("addr", "add", f"{self._subnet(path)}.2/30", "dev", inner)
                self.exec_ip("link", "set", inner, "up")
        except BaseException:
            self.remove()
            raise
        return self

    def exec_ip(self, *args: str) -> None:
        ip("netns", "exec", self.name, "ip", *args)

    def program(self) -> list[str]:
        """The argv prefix that runs this Python inside the host."""
        return [shutil.which("ip") or "ip", "netns", "exec", self.name, sys.executable]

    def cut(self) -> None:
        ip("link", "set", self._link("r", "o"), "down")

    def heal(self) -> None:
        ip("link", "set", self._link("r", "o"), "up")

    def remove(self) -> None:
        """Delete the namespace (its side of the pairs goes with it) and the root sides."""
        for args in (
            ["netns", "del", self.name],
            *(["link", "del", self._link(p, "o")] for p in "rp"),
        ):
            subprocess.run(["ip", *args], capture_output=True, timeout=20, check=False)
