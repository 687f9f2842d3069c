"""Where the dispatcher sends a periodic slot (pure: a cluster view built by hand)."""

from distributed_tasks.nodes import ClusterView, NodeInfo
from distributed_tasks.orchestrator import TickContext
from distributed_tasks.orchestrator.dispatcher import Dispatcher


def context(loads: dict[str, int], slots: dict[str, int]) -> TickContext:
    nodes = {name: NodeInfo(name=name, capacity=n) for name, n in slots.items()}
    view = ClusterView(nodes=nodes, loads=loads, version=1, now_ms=0)
    return TickContext(epoch=1, holder="b", view=view, now=None, batch=10, redis_settling=False)


def test_a_slot_never_goes_to_a_busy_node_while_another_has_a_free_slot():
    ctx = context({"busy": 2, "free": 1}, {"busy": 2, "free": 2})
    dispatcher = Dispatcher()
    for _ in range(20):
        dispatcher.placed.clear()
        assert dispatcher._least_busy(["busy", "free"], ctx) == "free"


def test_when_every_node_is_busy_the_least_loaded_for_its_capacity_gets_it():
    ctx = context({"a": 4, "b": 3}, {"a": 4, "b": 2})
    assert Dispatcher()._least_busy(["a", "b"], ctx) == "a"


def test_slots_started_in_one_tick_count_against_their_node():
    ctx = context({"a": 1, "b": 1}, {"a": 2, "b": 2})
    dispatcher = Dispatcher()
    assert {dispatcher._least_busy(["a", "b"], ctx) for _ in range(2)} == {"a", "b"}
