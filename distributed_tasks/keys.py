"""Every Redis key and Celery queue name, in one place.

Keys of one run name share the hash tag ``{<len>:<task_list>:<name>}`` and node
and orchestrator keys have tags of their own, so each Lua script touches a single
hash slot and stays valid on Redis Cluster (SPEC section 9).

The task list's length comes first so the encoding is injective: task list
``a:b`` + name ``c`` is ``{3:a:b:c}``, task list ``a`` + name ``b:c`` is
``{1:a:b:c}``. The hash also stores both, and every script checks them, so a key
written in the old, ambiguous format (``{<task_list>:<name>}``, before
KEY_FORMAT 2) never passes for a name it does not belong to.

A name has one hash, ``<prefix>:{<len>:<task_list>:<name>}:run``: it is both the
claim (its ``state`` is QUEUED or RUNNING while a run holds the name) and the
status cache (DONE/FAILED with a TTL of CLEANUP_TIMEOUT afterwards). One key
makes "claim and publish the status" a single atomic write.
"""

from __future__ import annotations

from distributed_tasks.conf import get_settings

QUEUE_PREFIX = "dt.node."
# The layout of the name keys. The resync marker carries it, so after an upgrade
# that changes it the leader rebuilds every active name's key from the database.
KEY_FORMAT = 2


def _prefix() -> str:
    return get_settings().KEY_PREFIX


def name_tag(task_list: str, name: str) -> str:
    """The hash tag of every key of one name (injective: the task list is length-prefixed)."""
    return f"{{{len(task_list)}:{task_list}:{name}}}"


def run_key(task_list: str, name: str) -> str:
    return f"{_prefix()}:{name_tag(task_list, name)}:run"


def run_key_pattern() -> str:
    """Every name key, of this format and of the old one (the resync scan tells them apart)."""
    return f"{_prefix()}:{{*}}:run"


def node_key(node: str) -> str:
    return f"{_prefix()}:{{nodes}}:node:{node}"


def incarnation_key(node: str, incarnation: str) -> str:
    """Set with each heartbeat of one incarnation (TTL NODE_TIMEOUT): while it exists, that
    process still beats, even when another one heartbeats under the same node name."""
    return f"{_prefix()}:{{nodes}}:incarnation:{node}:{incarnation}"


def node_running_key(node: str) -> str:
    """JSON list of the attempts (``<run_id>:<attempt>``) a node executes, set with each
    heartbeat: the leader's watchdog ends RUNNING rows a live node stops reporting."""
    return f"{_prefix()}:{{nodes}}:running:{node}"


def node_cancel_key(node: str) -> str:
    """Hash ``<run_id>:<attempt>`` -> deadline (epoch seconds) of the forced cancels of a
    node's runs; its main process kills what is still running then (cancellation.py)."""
    return f"{_prefix()}:{{nodes}}:cancel:{node}"


def members_key() -> str:
    """Sorted set of node names scored by their last heartbeat (Redis server time, ms)."""
    return f"{_prefix()}:{{nodes}}:members"


def membership_version_key() -> str:
    """Incremented whenever a node joins or leaves, so rings are rebuilt only then."""
    return f"{_prefix()}:{{nodes}}:version"


def loads_key() -> str:
    """Hash node -> active runs placed on it (approximate; rebuilt from the database)."""
    return f"{_prefix()}:{{nodes}}:loads"


def known_key() -> str:
    """Set of nodes the orchestrator announced (node_joined), so each event is sent once."""
    return f"{_prefix()}:{{nodes}}:known"


def pulse_key() -> str:
    """Redis server time (ms) of the last heartbeat or cluster read: Redis answered then."""
    return f"{_prefix()}:{{nodes}}:pulse"


def gap_key() -> str:
    """``<start ms>:<end ms>`` of the last time nobody reached Redis for a while (an outage,
    a partition, a restart from a snapshot): heartbeats missed then do not count."""
    return f"{_prefix()}:{{nodes}}:gap"


def intact_key() -> str:
    """Set by the leader; its absence means Redis lost its data (flush, restart) or
    holds name keys of an older KEY_FORMAT: either way the leader rebuilds them."""
    return f"{_prefix()}:{{nodes}}:intact:v{KEY_FORMAT}"


def lease_key() -> str:
    return f"{_prefix()}:{{orchestrator}}:lease"


def epoch_key() -> str:
    return f"{_prefix()}:{{orchestrator}}:epoch"


def beat_key() -> str:
    """Hash entry name -> last run time of the project's CELERY_BEAT_SCHEDULE, as
    releases before migration 0010 kept it; the HA beat now reads it only for an entry
    the database has no send of (``fencing.record_sent``)."""
    return f"{_prefix()}:{{orchestrator}}:beat"


def queue_name(node: str) -> str:
    """The Celery queue a node consumes: ``dt.node.<node>``."""
    return f"{QUEUE_PREFIX}{node}"


def deferred_key() -> str:
    """Sorted set of deferred messages' task ids, scored by due time (``deferred.py``)."""
    return f"{_prefix()}:deferred"


def queue_keys(node: str, levels: int = 10) -> list[str]:
    """The Redis lists of a node's queue, in the order its worker serves them.

    kombu's Redis transport keeps one list per message priority level (``priority_steps``,
    see brokers.PRIORITY_LEVELS): level 0 is the queue's own name and is served first.
    """
    from kombu.transport.redis import Channel

    name = queue_name(node)
    return [name, *(f"{name}{Channel.sep}{level}" for level in range(1, levels))]
