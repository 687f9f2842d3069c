import statistics
from collections import Counter

import pytest

from distributed_tasks.ring import Ring


def nodes(n: int) -> dict[str, int]:
    return {f"w{i}@host{i}": 1 for i in range(n)}


def spread(ring: Ring, names, balance: float | None) -> Counter:
    loads: Counter = Counter()
    for name in names:
        node = ring.place(name, loads, balance) if balance else ring.node_for(name)
        loads[node] += 1
    return loads


@pytest.mark.parametrize("count", [3, 10, 50])
def test_bounded_loads_cap_every_node_at_the_factor(count):
    ring = Ring(nodes(count))
    names = [f"compile-{i}" for i in range(20_000)]
    loads = spread(ring, names, 1.25)
    mean = len(names) / count
    assert max(loads.values()) <= 1.25 * mean + 1
    assert sum(loads.values()) == len(names)


def test_bounded_loads_beat_plain_hashing():
    ring = Ring(nodes(10))
    names = [f"job-{i}" for i in range(20_000)]
    plain = spread(ring, names, None)
    bounded = spread(ring, names, 1.05)
    assert max(bounded.values()) <= max(plain.values())
    assert max(bounded.values()) / statistics.mean(bounded.values()) <= 1.06


def test_one_node_leaving_moves_about_its_share_of_keys():
    members = nodes(10)
    before = Ring(members)
    gone = next(iter(members))
    after = Ring({k: v for k, v in members.items() if k != gone})
    names = [f"task-{i}" for i in range(20_000)]
    moved = sum(before.node_for(n) != after.node_for(n) for n in names)
    owned_by_gone = sum(before.node_for(n) == gone for n in names)
    assert moved == owned_by_gone  # only the leaving node's keys move
    assert moved / len(names) < 0.16


def test_weights_shift_the_share():
    ring = Ring({"big": 3, "small": 1})
    loads = spread(ring, [f"n{i}" for i in range(8000)], None)
    assert 2.2 < loads["big"] / loads["small"] < 4.0
    shares = ring.shares()
    assert abs(sum(shares.values()) - 1) < 1e-9
    assert shares["big"] > shares["small"]


def test_placement_is_deterministic_per_name():
    ring = Ring(nodes(5))
    assert {ring.node_for("same") for _ in range(10)} == {ring.node_for("same")}
    assert ring.place("same", {}, 1.25) == ring.node_for("same")


def test_place_skips_a_full_node_for_the_next_on_the_walk():
    ring = Ring(nodes(3))
    first, second, _ = list(ring.walk("key"))
    assert ring.place("key", {first: 100, second: 0}, 1.25) == second


def test_empty_ring_places_nothing():
    ring = Ring({})
    assert not ring
    assert ring.node_for("x") is None
    assert ring.place("x", {}, 1.25) is None


# -- capacity-aware placement (slots: runs each node executes at once) ------------------


def test_a_name_stays_on_its_node_while_that_node_has_a_free_slot():
    ring = Ring(nodes(3))
    slots = dict.fromkeys(ring.members, 2)
    home = ring.node_for("key")
    assert ring.place("key", {home: 1}, 1.25, slots) == home


def test_a_name_whose_node_is_full_goes_to_the_next_node_with_a_free_slot():
    ring = Ring(nodes(3))
    first, second, third = list(ring.walk("key"))
    slots = dict.fromkeys(ring.members, 2)
    assert ring.place("key", {first: 2}, 1.25, slots) == second
    assert ring.place("key", {first: 2, second: 5}, 1.25, slots) == third


def test_when_every_node_is_full_the_least_loaded_for_its_capacity_takes_the_run():
    ring = Ring({"big": 1, "small": 1})
    slots = {"big": 4, "small": 1}
    # big: 6/4 = 1.5 per slot, small: 2/1 = 2: big waits least although it holds more.
    assert ring.place("any", {"big": 6, "small": 2}, 1.25, slots) == "big"


def test_a_tie_between_full_nodes_keeps_the_name_on_its_own_node():
    ring = Ring(nodes(3))
    slots = dict.fromkeys(ring.members, 2)
    loads = dict.fromkeys(ring.members, 3)
    assert ring.place("key", loads, 1.25, slots) == ring.node_for("key")


@pytest.mark.parametrize("count", [3, 10])
def test_a_burst_fills_every_slot_first_then_spreads_by_capacity(count):
    ring = Ring(nodes(count))
    slots = {n: 1 + i % 3 for i, n in enumerate(ring.members)}  # capacities 1, 2, 3, 1, ...
    loads: Counter = Counter()
    for i in range(sum(slots.values())):
        loads[ring.place(f"burst-{i}", loads, 1.25, slots)] += 1
    assert loads == slots  # no run waits while a slot is free
    for i in range(20 * count):
        loads[ring.place(f"more-{i}", loads, 1.25, slots)] += 1
    total = sum(loads.values())
    room = sum(slots.values())
    for node, load in loads.items():
        assert load <= 1.25 * total * slots[node] / room + 1


def test_capacity_placement_without_slots_is_the_classic_walk():
    ring = Ring(nodes(3))
    first, second, _ = list(ring.walk("key"))
    assert ring.place("key", {first: 100, second: 0}, 1.25, None) == second
