"""Signals, named for events that happened (as Django's ``task_finished``).

Each is sent once per event, in the process where it happened:

- ``run_queued(sender, handle)``: a start was recorded and published (web process).
- ``run_started(sender, message)``: a worker fenced the run to RUNNING (pool process).
- ``run_finished(sender, message, outcome)``: the run ended for good and was recorded
  (DONE, or FAILED with no attempt left; a retried attempt sends none), by the worker,
  or by the orchestrator for runs of lost nodes.
- ``node_joined(sender, node)`` / ``node_lost(sender, node)``: membership changes, sent
  by the orchestrator leader.
- ``leader_elected(sender, holder, epoch)``: this beat process became the leader.
"""

from __future__ import annotations

import logging

from django.dispatch import Signal, receiver

logger = logging.getLogger("distributed_tasks.signals")

run_queued = Signal()
run_started = Signal()
run_finished = Signal()
node_joined = Signal()
node_lost = Signal()
leader_elected = Signal()


@receiver(node_lost)
def _log_node_lost(sender, node, **kwargs):
    logger.warning("Node %s lost", node, extra={"action": "node_lost"})


@receiver(leader_elected)
def _log_leader(sender, holder, epoch, **kwargs):
    logger.info(
        "%s is the orchestrator leader (epoch %s)",
        holder,
        epoch,
        extra={"action": "leader_elected"},
    )
