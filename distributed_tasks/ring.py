"""Consistent-hash placement with bounded loads. Pure: no I/O, no clocks.

The ring is uhashring's ketama-compatible continuum (the maintained successor of
``hash_ring``, whose last release does not import on Python 3). Plain consistent
hashing can leave one node with far more than its share; the bounded-loads rule
of Mirrokni, Thorup and Zadimoghaddam walks clockwise from the key's point to the
first node whose load is under ``ceil(c * (total + 1) * weight / total_weight)``,
which caps every node at ``c`` times its fair share while moving few keys when
membership changes.

Hashing knows nothing of how busy a node is, and a per-node queue makes a
placement final: given each node's capacity (the runs it executes at once), the
walk instead stops at the first node with a free slot, so a run waits behind a
busy node only when every node is busy (then fair shares are by capacity).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

from uhashring import HashRing

# Points per unit of weight are VNODES * 4 (ketama). uhashring's default of 40 leaves
# 50 equal nodes at up to 1.16x the mean share; 160 brings it to 1.10 (and 3 nodes from
# 1.06 to 1.01) for a ring built in ~40 ms instead of ~10 ms, only on membership change.
VNODES = 160


def bounded(share: float, total: int, balance: float) -> int:
    """The most runs out of ``total`` a node with ``share`` of the cluster may hold."""
    return max(1, math.ceil(balance * total * share))


class Ring:
    """An immutable ring over ``{node name: weight}``."""

    __slots__ = ("_ring", "members", "total_weight")

    def __init__(self, members: Mapping[str, int]) -> None:
        self.members: dict[str, int] = dict(members)
        self.total_weight = sum(self.members.values())
        self._ring = HashRing(
            nodes={
                name: {"weight": weight, "vnodes": VNODES} for name, weight in self.members.items()
            },
            hash_fn="ketama",
        )

    def __bool__(self) -> bool:
        return bool(self.members)

    def walk(self, key: str) -> Iterator[str]:
        """Every node once, clockwise from ``key``'s point on the ring."""
        if self.members:
            yield from self._ring.iterate_nodes(key)

    def node_for(self, key: str) -> str | None:
        """Plain consistent hashing: the first node clockwise from ``key``."""
        return next(self.walk(key), None)

    def capacity(self, node: str, total: int, balance: float) -> int:
        """Most runs ``node`` may hold when ``total`` runs are placed, under factor ``balance``."""
        return bounded(self.members[node] / self.total_weight, total, balance)

    def place(
        self,
        key: str,
        loads: Mapping[str, int],
        balance: float,
        slots: Mapping[str, int] | None = None,
    ) -> str | None:
        """The node for a new run of ``key``.

        ``loads`` counts active runs already placed (absent nodes count 0); the new run
        is included in the total, so an empty cluster still admits it. With ``slots``
        (runs each node executes at once) placement is work-conserving: the first node
        clockwise with a free slot takes the run, so it can start now; when every node
        is full, the least loaded for its capacity among the nodes under the bound
        (the first clockwise on a tie), so no queue grows past ``balance`` times its
        capacity share. Without ``slots``: the classic bounded-loads walk by weight.
        """
        if not self.members:
            return None
        if slots is None:
            return self._bounded(key, loads, balance)
        # A walk (a hash and a generator) only decides between several candidates.
        free = [n for n in self.members if loads.get(n, 0) < slots.get(n, 1)]
        if free:
            if len(free) == 1:
                return free[0]
            return next(n for n in self.walk(key) if loads.get(n, 0) < slots.get(n, 1))
        total = sum(loads.get(n, 0) for n in self.members) + 1
        room = sum(slots.get(n, 1) for n in self.members)
        under = {
            n
            for n in self.members
            if loads.get(n, 0) < bounded(slots.get(n, 1) / room, total, balance)
        } or set(self.members)
        ratio = {n: loads.get(n, 0) / slots.get(n, 1) for n in under}
        least = min(ratio.values())
        tied = [n for n, r in ratio.items() if r == least]
        return (
            tied[0] if len(tied) == 1 else next(n for n in self.walk(key) if ratio.get(n) == least)
        )

    def _bounded(self, key: str, loads: Mapping[str, int], balance: float) -> str | None:
        total = sum(loads.get(n, 0) for n in self.members) + 1
        first = None
        for node in self.walk(key):
            first = first or node
            if loads.get(node, 0) < self.capacity(node, total, balance):
                return node
        return first

    def shares(self) -> dict[str, float]:
        """The fraction of the continuum each node owns (what a plain lookup would give it)."""
        points = self._ring.get_points()
        if not points:
            return {}
        owned: dict[str, int] = dict.fromkeys(self.members, 0)
        # Each point owns the arc from its predecessor up to itself.
        size = 2**32
        previous = points[-1][0] - size
        for point, node in points:
            owned[node] += point - previous
            previous = point
        return {node: arc / size for node, arc in owned.items()}
