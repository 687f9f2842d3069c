"""One OS process of the periodic tests: a leader SIGKILLed in the middle of a dispatch.

Run as ``python -m tests.dying_leader HOLDER NOW WHERE``. It leads (lease and epoch),
ticks its dispatcher at ``NOW`` (ISO 8601) and SIGKILLs itself when the slot's start
reaches ``WHERE``: ``insert`` (the slot claimed in the leader's open transaction, the
run's name claimed in Redis, its row not inserted yet) or ``publish`` (the transaction
committed, the run's message not sent). Its periodic tasks come from
``DT_TEST_PERIODIC``. It prints the tick's report and exits 0 only when ``WHERE`` was
never reached, which the test takes as a failure.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys

KILLED_AT = {"insert": "_insert", "publish": "_send"}  # ClusterClient's methods


def main() -> None:
    holder, now, where = sys.argv[1], dt.datetime.fromisoformat(sys.argv[2]), sys.argv[3]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from distributed_tasks.client import ClusterClient
    from distributed_tasks.nodes import live_nodes
    from distributed_tasks.orchestrator import Orchestrator, TickContext

    def die(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(ClusterClient, KILLED_AT[where], die)
    leader = Orchestrator(holder)
    assert leader.lease.try_acquire() and leader.on_acquired()
    view = live_nodes()
    ctx = TickContext(leader.epoch, holder, view, now, batch=100, redis_settling=False)
    print(json.dumps(leader.duty("dispatcher").run(ctx)), flush=True)


if __name__ == "__main__":
    main()
