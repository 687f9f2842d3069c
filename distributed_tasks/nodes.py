"""Node identity, the heartbeat thread, and the view of live nodes.

A node is one ``dt_worker`` process group. Its main process beats every
``HEARTBEAT_INTERVAL`` into a sorted set scored by Redis server time, plus a
per-node key with a TTL of ``NODE_TIMEOUT``: a node is live while both are
fresh. An incarnation id, new at every start, tells a restarted node (same
name) from the one whose runs were lost.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace

from distributed_tasks import keys, scripts
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import as_dict, get_redis, text
from distributed_tasks.outage import REDIS_ERRORS, Outage

logger = logging.getLogger("distributed_tasks.nodes")

ALL_TASK_LISTS = "*"
# The node of a run whose next attempt waits for a live node serving its task list
# (orchestrator/lifeline.py parks it there).
PARKED = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    name: str
    incarnation: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    weight: int = 1
    task_lists: tuple[str, ...] = (ALL_TASK_LISTS,)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    capacity: int = 0  # runs executed at once: pool concurrency x weight (0: unknown)
    active: int = 0  # runs executing at the last heartbeat
    last_seen_ms: int = 0  # Redis server time of the last heartbeat (filled by live_nodes)

    @property
    def slots(self) -> int:
        """Runs this node executes at once; placement counts a free slot against it."""
        return self.capacity or self.weight

    def serves(self, task_list: str) -> bool:
        return ALL_TASK_LISTS in self.task_lists or task_list in self.task_lists

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("last_seen_ms")
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str, last_seen_ms: int = 0) -> NodeInfo:
        """Fields a newer version added are ignored: during a rolling upgrade an older
        leader must still see newer nodes as live, not as unreadable."""
        data = json.loads(raw)
        known = {f.name for f in fields(cls)} - {"last_seen_ms"}
        data = {key: value for key, value in data.items() if key in known}
        data["task_lists"] = tuple(data.get("task_lists") or (ALL_TASK_LISTS,))
        return cls(**data, last_seen_ms=last_seen_ms)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Live nodes and their approximate loads, as Redis saw them at ``now_ms``."""

    nodes: dict[str, NodeInfo]
    loads: dict[str, int]
    version: int
    now_ms: int
    intact: bool = True  # False once Redis lost its data, until the leader resyncs
    stale: tuple[str, ...] = ()  # members whose heartbeat stopped (not yet forgotten)
    gap_end_ms: int = 0  # when Redis last answered again after nobody reached it (0: never)

    def recovering(self) -> bool:
        """Whether nodes may still be re-registering: Redis answered again (after an
        outage that nobody could reach it through) less than NODE_TIMEOUT ago."""
        timeout_ms = get_settings().NODE_TIMEOUT * 1000
        return self.gap_end_ms > 0 and self.now_ms - self.gap_end_ms < timeout_ms

    def age(self, node: str) -> float:
        """Seconds since ``node``'s last heartbeat."""
        return max(0.0, (self.now_ms - self.nodes[node].last_seen_ms) / 1000)


# The node this process belongs to, set by dt_worker before the pool forks.
_current: NodeInfo | None = None


def current_node() -> NodeInfo | None:
    return _current


def set_current_node(info: NodeInfo | None) -> None:
    global _current
    _current = info


def gap_threshold_ms() -> int:
    """How long Redis may go without a heartbeat or cluster read before that counts as
    a gap (``scripts.PULSE``): half a NODE_TIMEOUT, several heartbeats of every node."""
    return int(get_settings().NODE_TIMEOUT * 500)


def live_nodes() -> ClusterView:
    """Nodes with a fresh heartbeat. Raises ``redis.RedisError`` when Redis is down."""
    conf = get_settings()
    now, version, flat, loads, intact, stale, gap_end = scripts.script(scripts.LIVE_NODES)(
        keys=[
            keys.members_key(),
            keys.membership_version_key(),
            keys.loads_key(),
            keys.intact_key(),
            keys.pulse_key(),
            keys.gap_key(),
        ],
        args=[int(conf.NODE_TIMEOUT * 1000), keys.node_key(""), gap_threshold_ms()],
    )
    flat = text(flat)
    nodes = {}
    for i in range(0, len(flat), 3):
        name, score, raw = flat[i], flat[i + 1], flat[i + 2]
        try:
            nodes[name] = NodeInfo.from_json(raw, last_seen_ms=int(float(score)))
        except (ValueError, TypeError):
            logger.warning("Ignoring node %s with unreadable info %r", name, raw)
    return ClusterView(
        nodes=nodes,
        loads={k: int(v) for k, v in as_dict(loads).items()},
        version=int(text(version)),
        now_ms=int(now),
        intact=bool(intact),
        stale=tuple(text(stale)),
        gap_end_ms=int(gap_end),
    )


class Heartbeat(threading.Thread):
    """Keeps one node's liveness fresh until stopped; leaves the cluster on a graceful stop.

    With ``running`` (a callable naming the attempts this node executes now, as
    ``<run_id>:<attempt>``) each beat also reports them, for the leader's watchdog.
    Redis errors, or anything else, never end the thread: it keeps beating every
    interval, logging once when beats start failing and once when they work again.
    """

    def __init__(
        self,
        info: NodeInfo,
        active: Callable[[], int] | None = None,
        running: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        super().__init__(name=f"dt-heartbeat-{info.name}", daemon=True)
        self.info = info
        self.active = active  # how many runs execute now, published with each beat
        self.running = running
        self._stop_event = threading.Event()
        self._warned_duplicate = False
        self.beats = 0

    def beat(self) -> None:
        conf = get_settings()
        if self.active is not None:
            self.info = replace(self.info, active=self.active())
        running = json.dumps(sorted(self.running())) if self.running is not None else ""
        _now, previous = scripts.script(scripts.HEARTBEAT)(
            keys=[
                keys.members_key(),
                keys.node_key(self.info.name),
                keys.membership_version_key(),
                keys.node_running_key(self.info.name),
                keys.incarnation_key(self.info.name, self.info.incarnation),
                keys.pulse_key(),
                keys.gap_key(),
            ],
            args=[
                self.info.name,
                self.info.to_json(),
                int(conf.NODE_TIMEOUT * 1000),
                running,
                gap_threshold_ms(),
            ],
        )
        self.beats += 1
        previous = text(previous)
        if previous and self.info.incarnation not in previous and not self._warned_duplicate:
            self._warned_duplicate = True
            logger.error(
                "Another process heartbeats as node %s: give every dt_worker a unique --node.",
                self.info.name,
                extra={"action": "duplicate_node"},
            )

    def run(self) -> None:
        interval = get_settings().HEARTBEAT_INTERVAL
        # No backoff beyond the interval: a node that beats less often looks dead.
        outage = Outage(
            f"Heartbeat of node {self.info.name}", logger, initial=interval, cap=interval
        )
        while not self._stop_event.is_set():
            try:
                self.beat()
            except Exception as exc:  # the thread must outlive any fault
                outage.failed(exc)
            else:
                outage.ok()
            self._stop_event.wait(interval)

    def stop(self, *, leave: bool = True) -> None:
        """Stop beating; with ``leave`` tell the cluster at once instead of timing out."""
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=5)
        if leave:
            try:
                scripts.script(scripts.LEAVE)(
                    keys=[
                        keys.members_key(),
                        keys.node_key(self.info.name),
                        keys.membership_version_key(),
                        keys.known_key(),
                    ],
                    args=[self.info.name, self.info.incarnation],
                )
            except REDIS_ERRORS as exc:
                logger.warning("Could not deregister %s: %s", self.info.name, exc)


def live_twin(info: NodeInfo) -> NodeInfo | None:
    """Another process that still heartbeats as node ``info.name``, if any.

    A node that crashed leaves a fresh heartbeat behind for up to NODE_TIMEOUT: its
    restart must not wait for it (its process is gone from this host). Otherwise a
    twin counts as live when it beats again within two heartbeat intervals.
    None when Redis does not answer (the heartbeat will report a twin later).
    """
    conf = get_settings()
    client = get_redis()
    try:
        raw = client.get(keys.node_key(info.name))
        other = NodeInfo.from_json(text(raw)) if raw else None
        if other is None or other.incarnation == info.incarnation:
            return None
        if other.host == info.host and (other.pid == info.pid or not _process_exists(other.pid)):
            return None  # a crashed predecessor: restart at once
        twin = keys.incarnation_key(info.name, other.incarnation)
        left = client.pttl(twin)
        deadline = time.monotonic() + 2 * conf.HEARTBEAT_INTERVAL + 0.5
        while left > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            now_left = client.pttl(twin)
            if now_left > left:  # its TTL was renewed: it beats
                return other
            left = now_left
    except (*REDIS_ERRORS, ValueError, TypeError) as exc:
        logger.warning("Could not check for another node named %s: %s", info.name, exc)
    return None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
