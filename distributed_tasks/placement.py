"""Choosing a node for a run: the cached cluster view, the ring, and local load accounting.

A web process asks Redis for live nodes at most once per ``RING_CACHE_TTL`` and
rebuilds a ring only when the set of nodes (or their weights) changed, never per
call. Between two refreshes it counts its own placements on top of the loads it
read, so a burst of starts still spreads. Each node's heartbeat carries its
capacity, so a run goes to the first node on its walk with a free slot (see
``ring.Ring.place``): no extra Redis round trip per start.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from distributed_tasks.conf import get_settings
from distributed_tasks.exceptions import ClusterUnavailable
from distributed_tasks.nodes import ClusterView, live_nodes
from distributed_tasks.outage import REDIS_ERRORS
from distributed_tasks.ring import Ring

# Seconds after which a cached view is read again when it shows no free slot anywhere.
RECHECK_FULL = 0.1


class Placement:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._view: ClusterView | None = None
        self._fetched = 0.0
        self._loads: Counter[str] = Counter()
        self._rings: dict[tuple[str, frozenset], tuple[Ring, dict[str, int]]] = {}
        # The view the rings below were looked up for, and each task list's.
        self._per_view: tuple[ClusterView | None, dict[str, tuple[Ring, dict[str, int]]]] = (
            None,
            {},
        )

    def view(self, *, refresh: bool = False) -> ClusterView:
        """The live nodes, from cache while it is younger than ``RING_CACHE_TTL``."""
        ttl = get_settings().RING_CACHE_TTL
        with self._lock:
            if refresh or self._view is None or time.monotonic() - self._fetched > ttl:
                try:
                    view = live_nodes()
                except REDIS_ERRORS as exc:
                    raise ClusterUnavailable(
                        f"Redis does not answer ({exc}); no run can be placed until it is back."
                    ) from exc
                self._view, self._fetched = view, time.monotonic()
                self._loads = Counter(view.loads)
            return self._view

    def ring(self, task_list: str) -> tuple[Ring, dict[str, int]]:
        """The ring of the nodes serving ``task_list``, and each one's slots: looked up
        once per cached view and task list, not rebuilt from the view for every start."""
        view = self.view()
        per_view = self._per_view
        if per_view[0] is not view:
            per_view = self._per_view = (view, {})
        found = per_view[1].get(task_list)
        if found is None:
            found = per_view[1][task_list] = self._ring(view, task_list)
        return found

    def _ring(self, view: ClusterView, task_list: str) -> tuple[Ring, dict[str, int]]:
        members = self._members(view, task_list)
        if not members:
            # Maybe a node joined since the cached view: ask once more before giving up.
            members = self._members(self.view(refresh=True), task_list)
        if not members:
            raise ClusterUnavailable(self._nobody_serves(task_list))
        key = (task_list, members)
        cached = self._rings.get(key)
        if cached is None:
            if len(self._rings) > 64:
                self._rings.clear()
            ring = Ring({name: weight for name, weight, _slots in members})
            cached = self._rings[key] = (ring, {name: slots for name, _w, slots in members})
        return cached

    def _nobody_serves(self, task_list: str) -> str:
        """Why no node can take a run of ``task_list``, and the way out."""
        live = sorted(self.view().nodes)
        if live:  # nodes heartbeat, but each serves other task lists
            shown = ", ".join(live[:5]) + (f" and {len(live) - 5} more" if len(live) > 5 else "")
            return (
                f"No live node serves task list {task_list!r}; the live nodes ({shown}) "
                f"serve others: start one with `manage.py dt_worker --task-list {task_list}`."
            )
        return (
            f"No live node serves task list {task_list!r}: start one with "
            "`manage.py dt_worker` (nodes heartbeat to Redis; none has in the last "
            f"{get_settings().NODE_TIMEOUT:g} s)."
        )

    @staticmethod
    def _members(view: ClusterView, task_list: str) -> frozenset[tuple[str, int, int]]:
        return frozenset(
            (name, info.weight, info.slots)
            for name, info in view.nodes.items()
            if info.serves(task_list)
        )

    def choose(self, task_list: str, name: str) -> str:
        """The node for a new run of ``name``, counted against it until the next refresh."""
        node, free = self._place(task_list, name)
        if not free and time.monotonic() - self._fetched > RECHECK_FULL:
            # Every node looks busy, but runs that finished since the last read do not
            # show in the cached loads: read them again (at most every RECHECK_FULL
            # seconds) before queueing the run behind a busy node.
            self.view(refresh=True)
            node, free = self._place(task_list, name)
        return node

    def _place(self, task_list: str, name: str) -> tuple[str, bool]:
        ring, slots = self.ring(task_list)
        balance = get_settings().BALANCE_FACTOR
        with self._lock:
            node = ring.place(f"{task_list}:{name}", self._loads, balance, slots)
            assert node is not None  # self.ring raised ClusterUnavailable for an empty ring
            free = self._loads[node] < slots[node]
            self._loads[node] += 1
        return node, free

    def unchoose(self, node: str) -> None:
        """Forget a placement that did not become a run (its claim failed)."""
        with self._lock:
            if self._loads[node] > 0:
                self._loads[node] -= 1

    def reset(self) -> None:
        with self._lock:
            self._view = None
            self._rings.clear()
            self._per_view = (None, {})
            self._loads.clear()
