"""The rebalancer's plan (pure): which waiting runs move where."""

from distributed_tasks.orchestrator.rebalancer import plan


def everyone(node: str, task_list: str) -> bool:
    return True


def test_waiting_runs_move_to_the_node_with_free_slots_oldest_first():
    waiting = [("r1", "a", "default"), ("r2", "a", "default"), ("r3", "a", "default")]
    moves = plan(waiting, {"a": 5, "b": 0}, {"a": 2, "b": 2}, everyone)
    # b fills its two slots; a third run would leave b as busy as a is.
    assert moves == [("r1", "b"), ("r2", "b")]


def test_the_empty_node_levels_up_with_the_others_and_no_further():
    waiting = [(f"r{i}", "a", "default") for i in range(10)]
    moves = plan(waiting, {"a": 12, "b": 0}, {"a": 2, "b": 2}, everyone)
    assert len(moves) == 6  # a: 6, b: 6
    assert {to for _, to in moves} == {"b"}


def test_nothing_moves_when_no_node_has_a_free_slot():
    waiting = [("r1", "a", "default")]
    assert plan(waiting, {"a": 4, "b": 2}, {"a": 2, "b": 2}, everyone) == []


def test_runs_go_only_to_nodes_serving_their_task_list():
    waiting = [("r1", "a", "reports"), ("r2", "a", "default")]

    def serves(node: str, task_list: str) -> bool:
        return node != "b" or task_list == "default"

    assert plan(waiting, {"a": 4, "b": 0}, {"a": 2, "b": 2}, serves) == [("r2", "b")]


def test_the_least_loaded_receiver_for_its_capacity_goes_first():
    waiting = [("r1", "a", "default"), ("r2", "a", "default")]
    moves = plan(waiting, {"a": 6, "b": 1, "c": 1}, {"a": 2, "b": 2, "c": 8}, everyone)
    assert moves == [("r1", "c"), ("r2", "c")]


def test_a_run_of_a_node_that_is_not_live_is_left_to_the_lifeline():
    assert plan([("r1", "gone", "default")], {"b": 0}, {"b": 2}, everyone) == []
